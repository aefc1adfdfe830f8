"""Retraining, one DAG per use case: ``retrain__<usecase>`` trains on schedule and names the result the candidate.

Parsing this file only reads the use-case YAML files: no training, no model, no database.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

os.environ.setdefault("MIGRATE_PROJECT_DIR", str(Path(__file__).resolve().parent.parent))

from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

SCHEDULE = "0 3 * * 0"  # weekly, Sunday 03:00 UTC: after the nightly batch run, before the daily report
DOC = """
### Retrain: `{name}`

{description}

Once a week, trains **{name}**'s {role} model on the data before `data_interval_end` and names the new version
the **candidate** (`migrate models list {name}`). Every serving worker then scores it beside the live model on
the same requests, off the critical path, and logs both in the shadow record. The daily `shadow_report__{name}`
DAG judges it with the cutover policy (paired interval, guardrails): with `cutover_policy.auto_promote: true`
it promotes a candidate judged `promote` and rejects one judged `rollback`; otherwise it recommends, and a person
runs `migrate models promote {name}` (or `migrate models judge {name} --apply`).

A re-run of the same interval reuses the version it trained (one version per interval). Owner: **{owner}**.
"""


def build_dag(usecase: UseCase) -> DAG:
    """The weekly retraining DAG of one use case."""
    name = usecase.name
    role = "online" if usecase.realtime_feature_names else "batch"
    with DAG(
        dag_id=f"retrain__{name}",
        description=f"Train {name}'s model weekly and register it as the candidate",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
        start_date=pendulum.parse(usecase.batch.start_date.isoformat(), tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["migrate", "models", f"usecase:{name}"],
        default_args={"owner": usecase.owner, "retries": 1, "retry_delay": timedelta(minutes=10)},
        doc_md=DOC.format(name=name, description=usecase.description, owner=usecase.owner, role=role),
    ) as dag:

        @task
        def train_model() -> str:
            """Train on the data before the interval's end; a re-run of the interval reuses its version."""
            from migrate.artifact import ArtifactStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.batch.training import train  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            as_of = get_current_context()["data_interval_end"]
            settings = get_settings()
            trained = ArtifactStore(settings.artifacts_dir, settings.project_dir).list(name, role)
            done = next((info for info in reversed(trained) if info.trained_as_of == as_of), None)
            if done is not None:
                return done.version
            return train(usecase, settings, as_of, role=role).version

        @task
        def register_candidate(version: str) -> dict[str, Any]:
            """Verify the version and name it the candidate (audited, source airflow)."""
            from migrate.artifact import ArtifactStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.models.alias_store import AliasStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.models.lifecycle import set_candidate  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            settings = get_settings()
            store = AliasStore.from_settings(settings)
            try:
                store.ensure_schema()
                artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
                reason = f"retrained on data before {get_current_context()['data_interval_end']:%Y-%m-%d %H:%M}Z"
                alias = set_candidate(
                    store, artifacts, usecase, version, actor="retrain", reason=reason, source="airflow"
                )
            finally:
                store.close()
            return {"candidate": alias.version, "sha256": alias.sha256, "revision": alias.revision}

        register_candidate(train_model())
    return dag


for _usecase in Registry(get_settings().usecases_dir).valid():
    globals()[f"retrain__{_usecase.name}"] = build_dag(_usecase)
