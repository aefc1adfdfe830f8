"""``make bench``: every benchmark in one run; results to bench/results/latest.json and docs/benchmarks.md."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "latest.json"
DOC = ROOT / "docs" / "benchmarks.md"
PG_URL = os.environ.get("MIGRATE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
# The schema the batch suite writes (and drops after): several people may bench on one database at once.
PG_SCHEMA = os.environ.get("MIGRATE_BENCH_PG_SCHEMA", "migrate_bench")


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": platform.python_version(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _pg_reachable() -> bool:
    import sqlalchemy as sa  # noqa: PLC0415 - a suite imports only what it measures

    try:
        with sa.create_engine(PG_URL, connect_args={"connect_timeout": 3}).connect():
            return True
    except sa.exc.OperationalError:
        return False


def _reset_pg(*, create: bool = True) -> None:
    import sqlalchemy as sa  # noqa: PLC0415 - a suite imports only what it measures

    with sa.create_engine(PG_URL).begin() as con:
        con.execute(sa.text(f'DROP SCHEMA IF EXISTS "{PG_SCHEMA}" CASCADE'))
        if create:
            con.execute(sa.text(f'CREATE SCHEMA "{PG_SCHEMA}"'))


BATCH_PLAN = (("sqlite", 1_000_000), ("postgresql", 1_000_000), ("postgresql", 10_000_000))


def batch_suite(plan: tuple[tuple[str, int], ...] = BATCH_PLAN) -> list[dict[str, Any]]:
    """Batch score + atomic publish of N entities, SQLite and PostgreSQL, each run in its own process."""
    from bench import world  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.artifact import ArtifactStore  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures
    from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures

    runs: list[dict[str, Any]] = []
    pg = _pg_reachable()
    for backend, entities in plan:
        if backend == "postgresql" and not pg:
            print(f"skipped {backend} ({entities:,}): no PostgreSQL at {PG_URL}", file=sys.stderr)
            continue
        state = Path(tempfile.mkdtemp(prefix="migrate-bench-"))
        env = {**os.environ, "MIGRATE_STATE_DIR": str(state), "MIGRATE_PROJECT_DIR": str(ROOT)}
        if backend == "postgresql":
            _reset_pg()
            env["MIGRATE_SQL_URL"] = PG_URL + ("&" if "?" in PG_URL else "?") + f"options=-csearch_path%3D{PG_SCHEMA}"
        os.environ["MIGRATE_STATE_DIR"] = str(state)
        settings = get_settings()
        world.build(settings.offline_store_path, entities)
        from migrate.examples.item_availability.training import make_estimator  # noqa: PLC0415 - a suite imports only what it measures

        x, y = world.training_set()
        model = make_estimator().fit(x, y)  # the example's own model shape, fitted on synthetic features
        usecase = Registry(settings.usecases_dir).get("item_availability")
        ArtifactStore(settings.artifacts_dir, settings.project_dir).save(
            usecase, model, trained_as_of=world.AS_OF, metrics={}
        )
        print(f"batch: {backend} {entities:,} entities …", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "bench.batch_run", f"{backend}-{entities}"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=ROOT,
        )
        shutil.rmtree(state, ignore_errors=True)
        if backend == "postgresql":
            _reset_pg(create=False)
        if done.returncode != 0:
            raise SystemExit(f"batch bench {backend} failed:\n{done.stderr[-4000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append({"backend": backend, "entities": entities, **result})
        print(
            f"  {result['seconds']:.1f} s, {result['rows_per_s']:,.0f} rows/s, "
            f"peak RSS {result['peak_rss_mib']:.0f} MiB",
            file=sys.stderr,
        )
    return runs


def _loads(results: dict[str, Any]) -> str:
    loads = sorted(results.get("load_at_start", {}).items())
    return ", ".join(f"{suite} {' / '.join(map(str, load))}" for suite, load in loads) or "not recorded"


def render(results: dict[str, Any]) -> str:
    """docs/benchmarks.md from the results."""
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (do not edit by hand), on:",
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, Python {m['python']}.",
        "When each suite ran: "
        + ", ".join(f"{suite} {when}" for suite, when in sorted(results.get("measured_at", {}).items()))
        + " (`make bench` runs them all in one go; `python -m bench <suite>` reruns one).",
        "Load average (1, 5, 15 min) when each suite started: " + _loads(results) + ".",
        "The machine is shared and noisy: compare figures of the same suite, not across suites.",
        "",
        "## Batch score + atomic publish",
        "",
        "End to end through `migrate.batch.steps.run_batch`, the DAG's steps in one process: DuckDB snapshot to",
        "Parquet, scoring in chunks of 100,000 with the shared scoring function (the example's",
        "HistGradientBoosting model shape: 100 trees of up to 15 leaves, 8 features) on one thread per core,",
        "bulk load (COPY on PostgreSQL, one transaction per chunk on SQLite), validation, atomic publish",
        "(unique index + view switch). Each run is its own process; peak RSS is that process's.",
        "",
        "The floor is the store's bulk load of the same rows in the same run (COPY on PostgreSQL), as rows/s of",
        "the time spent inside it; the ratio is the end-to-end rate over it.",
        "",
        "| backend | entities | seconds | rows/s | target | peak RSS (MiB) | floor: bulk load rows/s | ratio "
        "| load (1 min) at the end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    targets = {"sqlite": "≥ 150,000", "postgresql": "≥ 300,000"}
    for run in results["batch"]:
        floor = run["rows"] / run["steps"]["write_in_store"]
        load = run.get("load_average", ["not recorded"])[0]
        lines.append(
            f"| {run['backend']} | {run['entities']:,} | {run['seconds']:.1f} | {run['rows_per_s']:,.0f} | "
            f"{targets[run['backend']]} | {run['peak_rss_mib']:.0f} | {floor:,.0f} | {run['rows_per_s'] / floor:.2f} "
            f"| {load} |"
        )
    lines += [
        "",
        "Where the time goes (seconds; `score` and `write` are summed over chunks, measured inside the model call",
        "and inside the store's bulk load; `chunks` is the wall time of all chunk tasks together):",
        "",
        "| backend | entities | snapshot | begin | chunks | score (in model) | write (in store) | validate | publish |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in results["batch"]:
        st = run["steps"]
        lines.append(
            f"| {run['backend']} | {run['entities']:,} | {st['snapshot']:.2f} | {st['begin']:.2f} | "
            f"{st['chunks']:.2f} | {st['score_in_model']:.2f} | {st['write_in_store']:.2f} | "
            f"{st['validate']:.2f} | {st['publish']:.2f} |"
        )
    lines += ["", "Rates of the parts alone, from the same runs:", ""]
    for run in results["batch"]:
        st = run["steps"]
        lines.append(
            f"- {run['backend']} {run['entities']:,}: model {run['rows'] / st['score_in_model']:,.0f} rows/s, "
            f"store bulk load {run['rows'] / st['write_in_store']:,.0f} rows/s."
        )
    lines += [
        "",
        "Reading these numbers: the model is scored through migrate/forest_tables.py (NumPy lookup tables, bit for",
        "bit sklearn's), so its rate is now of the order of the store's bulk load, and the snapshot (DuckDB, memory",
        "capped at 512 MB) and the publish (unique index) weigh as much at 10M; compare the parts' rates above with",
        "the targets, and only within one run: the load average says how shared the two cores were. Scale-out is",
        "the DAG's dynamic task mapping: each chunk is a task, spread over Celery or Kubernetes workers.",
    ]
    pg_runs = {r["entities"]: r for r in results["batch"] if r["backend"] == "postgresql"}
    if 1_000_000 in pg_runs and 10_000_000 in pg_runs:
        ratio = pg_runs[10_000_000]["peak_rss_mib"] / pg_runs[1_000_000]["peak_rss_mib"]
        lines += ["", f"Memory: 10× the entities took {ratio:.2f}× the peak RSS (PostgreSQL runs above)."]
    if "online" in results:
        from bench.online import render as render_online  # noqa: PLC0415 - a suite imports only what it measures

        lines += ["", *render_online(results["online"])]
    if "stream" in results:
        from bench.stream import render as render_stream  # noqa: PLC0415 - a suite imports only what it measures

        lines += ["", *render_stream(results["stream"])]
    if "compare" in results:
        from bench.compare import render as render_compare  # noqa: PLC0415 - a suite imports only what it measures

        lines += ["", *render_compare(results["compare"])]
    if "materialize" in results:
        from bench.materialize import render as render_materialize  # noqa: PLC0415 - a suite imports only what it measures

        lines += ["", *render_materialize(results["materialize"])]
    if "backtest" in results:
        from bench.backtest import render as render_backtest  # noqa: PLC0415 - a suite imports only what it measures

        lines += ["", *render_backtest(results["backtest"])]
    return "\n".join(lines) + "\n"


SUITES = ("batch", "online", "stream", "compare", "materialize", "backtest")


def main() -> None:
    """``python -m bench [suite ...]``: run the named suites (default all), keep the others' last results."""
    from bench.online import online_suite  # noqa: PLC0415 - a suite imports only what it measures

    chosen = sys.argv[1:] or list(SUITES)
    unknown = sorted(set(chosen) - set(SUITES))
    if unknown:
        raise SystemExit(f"unknown suites {unknown}; choose from {list(SUITES)}")
    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results["machine"] = machine()
    loads = results.setdefault("load_at_start", {})
    # The machine is shared: each suite says how loaded it was when it started (1, 5 and 15-minute averages).
    if "batch" in chosen:
        loads["batch"] = [round(x, 2) for x in os.getloadavg()]
        results["batch"] = batch_suite()
    if "online" in chosen:
        loads["online"] = [round(x, 2) for x in os.getloadavg()]
        results["online"] = online_suite()
    if "stream" in chosen:
        from bench.stream import stream_suite  # noqa: PLC0415 - a suite imports only what it measures

        loads["stream"] = [round(x, 2) for x in os.getloadavg()]
        results["stream"] = stream_suite()
    if "compare" in chosen:
        from bench.compare import compare_suite  # noqa: PLC0415 - a suite imports only what it measures

        loads["compare"] = [round(x, 2) for x in os.getloadavg()]
        results["compare"] = compare_suite()
    if "materialize" in chosen:
        from bench.materialize import materialize_suite  # noqa: PLC0415 - a suite imports only what it measures

        loads["materialize"] = [round(x, 2) for x in os.getloadavg()]
        results["materialize"] = materialize_suite()
    if "backtest" in chosen:
        from bench.backtest import backtest_suite  # noqa: PLC0415 - a suite imports only what it measures

        loads["backtest"] = [round(x, 2) for x in os.getloadavg()]
        results["backtest"] = backtest_suite()
    results.setdefault("measured_at", {})
    for suite in chosen:
        results["measured_at"][suite] = results["machine"]["when"]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    DOC.write_text(render(results))
    print(f"results: {RESULTS}\nreport:  {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
