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

**Stage** and **Reason** are required (a trigger without them is refused before a run starts); **Canary
percent** (1–99, {canary_default} unless changed) is used at `canary` and ignored at other stages; **Actor**
(default: you) and **Force** are optional. Going back is always allowed. Going forward past a stage (e.g.
`batch` → `canary`) is refused unless **Force** is ticked; a refusal fails the run with one line saying why.
Every attempt, applied or refused, is audited with source `airflow`: `migrate flags history {name}`.
Serving workers pick the change up within a second.

Guardrails roll `canary`/`online` back to `shadow` automatically when the error rate exceeds
{max_error_rate:.2%} or p99 latency exceeds {max_p99:g} ms. Owner: **{owner}**.
"""


CANARY_DEFAULT_PERCENT = 10  # the form's Canary percent until changed: the usual first canary step

FORM_FIX = "trigger again moving one stage at a time, or tick Force (recorded in the audit)"
FORM_FIELD_FIX = "correct that field in the trigger form and trigger again"


def form_percent(usecase: str, stage: str | None, percent: int | None, log: Any) -> int | None:
    """The percent to set for `stage`, from the trigger form; ValueError, in the form's words, when canary has none.

    A percent left in the form at another stage is ignored (said in the log), not refused: the field is always
    filled in (its default, or the last canary move's). Canary lacks one only when the field was cleared.
    """
    if stage == "canary" and percent is None:
        raise ValueError(f"{usecase}: canary needs a Canary percent: trigger again with a percent from 1 to 99")
    if stage != "canary" and percent is not None:
        log.info("Canary percent %s ignored: only the canary stage takes one", percent)
        return None
    return percent


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
        # Airflow validates each param on its own when a run is triggered, and its form marks a field required
        # (and shows "This field is required" before anything is typed) when the field's type excludes null. So
        # Stage and Reason admit null in their type but not in their values: the form opens clean, a trigger
        # without them is refused before any run exists. Force and Actor admit null: optional. That canary needs
        # a percent spans two params, which no single schema can say: the percent is therefore never empty (10
        # when the form opens or an API trigger leaves it out; a cleared field is refused before any run), and
        # stages other than canary ignore it.
        params={
            "stage": Param(
                None,
                type=["null", "string"],
                enum=STAGES,
                title="Stage",
                description="Required: the stage to move to. canary also needs Canary percent.",
            ),
            "percent": Param(
                CANARY_DEFAULT_PERCENT,
                type="integer",  # never empty: the form marks it required, and it opens filled in
                minimum=1,
                maximum=99,
                title="Canary percent",
                description=f"canary only: share of entities (1–99) served online; {CANARY_DEFAULT_PERCENT} unless "
                "changed. Ignored at other stages.",
            ),
            "reason": Param(
                None,
                type=["null", "string"],
                minLength=1,
                pattern=r"\S",
                **{"not": {"type": "null"}},  # null (an empty field) is refused at trigger
                title="Reason",
                description="Required: why; recorded in the audit.",
            ),
            "actor": Param(
                None,
                type=["null", "string"],
                title="Actor",
                description="Optional: who asks; default: the user who triggered the run.",
            ),
            "force": Param(
                False,
                type=["null", "boolean"],
                title="Force",
                description="Optional: allow skipping stages forward (e.g. batch → canary); recorded in the audit.",
            ),
        },
        doc_md=DOC.format(
            name=name,
            description=usecase.description,
            table=usecase.lookup_table.name,
            owner=usecase.owner,
            max_error_rate=usecase.cutover_policy.max_error_rate,
            max_p99=usecase.cutover_policy.max_p99_latency_ms,
            canary_default=CANARY_DEFAULT_PERCENT,
        ),
    ) as dag:

        @task
        def set_flag() -> dict[str, Any]:
            """Set the flag with source 'airflow' and log from → to; a refused change fails the run in one line."""
            import logging  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from migrate.cutover.flag_store import FlagStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.errors import InvalidFlagError, TransitionRefusedError  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            log = logging.getLogger(__name__)
            context = get_current_context()
            params = context["params"]
            stage, percent = params.get("stage"), params.get("percent")
            try:
                percent = form_percent(name, stage, percent, log)
            except ValueError as exc:
                log.error("%s", exc)
                raise AirflowFailException(str(exc)) from None
            actor = params.get("actor") or getattr(context["dag_run"], "triggering_user_name", None) or "airflow"
            store = FlagStore.from_settings(get_settings())
            try:
                store.ensure_schema()
                before = store.get(name)
                flag = store.set(
                    name,
                    stage,
                    percent,
                    actor=actor,
                    reason=params.get("reason") or "",
                    source="airflow",
                    force=bool(params.get("force")),
                    detail=f"run {context['run_id']}",
                )
            except (InvalidFlagError, TransitionRefusedError) as exc:
                # The store's fix speaks CLI (--force, --percent): in the form the same fix is a field.
                why = f"{exc.what}: {FORM_FIX if isinstance(exc, TransitionRefusedError) else FORM_FIELD_FIX}"
                log.error("refused: %s", why)
                raise AirflowFailException(f"refused: {why}") from None
            finally:
                store.close()
            was = before.describe()
            log.info(
                "%s: %s → %s (revision %d) by %s: %s", name, was, flag.describe(), flag.revision, actor, flag.reason
            )
            return {"usecase": name, "from": was, "to": flag.describe(), "revision": flag.revision, "actor": actor}

        set_flag()
    return dag


for _usecase in Registry(get_settings().usecases_dir).valid():
    globals()[f"cutover__{_usecase.name}"] = build_dag(_usecase)
