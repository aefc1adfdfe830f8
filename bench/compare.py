"""Comparator benchmark: full comparison + report over 10,000,000 shadow rows with labels (generation not timed).

The world: 1,000,000 listed store × product entities (``bench.world``), two batch runs with two models (so the
lookup table has two versions and a noise floor), a day of shadow traffic skewed towards popular entities with
2 % of requests for unlisted products (batch misses), labels for ~70 % of requests, a feature-skew bug on
product ids ending in 3 or 7 (a fifth of the products, so the skew is clear of the 10 % threshold: with a tenth,
one sample gave promote and another hold), and a live path that follows the intraday drift the batch table
cannot see.

Run: ``python -m bench compare`` (through bench/__main__.py) or ``python -m bench.compare [rows]``.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from bench.child import run_child

ROOT = Path(__file__).resolve().parent.parent
ROWS = 10_000_000
ENTITIES = 1_000_000
DAY = datetime(2026, 11, 14, 2, tzinfo=UTC)  # the shadow day starts at the second batch run's cutoff
FEATURES = (
    "found_rate_1d",
    "scans_1d",
    "found_rate_7d",
    "scans_7d",
    "store_found_rate_7d",
    "product_found_rate_7d",
    "popularity",
    "product_age_days",
)


def _world(state: Path) -> Any:
    """Offline store, two models, two batch runs (two lookup versions, two snapshots); returns the settings."""
    os.environ["MIGRATE_STATE_DIR"] = str(state)
    os.environ.setdefault("MIGRATE_PROJECT_DIR", str(ROOT))
    from bench import world  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.artifact import ArtifactStore  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.batch import steps as batch  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.examples.item_availability.training import make_estimator  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.scoring import save_model  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures

    settings = get_settings()
    settings.ensure_state_dir()
    world.build(settings.offline_store_path, ENTITIES)
    usecase = Registry(settings.usecases_dir).get("item_availability")
    store = ArtifactStore(settings.artifacts_dir, settings.project_dir)
    for night, seed in ((DAY - timedelta(hours=1), 7), (DAY, 8)):
        x, y = world.training_set(seed=seed)
        save_model(usecase, store, make_estimator().fit(x, y), trained_as_of=night, metrics={})
        batch.run_batch(usecase, settings, batch.Interval(night - timedelta(days=1), night), run_id=f"bench-{seed}")
    return settings, usecase


def generate(settings: Any, usecase: Any, rows: int = ROWS) -> None:
    """Shadow rows and labels as the sink writes them (hour partitions, flat columns), in DuckDB."""
    from lookup_tables import TableSpec, open_lookup_store  # noqa: PLC0415 - a suite imports only what it measures

    spec = TableSpec.for_usecase(usecase, settings)
    store = open_lookup_store(settings)
    active = store.active(spec)
    assert active is not None
    predictions = store.export(spec, active.version)
    store.close()
    model_version = active.model_version
    snapshot = settings.snapshots_dir / usecase.name / DAY.strftime("%Y%m%dT%H%M%SZ") / "snapshot.parquet"
    shadow = settings.shadow_dir / usecase.name
    labels = settings.labels_dir / usecase.name
    shadow.mkdir(parents=True, exist_ok=True)
    labels.mkdir(parents=True, exist_ok=True)
    ages = " || ', ' || ".join(f"'\"{f}\": ' || CAST(age AS VARCHAR)" for f in FEATURES)
    typed_ages = f"struct_pack({', '.join(f'{f} := age' for f in sorted(FEATURES))})"
    values = " || ', ' || ".join(
        f"'\"{f}\": ' || CAST(CASE WHEN skew THEN {f} * 3 + 1 ELSE {f} END AS VARCHAR)" for f in FEATURES
    )
    day = DAY.strftime("%Y-%m-%d %H:%M:%S")
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.register("lookup", predictions)
        con.execute(f"""
            CREATE TABLE req AS
            WITH r AS (
                SELECT i, CAST(floor(pow(random(), 2) * {ENTITIES * 1.02}) AS BIGINT) AS e,
                       TIMESTAMPTZ '{day}+00' + to_microseconds(CAST(i * (86400000000 // {rows}) AS BIGINT)) AS t
                FROM range({rows}) x(i)
            )
            SELECT i, t, e // 1000 AS store_id,
                   CASE WHEN e < {ENTITIES} THEN 1000000 + e % 1000 ELSE 2000000 + e END AS product_id
            FROM r
        """)
        con.execute(f"""
            CREATE TABLE rows AS
            SELECT q.i, q.t, q.store_id, q.product_id, l.prediction AS bp, snap.* EXCLUDE (store_id, product_id),
                   (q.product_id % 10 IN (3, 7)) AS skew,
                   1.5 * sin(2 * pi() * (hour(q.t) / 24.0) + (hash(q.store_id, q.product_id) % 628) / 100.0) AS drift,
                   epoch(q.t) - epoch(CAST(snap.features_as_of AS TIMESTAMPTZ)) AS batch_age,
                   60 + random() * 600 AS age
            FROM req q
            LEFT JOIN lookup l USING (store_id, product_id)
            LEFT JOIN read_parquet('{snapshot}') snap USING (store_id, product_id)
        """)
        con.execute(f"""
            COPY (
                SELECT 'r' || i AS request_id, 'item_availability' AS usecase,
                       '{{"product_id":' || product_id || ',"store_id":' || store_id || '}}' AS entity_key,
                       product_id AS key_product_id, store_id AS key_store_id, t AS request_time,
                       'batch' AS served_source, 'shadow' AS stage, 0.0 AS percent,
                       bp AS batch_prediction, bp IS NULL AS batch_miss,
                       CASE WHEN bp IS NOT NULL THEN batch_age END AS batch_data_age_s,
                       CASE WHEN bp IS NOT NULL THEN '{model_version}' END AS batch_model_version,
                       0.3 + 0.7 * random() AS batch_latency_ms, CAST(NULL AS VARCHAR) AS batch_error,
                       CASE WHEN random() < 0.001 THEN NULL
                            ELSE 1 / (1 + exp(-(ln(greatest(coalesce(bp, 0.5), 1e-6) / greatest(1 - coalesce(bp, 0.5),
                                 1e-6)) + drift + CASE WHEN skew THEN 2.5 ELSE 0 END + 0.2 * (random() - 0.5)))) END
                            AS online_prediction,
                       '{{' || {ages} || '}}' AS online_feature_ages_s,
                       {typed_ages} AS online_feature_ages,
                       CASE WHEN found_rate_1d IS NULL THEN '{{}}' ELSE '{{' || {values} || '}}' END AS online_features,
                       '{model_version}' AS online_model_version,
                       2 + 6 * random() * random() AS online_latency_ms,
                       CAST(NULL AS VARCHAR) AS online_error, '{{}}' AS context, 1 AS schema_version,
                       0 AS kafka_partition, i AS kafka_offset,
                       strftime(t, '%Y-%m-%d') AS date, strftime(t, '%H') AS hour
                FROM rows
            ) TO '{shadow}' (FORMAT parquet, PARTITION_BY (date, hour), FILENAME_PATTERN 'part-bench-{{i}}',
                             OVERWRITE_OR_IGNORE true)
        """)
        # Labels in the hour partitions of their event time, as the sink writes them (the comparator reads only the
        # partitions that can label its window's requests).
        con.execute(f"""
            COPY (
                SELECT *, strftime(event_time, '%Y-%m-%d') AS date, strftime(event_time, '%H') AS hour
                FROM (
                    SELECT '{{"product_id":' || product_id || ',"store_id":' || store_id || '}}' AS entity_key,
                           product_id AS key_product_id, store_id AS key_store_id,
                           t + to_microseconds(CAST(1 + random() * 3000000000 AS BIGINT)) AS event_time,
                           CASE WHEN random() < 1 / (1 + exp(-(ln(greatest(coalesce(bp, 0.5), 1e-6)
                                / greatest(1 - coalesce(bp, 0.5), 1e-6)) + drift))) THEN 1.0 ELSE 0.0 END AS label,
                           'e' || i AS source_event_id
                    FROM rows WHERE random() < 0.7
                )
            ) TO '{labels}' (FORMAT parquet, PARTITION_BY (date, hour), FILENAME_PATTERN 'part-bench-{{i}}',
                             OVERWRITE_OR_IGNORE true)
        """)


def _peak_rss_mib() -> float:
    """This process's own peak RSS. Not ``ru_maxrss``: Linux carries the pre-exec high-water mark into it, and a
    child forked from the generating process (gigabytes of DuckDB) would report the generator's peak."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(state: Path) -> dict[str, Any]:
    """Time ``comparisons.report.write_report`` end to end on a generated state dir (in a fresh process)."""
    os.environ["MIGRATE_STATE_DIR"] = str(state)
    from comparisons.report import write_report  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures

    settings = get_settings()
    usecase = Registry(settings.usecases_dir).get("item_availability")
    load_before = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    result = write_report(usecase, settings, out_dir=state / "report")
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu,
        "steps": result.timings,
        "decision": result.verdict.decision,
        "html_kib": result.html.stat().st_size / 1024,
        "peak_rss_mib": _peak_rss_mib(),
        "load_average": os.getloadavg()[0],
        "load_average_before": load_before,
    }


# The columns the comparison's load reads from the shadow files and the label files (comparisons/shadow_rows.py:
# the row id's request id and keys, the time, both paths' answers, ages, latencies and errors, the lookup version, the
# stage, the typed feature ages; the labels' keys, time and value).
FLOOR_SHADOW_COLUMNS = (
    "request_id",
    "key_store_id",
    "key_product_id",
    "request_time",
    "served_source",
    "stage",
    "batch_prediction",
    "batch_miss",
    "batch_data_age_s",
    "batch_latency_ms",
    "batch_error",
    "online_prediction",
    "online_latency_ms",
    "online_error",
    "online_feature_ages",
)
FLOOR_LABEL_COLUMNS = ("key_store_id", "key_product_id", "event_time", "label")


def floor(state: Path) -> dict[str, Any]:
    """The comparison's floor, in a fresh process as the timed part: DuckDB reads the columns the comparison reads
    from the same files into Arrow once, and computes nothing. A machine running slower slows both alike, so the
    ratio of the report to it says more across runs than either's seconds."""
    shadow = state / "shadow" / "item_availability" / "**" / "*.parquet"
    labels = state / "labels" / "item_availability" / "**" / "*.parquet"
    load_before = os.getloadavg()[0]
    started, cpu = time.perf_counter(), time.process_time()
    rows = 0
    with duckdb.connect() as con:
        for files, columns in ((shadow, FLOOR_SHADOW_COLUMNS), (labels, FLOOR_LABEL_COLUMNS)):
            table = con.sql(
                f"SELECT {', '.join(columns)} FROM read_parquet('{files}', hive_partitioning = true)"
            ).to_arrow_table()
            rows += table.num_rows
            del table
    return {
        "seconds": time.perf_counter() - started,
        "cpu_seconds": time.process_time() - cpu,
        "rows_read": rows,
        "peak_rss_mib": _peak_rss_mib(),
        "load_average_before": load_before,
        "load_average": os.getloadavg()[0],
    }


REPEATS = 3  # timed comparisons of one generated world, each in a fresh process: the row reports their median


def run(rows: int = ROWS, repeats: int = REPEATS) -> dict[str, Any]:
    """Generate (untimed), then time the comparison `repeats` times, each in a process of its own, on the same data;
    the data is deleted after. The figures are the median run's (by wall time), with every run's kept beside them:
    on a shared machine one run can be slowed by other work, and the spread says how much."""
    state = Path(tempfile.mkdtemp(prefix="migrate-bench-compare-"))
    try:
        started = time.perf_counter()
        settings, usecase = _world(state)
        generate(settings, usecase, rows)
        generated = time.perf_counter() - started
        print(f"compare: generated {rows:,} shadow rows in {generated:.0f} s (not timed)", file=sys.stderr, flush=True)
        runs, floors = [], []
        for _ in range(repeats):  # interleaved: each report run next to a floor run on the same machine minute
            runs.append(run_child("bench.compare", "--timed", str(state), what="compare bench (timed part)"))
            floors.append(run_child("bench.compare", "--floor", str(state), what="compare bench (floor)"))
    finally:
        shutil.rmtree(state, ignore_errors=True)
    report, floor_ = _median_run(runs), _median_run(floors)
    return {"rows": rows, **report, "floor": floor_, "floor_ratio": float(report["seconds"]) / float(floor_["seconds"])}


def _median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median wall time, with every run's main figures beside it (``runs``)."""
    median = sorted(runs, key=lambda r: float(r["seconds"]))[(len(runs) - 1) // 2]
    each = ("seconds", "cpu_seconds", "peak_rss_mib", "load_average_before", "load_average")
    return {**median, "runs": [{key: r[key] for key in each} for r in runs]}


SIZES = (1_000_000, ROWS)  # two sizes (×10): the cost's growth shows


def compare_suite() -> list[dict[str, Any]]:
    """`run` at each of `SIZES`, each in a process of its own (its peak RSS is the comparison's, not the other
    suites')."""
    runs = []
    for rows in SIZES:
        print(f"compare: {rows:,} shadow rows …", file=sys.stderr, flush=True)
        result = run_child("bench.compare", str(rows), what="compare bench")
        each = ", ".join(f"{r['seconds']:.1f}" for r in result["runs"])
        floors = ", ".join(f"{r['seconds']:.2f}" for r in result["floor"]["runs"])
        print(
            f"  {result['seconds']:.1f} s (runs {each}), {result['cpu_seconds']:.1f} s of CPU ({result['decision']}), "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB, load {result['load_average_before']:.1f} -> "
            f"{result['load_average']:.1f}; floor {result['floor']['seconds']:.2f} s (runs {floors}), "
            f"{result['floor_ratio']:.1f}× it",
            file=sys.stderr,
        )
        runs.append(result)
    return runs


def render(results: list[dict[str, Any]] | dict[str, Any]) -> list[str]:
    """The comparator section of docs/benchmarks.md."""
    runs = results if isinstance(results, list) else [results]
    lines = [
        "## Comparator: full comparison + report",
        "",
        "`comparisons.report.write_report` over N shadow rows with labels (~70 % labeled), one day in 24 hour",
        "partitions written as the sink writes them (the feature ages as JSON and as the typed struct, since that",
        "column was added), 1,000,000 entities, a two-version lookup table (SQLite) and the batch snapshot on",
        "disk; timed in a fresh process: load + label join, metrics, paired bootstrap, noise floor, waste, explanation",
        "(re-scoring disagreeing entities), verdict, figures and the HTML + JSON files. Each size is timed",
        f"{REPEATS} times on the same generated data, each time in a fresh process: a row gives the median run's",
        "figures and every run's wall time. The load average is the one-minute average when the timed part",
        "started and when it ended, on 2 cores (other work shares this machine; a load above 2 slows every step,",
        "so read a row with its load; the first run's starting load still holds the untimed generation's minute).",
        "CPU seconds are the timed process's own (every thread, DuckDB's included): less sensitive to the load",
        "than the wall time, and on a quiet machine the wall time is below them wherever DuckDB's threads run in",
        "parallel.",
        "",
        "The floor: DuckDB reading the columns the comparison reads, from the same shadow and label files, into",
        "Arrow once and computing nothing, in a fresh process, each of its runs right after a report's run (the",
        "median of those). A machine running slower slows both, so the report's time over the floor's says more",
        "across runs and machines than either's seconds.",
        "",
        "| rows | seconds (median) | each run (s) | target | CPU seconds | peak RSS of the timed process (MiB) "
        "| load average (start → end) | floor (s; each run) | report / floor | HTML (KiB) | verdict |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for run in runs:
        target = "≤ 10" if run["rows"] == ROWS else "—"
        cpu = f"{run['cpu_seconds']:.1f}" if "cpu_seconds" in run else "–"
        before = f"{run['load_average_before']:.1f} → " if "load_average_before" in run else ""
        each = ", ".join(f"{r['seconds']:.1f}" for r in run.get("runs", [run]))
        if "floor" in run:
            floors = ", ".join(f"{r['seconds']:.2f}" for r in run["floor"]["runs"])
            floor, ratio = f"{run['floor']['seconds']:.2f} ({floors})", f"{run['floor_ratio']:.1f}×"
        else:
            floor, ratio = "–", "–"
        lines.append(
            f"| {run['rows']:,} | {run['seconds']:.1f} | {each} | {target} | {cpu} | {run['peak_rss_mib']:.0f} | "
            f"{before}{run.get('load_average', 0):.1f} | {floor} | {ratio} | {run['html_kib']:.0f} | "
            f"{run['decision']} |"
        )
    lines.append("")
    for run in runs:
        steps = " · ".join(f"{name} {value:.2f}" for name, value in run["steps"].items())
        lines.append(f"Steps at {run['rows']:,} rows (seconds): {steps}.")
    if len(runs) == 2 and runs[0]["seconds"]:
        small, large = runs
        lines += [
            "",
            f"Growth: {large['rows'] / small['rows']:.0f}× the rows took {large['seconds'] / small['seconds']:.1f}× "
            f"the time and {large['peak_rss_mib'] / small['peak_rss_mib']:.1f}× the peak RSS.",
        ]
    return lines


if __name__ == "__main__":
    if sys.argv[1:2] == ["--timed"]:
        print(json.dumps(timed(Path(sys.argv[2]))))
    elif sys.argv[1:2] == ["--floor"]:
        print(json.dumps(floor(Path(sys.argv[2]))))
    else:
        print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else ROWS)))
