"""Cutover flags from the Airflow UI, one manually triggered DAG per use case: ``cutover__<usecase>``.

Parsing this file only reads the small use-case YAML files: no database, no heavy import.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, get_current_context, task

# The DAG processor may run from any directory: resolve the project from this file unless told otherwise.
os.environ.setdefault("MIGRATE_PROJECT_DIR", str(Path(__file__).resolve().parent.parent))

from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

STAGES = ["batch", "shadow", "canary", "online", "online_only"]

DOC = """
### Cutover: `{name}`

{description}

Trigger this DAG (**Trigger DAG** → fill in the form) to move **{name}** to another serving stage:

| stage | served from | also |
|---|---|---|
| `batch` | lookup table `{table}` | |
| `shadow` | lookup table | online prediction computed off the critical path, both logged |
| `canary` | online for `percent` % of entities (sticky per entity), the lookup table for the rest | fallback |
| `online` | online model | fallback to the lookup table on timeout or error |
| `online_only` | online model | the lookup table is no longer read |

Going back is always allowed. Going forward past a stage (e.g. `batch` → `canary`) is refused unless
`force` is ticked. Every attempt, applied or refused, is audited with source `airflow`:
`migrate flags history {name}`. Serving workers pick the change up within a second.

Guardrails roll `canary`/`online` back to `shadow` automatically when the error rate exceeds
{max_error_rate:.2%} or p99 latency exceeds {max_p99:g} ms. Owner: **{owner}**.
"""


def build_dag(usecase: UseCase) -> DAG:
    """The cutover DAG of one use case: one task that sets its flag from the trigger form's params."""
    name = usecase.name
    with DAG(
        dag_id=f"cutover__{name}",
        description=f"Move {name} between batch, shadow, canary, online and online_only serving",
        schedule=None,
        start_date=pendulum.parse(usecase.batch.start_date.isoformat(), tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["migrate", "cutover", f"usecase:{name}"],
        # A refused change is audited once; retrying it would only audit it again.
        default_args={"owner": usecase.owner, "retries": 0},
        params={
            "stage": Param(type="string", enum=STAGES, title="Stage", description="The stage to move to."),
            "percent": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                maximum=99,
                title="Canary percent",
                description="Canary only: share of entities (1..99) served online; leave empty otherwise.",
            ),
            "reason": Param(type="string", minLength=1, title="Reason", description="Why; recorded in the audit."),
            "actor": Param(
                None,
                type=["null", "string"],  # optional in the trigger form: a plain "string" is required there
                title="Actor",
                description="Who asks; default: the user who triggered the run.",
            ),
            "force": Param(
                False,
                type="boolean",
                title="Force",
                description="Allow skipping stages forward (e.g. batch → canary); recorded in the audit.",
            ),
        },
        doc_md=DOC.format(
            name=name,
            description=usecase.description,
            table=usecase.lookup_table.name,
            owner=usecase.owner,
            max_error_rate=usecase.cutover_policy.max_error_rate,
            max_p99=usecase.cutover_policy.max_p99_latency_ms,
        ),
    ) as dag:

        @task
        def set_flag() -> dict[str, Any]:
            """Set the flag with source 'airflow' and log from → to; a refused change fails the run."""
            import logging  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from migrate.cutover.flag_store import FlagStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            context = get_current_context()
            params = context["params"]
            actor = params.get("actor") or getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            store = FlagStore.from_settings(get_settings())
            try:
                store.ensure_schema()
                before = store.get(name)
                flag = store.set(
                    name,
                    params["stage"],
                    params.get("percent"),
                    actor=actor,
                    reason=params["reason"],
                    source="airflow",
                    force=bool(params.get("force")),
                    detail=f"run {context['run_id']}",
                )
            finally:
                store.close()
            was = before.describe()
            logging.getLogger(__name__).info(
                "%s: %s → %s (revision %d) by %s: %s", name, was, flag.describe(), flag.revision, actor, flag.reason
            )
            return {"usecase": name, "from": was, "to": flag.describe(), "revision": flag.revision, "actor": actor}

        set_flag()
    return dag


for _usecase in Registry(get_settings().usecases_dir).valid():
    globals()[f"cutover__{_usecase.name}"] = build_dag(_usecase)
