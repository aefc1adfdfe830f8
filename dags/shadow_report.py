"""The daily comparison report, one DAG per use case: ``shadow_report__<usecase>``.

Parsing this file only reads the use-case YAML files: no DuckDB, no matplotlib, no model.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, Param, get_current_context, task

os.environ.setdefault("MIGRATE_PROJECT_DIR", str(Path(__file__).resolve().parent.parent))

from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

SCHEDULE = "0 5 * * *"  # daily, 05:00 UTC: after the nightly batch run and the night's labels
DOC = """
### Shadow comparison report: `{name}`

{description}

Once a day, compares the **batch path** (lookup table `{table}`) with the **live path** on the same requests of
the shadow log over the `window_days` days before `data_interval_end`, joined with their labels, and writes

* `<state_dir>/reports/{name}/<data_interval_end date>/report.html` — the report people read (self-contained);
* `.../report.json` — every number.

The task log and its return value (XCom) carry the **verdict**: `promote`, `hold` or `rollback`, with the
reasons and the evidence, under the use case's `cutover_policy` (min {min_labeled} labeled samples, max accuracy
loss {max_loss:g} at {confidence:.0%} confidence). The verdict recommends; move the flag with the
`cutover__{name}` DAG or `migrate flags set` — or set `cutover_policy.auto_promote: true` and this DAG moves it
one step along the verdict (shadow → canary 10 % → online; rollback → shadow). A use case with no shadow log in
the window is skipped.

A second task judges the **candidate model** (`retrain__{name}`, `migrate models candidate`) against the live one
on the same window's shadow answers, with the same policy; with `auto_promote` it promotes a candidate judged
`promote` and rejects one judged `rollback` (`migrate models history {name}`). Skipped while no candidate is scored.

Owner: **{owner}** · same numbers on demand: `migrate gate {name}` / `migrate report {name}`.
"""


def build_dag(usecase: UseCase) -> DAG:
    """The daily shadow-report DAG of one use case."""
    name = usecase.name
    policy = usecase.cutover_policy
    with DAG(
        dag_id=f"shadow_report__{name}",
        description=f"Daily batch-vs-live comparison report and cutover verdict of {name}",
        schedule=CronDataIntervalTimetable(SCHEDULE, timezone="UTC"),
        start_date=pendulum.parse(usecase.batch.start_date.isoformat(), tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["migrate", "comparison", f"usecase:{name}"],
        default_args={"owner": usecase.owner, "retries": 1, "retry_delay": timedelta(minutes=5)},
        params={"window_days": Param(7, type="integer", minimum=1, maximum=90, description="Days compared.")},
        doc_md=DOC.format(
            name=name,
            description=usecase.description,
            table=usecase.lookup_table.name,
            owner=usecase.owner,
            min_labeled=policy.min_labeled_samples,
            max_loss=policy.max_accuracy_loss,
            confidence=policy.confidence,
        ),
    ) as dag:

        @task
        def report() -> dict[str, Any]:
            """Compare the window's shadow log, write report.html + report.json, log and return the verdict."""
            import logging  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            import warnings  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from collections import Counter  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from airflow.sdk.exceptions import AirflowSkipException  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from comparisons.report import write_report  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from comparisons.shadow_rows import Window  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.errors import NoShadowDataError  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            log = logging.getLogger("migrate.shadow_report")
            context = get_current_context()
            end = context["data_interval_end"]
            window = Window(end - timedelta(days=int(context["params"]["window_days"])), end)
            settings = get_settings()
            target = settings.state_dir / "reports" / name / f"{end:%Y-%m-%d}"
            # First, where the report goes: a reader opening the log finds it even if the comparison then fails.
            log.info("report: %s (numbers: %s)", target / "report.html", target / "report.json")
            log.info("comparing %s over %s → %s", name, window.since, end)
            # Libraries warn while the comparison runs (deprecations by the hundred in a task log): they are
            # recorded, then counted in one line after the verdict, so the log starts with what a reader came for.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    files = write_report(usecase, settings, out_dir=target, window=window)
                except NoShadowDataError as exc:
                    raise AirflowSkipException(f"{exc.what} ({exc.fix})") from exc
            verdict = files.verdict
            log.info("verdict for %s: %s · report: %s", name, verdict.decision.upper(), files.html)
            for reason in verdict.reasons:
                log.info("  reason: %s", reason)
            log.info("numbers: %s", files.json)
            if caught:
                kinds = Counter(f"{w.category.__name__} from {Path(w.filename).name}" for w in caught)
                log.info(
                    "%d warnings while comparing (%s)",
                    len(caught),
                    "; ".join(f"{n}× {k}" for k, n in kinds.most_common(3)),
                )
            from migrate.cutover.autopilot import act_on_verdict  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.cutover.flag_store import FlagStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            moved = None
            if usecase.cutover_policy.auto_promote:
                store = FlagStore.from_settings(settings)
                try:
                    store.ensure_schema()
                    flag = act_on_verdict(store, usecase, verdict.decision, "; ".join(verdict.reasons[:1]))
                finally:
                    store.close()
                moved = None if flag is None else flag.describe()
                log.info("auto_promote: flag %s", "unchanged" if moved is None else f"moved to {moved}")
            return {
                "flag_moved_to": moved,
                "decision": verdict.decision,
                "reasons": verdict.reasons,
                "html": str(files.html),
                "json": str(files.json),
                "window": [window.since.isoformat() if window.since else None, end.isoformat()],
            }

        @task
        def judge_candidate() -> dict[str, Any]:
            """The candidate model against the live one on the window's shadow answers; with auto_promote, act."""
            import logging  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from airflow.sdk.exceptions import AirflowSkipException  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from comparisons.candidate import judge  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from comparisons.shadow_rows import Window  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.artifact import ArtifactStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.errors import NoShadowDataError  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.models.alias_store import AliasStore  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs
            from migrate.models.lifecycle import act_on_verdict  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            log = logging.getLogger("migrate.shadow_report")
            context = get_current_context()
            end = context["data_interval_end"]
            window = Window(end - timedelta(days=int(context["params"]["window_days"])), end)
            settings = get_settings()
            try:
                result = judge(usecase, settings, window)
            except NoShadowDataError as exc:
                raise AirflowSkipException(f"{exc.what} ({exc.fix})") from exc
            verdict = result.verdict
            log.info(
                "candidate %s vs live %s of %s: %s",
                result.candidate_version,
                result.live_version,
                name,
                verdict.decision.upper(),
            )
            for reason in verdict.reasons:
                log.info("  reason: %s", reason)
            acted = None
            if usecase.cutover_policy.auto_promote:
                store = AliasStore.from_settings(settings)
                try:
                    store.ensure_schema()
                    artifacts = ArtifactStore(settings.artifacts_dir, settings.project_dir)
                    why = "; ".join(verdict.reasons[:1])
                    moved = act_on_verdict(
                        store, artifacts, usecase, verdict.decision, why, actor="shadow_report", source="verdict"
                    )
                    acted = None if moved is None else verdict.decision
                finally:
                    store.close()
                log.info("auto_promote: candidate %s", "unchanged" if acted is None else f"{acted}d")
            return {
                "decision": verdict.decision,
                "reasons": verdict.reasons,
                "candidate": result.candidate_version,
                "live": result.live_version,
                "acted": acted,
            }

        report()
        judge_candidate()
    return dag


for _usecase in Registry(get_settings().usecases_dir).valid():
    globals()[f"shadow_report__{_usecase.name}"] = build_dag(_usecase)
