"""Backtest benchmark: `migrate backtest` over past card authorizations at two sizes (×10), in fresh processes.

The world: the fraud example with 25,000 cards (about 50,000 authorizations a day); both models trained on the
week before; then the backtest of 2 days (~100,000 requests) and of 20 days (~1,000,000), each timed alone in a
process of its own: the nightly batch runs, the point-in-time features and both paths' answers, the labels and the
Parquet files. World generation and training are not timed.

Run: ``python -m bench backtest`` (through bench/__main__.py) or ``python -m bench.backtest --timed DAYS``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.child import run_child
from bench.memory import peak_rss_mib

ROOT = Path(__file__).resolve().parent.parent
CARDS = 25_000
SPANS = (2, 20)  # days backtested: ~100,000 and ~1,000,000 requests


def timed(days: int) -> dict[str, Any]:
    """One world, trained, then one backtest of `days` days timed (in this process)."""
    with tempfile.TemporaryDirectory(prefix="migrate-bench-backtest-") as state:
        os.environ["MIGRATE_STATE_DIR"] = state
        os.environ.setdefault("MIGRATE_PROJECT_DIR", str(ROOT))
        from migrate.backtest.runner import run_backtest  # noqa: PLC0415 - a suite imports only what it measures
        from migrate.batch.training import train  # noqa: PLC0415 - a suite imports only what it measures
        from migrate.examples.fraud_detection.generator import FraudConfig, generate  # noqa: PLC0415 - a suite imports only what it measures
        from migrate.registry import Registry  # noqa: PLC0415 - a suite imports only what it measures
        from migrate.settings import get_settings  # noqa: PLC0415 - a suite imports only what it measures

        settings = get_settings()
        settings.ensure_state_dir()
        usecase = Registry(settings.usecases_dir).get("fraud_detection")
        world = generate(settings.offline_store_path, FraudConfig(cards=CARDS, days=7 + days + 3))
        start = world.start + timedelta(days=7)
        for role in ("batch", "online"):
            train(usecase, settings, start, role=role)
        began = time.perf_counter()
        result = run_backtest(usecase, settings, start, start + timedelta(days=days))
        seconds = time.perf_counter() - began
    return {
        "days": days,
        "requests": result.requests,
        "nights": result.nights,
        "seconds": round(seconds, 2),
        "requests_per_s": round(result.requests / seconds),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "load_average": round(os.getloadavg()[0], 2),
    }


def backtest_suite() -> list[dict[str, Any]]:
    """Each size in a process of its own (its peak RSS is that backtest's)."""
    runs = []
    for days in SPANS:
        print(f"backtest: {days} days of {CARDS:,} cards …", file=sys.stderr, flush=True)
        runs.append(run_child("bench.backtest", "--timed", str(days), what="backtest bench"))
        print(f"  {runs[-1]['requests']:,} requests in {runs[-1]['seconds']:.1f} s", file=sys.stderr)
    return runs


def render(runs: list[dict[str, Any]]) -> list[str]:
    """The backtest section of docs/benchmarks.md."""
    lines = [
        "## Backtest: both paths' answers to past requests",
        "",
        f"`migrate backtest fraud_detection` with {CARDS:,} cards, both models trained on the week before; timed:",
        "the nightly batch runs (the DAG's steps, one per night), point-in-time features and both paths' scores per",
        "day, the labels from the event history and the shadow-log Parquet files. Aim: 1M requests in minutes.",
        "",
        "| days | requests | nightly runs | seconds | requests/s | peak RSS, generation and training too (MiB) "
        "| load at the end |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        lines.append(
            f"| {run['days']} | {run['requests']:,} | {run['nights']} | {run['seconds']:.1f} | "
            f"{run['requests_per_s']:,} | {run['peak_rss_mib']:.0f} | {run['load_average']:.1f} |"
        )
    return lines


if __name__ == "__main__":
    print(json.dumps(timed(int(sys.argv[2]) if sys.argv[1:2] == ["--timed"] else SPANS[0])))
