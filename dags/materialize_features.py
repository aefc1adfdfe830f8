"""Feature materialization, one DAG per use case: ``materialize_features__<usecase>``.

Scheduled on the lookup table's asset, so it runs after every successful batch publish: it writes the same
batch features the batch run scored with (as of the active version's data interval end) into the Redis feature
store that the online service reads. Parsing this file only reads the use-case YAML files.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, Param, get_current_context, task

os.environ.setdefault("MIGRATE_PROJECT_DIR", str(Path(__file__).resolve().parent.parent))

from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

DOC = """
### Feature materialization: `{name}`

Runs after each publish of the lookup table **`{table}`** (asset `migrate.lookup.{name}`; active from creation,
so no publish is missed) and writes the batch
features of every entity, as of the active version's data interval end, into the Redis feature store, each value
with its event time. Re-running the same window changes nothing; a value that differs for the same event time is
a *correction*: rejected (the run fails and says which keys) unless the `on_correction` param is `apply`.

Needs `MIGRATE_REDIS_URL` (the feature store the online service reads). Owner: **{owner}**.
"""


def build_dag(usecase: UseCase) -> DAG:
    """The materialization DAG of one use case."""
    name = usecase.name
    with DAG(
        dag_id=f"materialize_features__{name}",
        description=f"Batch features of {name} into the online feature store, after each batch publish",
        schedule=[Asset(name=f"migrate.lookup.{name}")],
        # Airflow creates DAGs paused (core.dags_are_paused_at_creation): paused, this one let a publish triggered
        # from the UI go unmaterialized, the feature store serving the old night's features. It only ever runs on
        # a publish, so it starts active.
        is_paused_upon_creation=False,
        start_date=pendulum.parse(usecase.batch.start_date.isoformat(), tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["migrate", "online", f"usecase:{name}"],
        default_args={"owner": usecase.owner, "retries": 2, "retry_delay": timedelta(seconds=30)},
        params={
            "on_correction": Param("reject", enum=["reject", "apply"], description="What to do with corrections."),
        },
        doc_md=DOC.format(name=name, table=usecase.lookup_table.name, owner=usecase.owner),
    ) as dag:

        @task
        def materialize() -> dict[str, Any]:
            """Write the active lookup version's features into the feature store."""
            from dataclasses import asdict  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from migrate.devservices.redis_server import resolve_redis_url  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from online.features.materialize import materialize_active  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            context = get_current_context()
            settings = get_settings()
            # The configured Redis, or the state dir's embedded one, left running: the features live in its memory.
            redis_url, _server = resolve_redis_url(settings)
            report = materialize_active(usecase, settings, redis_url, on_correction=context["params"]["on_correction"])
            return asdict(report)

        materialize()
    return dag


for _usecase in Registry(get_settings().usecases_dir).valid():
    globals()[f"materialize_features__{_usecase.name}"] = build_dag(_usecase)
