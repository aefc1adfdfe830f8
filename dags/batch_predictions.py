"""Batch predictions, one DAG per registered use case: ``batch_predictions__<usecase>``.

Parsing this file only reads the small use-case YAML files: no database, no model, no heavy import.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, get_current_context, task

# The DAG processor may run from any directory: resolve the project from this file unless told otherwise.
os.environ.setdefault("MIGRATE_PROJECT_DIR", str(Path(__file__).resolve().parent.parent))

from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

DOC = """
### Batch predictions: `{name}`

{description}

Every run scores **all entities that exist at the end of its data interval** with the batch model and
publishes the scores as a new version of the lookup table **`{table}`**, atomically: applications read
the complete old version or the complete new one, never a mix.

| step | what it does |
|---|---|
| `snapshot` | entities + batch features as of `data_interval_end` from the offline store → Parquet partition |
| `begin_version` | opens a loading version of the lookup table (invisible to readers) |
| `score_chunk` | one mapped task per chunk of {chunk_size} entities, scored by `migrate.scoring.score` |
| `validate` | row count vs the active version (max drop {max_drop:.0%}), no NaN, prediction range |
| `publish` | atomic switch of the view `{table}`; an identical re-run reuses the active version |
| `record_run` | run metadata beside the lookup tables |

Owner: **{owner}** · schedule `{schedule}` (UTC) · keeps {keep} previous versions;
roll back with `migrate lookup rollback {name}`.
"""


def lookup_asset(usecase: str) -> Asset:
    """The asset a successful publish updates; ``materialize_features__<usecase>`` is scheduled on it."""
    return Asset(name=f"migrate.lookup.{usecase}")


def _interval(context: dict[str, Any]) -> Any:
    """The run's data interval; a run without one (triggered with ``logical_date: null``) fails at once.

    Guessing the interval from the clock would make a run's output depend on when it ran; retrying cannot help.
    """
    from migrate.batch.steps import Interval  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is None or end is None:
        from airflow.sdk.exceptions import AirflowFailException  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

        from migrate.errors import ConfigError  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

        error = ConfigError(
            f"run {context.get('run_id')!r} of {context['dag'].dag_id} has no data interval to score "
            "(it was triggered with logical_date null)",
            fix="trigger it again with a logical_date, e.g. over REST "
            '{"logical_date": "2026-11-25T02:00:00Z"} or `airflow dags trigger --logical-date ...`: '
            "it scores the schedule's last complete interval ending at or before that date",
        )
        raise AirflowFailException(str(error)) from error  # fail, not retry: the run's conf cannot change
    return Interval(start, end)


def build_dag(usecase: UseCase) -> DAG:
    """The batch-prediction DAG of one use case."""
    name = usecase.name
    settings = get_settings()
    with DAG(
        dag_id=f"batch_predictions__{name}",
        description=f"Nightly batch scores of {name} into the lookup table {usecase.lookup_table.name}",
        schedule=CronDataIntervalTimetable(usecase.batch.schedule, timezone="UTC"),
        start_date=pendulum.parse(usecase.batch.start_date.isoformat(), tz="UTC"),
        catchup=False,
        max_active_runs=1,
        tags=["migrate", "batch", f"usecase:{name}"],
        default_args={
            "owner": usecase.owner,
            "retries": usecase.batch.retries,
            "retry_delay": timedelta(minutes=1),
            "retry_exponential_backoff": True,
        },
        doc_md=DOC.format(
            name=name,
            description=usecase.description,
            table=usecase.lookup_table.name,
            owner=usecase.owner,
            schedule=usecase.batch.schedule,
            chunk_size=usecase.batch.chunk_size or settings.chunk_size,
            max_drop=usecase.batch.validation.max_row_drop,
            keep=usecase.lookup_table.keep_versions or settings.keep_versions,
        ),
    ) as dag:

        @task
        def snapshot() -> dict[str, Any]:
            """Entities and batch features as of data_interval_end."""
            from migrate.batch import steps as batch  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            snap = batch.snapshot(usecase, get_settings(), _interval(get_current_context()))
            return snap.to_xcom()

        @task
        def chunks(snap: dict[str, Any]) -> list[dict[str, Any]]:
            """One entry per chunk, for dynamic task mapping."""
            return [{"snap": snap, "chunk": chunk} for chunk in snap["chunks"]]

        @task
        def begin_version(snap: dict[str, Any]) -> dict[str, Any]:
            """Open a loading version of the lookup table for this run."""
            from migrate.batch import steps as batch  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            context = get_current_context()
            return batch.begin(usecase, get_settings(), _interval(context), context["run_id"])

        @task(map_index_template="chunk {{ task.op_kwargs['item']['chunk']['chunk_id'] }}")
        def score_chunk(item: dict[str, Any], opened: dict[str, Any]) -> dict[str, Any]:
            """Score one chunk with the shared scoring function and write it into the loading version."""
            from dataclasses import asdict  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from migrate.batch import steps as batch  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            result = batch.score_chunk(
                usecase,
                get_settings(),
                batch.Snapshot.from_xcom(item["snap"]),
                opened["version"],
                batch.Chunk(**item["chunk"]),
            )
            return asdict(result)

        @task
        def validate(snap: dict[str, Any], opened: dict[str, Any], scored: list[dict[str, Any]]) -> dict[str, Any]:
            """Row count vs the active version, no NaN, prediction range; abandon the version on failure."""
            from migrate.batch import steps as batch  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            report = batch.validate(usecase, get_settings(), batch.Snapshot.from_xcom(snap), opened["version"])
            results = [batch.ChunkResult(**r) for r in scored]
            report["checksum"] = batch.run_checksum(opened["model_version"], results)
            report["scored_at"] = batch.scored_at(results).isoformat()
            return report

        @task(outlets=[lookup_asset(name)])
        def publish(opened: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
            """Atomically switch readers to the new version."""
            from datetime import datetime  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from migrate.batch import steps as batch  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            result = batch.publish(
                usecase,
                get_settings(),
                opened["version"],
                report["checksum"],
                datetime.fromisoformat(report["scored_at"]),
            )
            return {
                "version": result.version,
                "activated": result.activated,
                "reused": result.reused,
                "reason": result.reason,
            }

        @task
        def record_run(snap: dict[str, Any], report: dict[str, Any], published: dict[str, Any]) -> None:
            """Run metadata beside the lookup tables."""
            from datetime import UTC, datetime  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            from migrate.batch import steps as batch  # noqa: PLC0415 - DAG parse time: a task imports its work when it runs

            context = get_current_context()
            outcome = "reused" if published["reused"] else ("published" if published["activated"] else "not_activated")
            dag_run = context["dag_run"]
            batch.record(
                usecase,
                get_settings(),
                _interval(context),
                context["run_id"],
                version=published["version"],
                outcome=outcome,
                rows=snap["rows"],
                checksum=report["checksum"],
                started_at=dag_run.start_date or datetime.now(UTC),
                details={"validation": report, "reason": published["reason"]},
            )

        snap = snapshot()
        opened = begin_version(snap)
        scored = score_chunk.partial(opened=opened).expand(item=chunks(snap))
        report = validate(snap, opened, scored)
        published = publish(opened, report)
        record_run(snap, report, published)
    return dag


for _usecase in Registry(get_settings().usecases_dir).valid():
    globals()[f"batch_predictions__{_usecase.name}"] = build_dag(_usecase)
