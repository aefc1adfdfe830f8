"""The demo's shadow section: materialize, serve in ``shadow``, stream requests, show batch vs live.

Everything goes the way production data goes: the materialization DAG through Airflow, the real service
(``migrate serve``), the shadow log through the Kafka-protocol broker, ``migrate sink`` into Parquet, DuckDB.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from migrate.errors import MigrateError
from migrate.settings import Settings
from migrate.usecase import UseCase

REQUESTS = 300


class DemoError(MigrateError):
    """A step of the demo's online section failed."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _entities(usecase: UseCase, settings: Settings, cutoff: datetime) -> tuple[list[list[int]], list[list[int]]]:
    from migrate.offline import open_offline, utc_naive

    source = usecase.entity.source
    keys = ", ".join(usecase.entity.key_names)
    with open_offline(settings.offline_store_path) as con:
        known = con.execute(
            f"SELECT {keys} FROM {source.table} WHERE {source.created_at_column} <= ? ORDER BY {keys}",
            [utc_naive(cutoff)],
        ).fetchall()
        new = con.execute(
            f"SELECT {keys} FROM {source.table} WHERE {source.created_at_column} > ? ORDER BY {keys}",
            [utc_naive(cutoff)],
        ).fetchall()
    return [list(k) for k in known], [list(k) for k in new]


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DemoError("`migrate serve` exited during start-up", fix=f"see its log: {log}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise DemoError("`migrate serve` was not ready within 120 s", fix=f"see its log: {log}")


def run_shadow(console: Console, settings: Settings, usecase: UseCase, cutoff: datetime) -> None:
    """Materialize through Airflow, serve in shadow, stream requests, then read the shadow log back."""
    import httpx

    from migrate.airflow_runner import run_dag_test
    from migrate.flag_store import FlagStore
    from migrate.flags import Stage
    from online.broker import start_broker
    from online.redis_server import resolve_redis_url
    from online.sink import run_sink

    name = usecase.name
    redis_url, _ = resolve_redis_url(settings)  # the state dir's embedded Redis, left running for `migrate serve`
    os.environ["MIGRATE_REDIS_URL"] = redis_url
    dag_id = f"materialize_features__{name}"
    with console.status(f"5/7 dag.test() {dag_id}: batch features → Redis"):
        run_dag_test(settings, dag_id, cutoff)
    console.print(f"[green]✓[/] {dag_id} succeeded: features in the embedded Redis ({redis_url})")

    flags = FlagStore.from_settings(settings)
    flags.ensure_schema()
    flag = flags.set(
        name, Stage.SHADOW, actor="demo", reason="demo: run the live path beside batch", source="cli", force=True
    )
    flags.close()
    console.print(f"[green]✓[/] flag of {name}: {flag.describe()} (migrate flags history {name})")

    shutil.rmtree(settings.shadow_dir / name, ignore_errors=True)  # this run's shadow log only
    broker = start_broker(settings)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    log = settings.state_dir / "serve.log"
    env = {**os.environ, "MIGRATE_KAFKA_BOOTSTRAP": broker.bootstrap, "MIGRATE_REDIS_URL": redis_url}
    known, new = _entities(usecase, settings, cutoff)
    rng = random.Random(7)  # noqa: S311 - a repeatable request stream, not a secret
    pool = rng.sample(known, min(40, len(known))) + new[:8]
    try:
        with log.open("wb") as out:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "migrate"), "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            with console.status("6/7 starting `migrate serve` in shadow"):
                _wait_ready(base, process, log)
            url = f"{base}/v1/models/{name}/predict"
            with (
                httpx.Client(timeout=5) as client,
                Progress(
                    "[progress.description]{task.description}",
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                ) as progress,
            ):
                task = progress.add_task("6/7 a stream of requests, served from the lookup table", total=REQUESTS)
                for _ in range(REQUESTS):
                    key = rng.choice(pool)
                    client.post(url, json={"entities": [dict(zip(usecase.entity.key_names, key, strict=True))]})
                    progress.advance(task)
        finally:
            process.terminate()
            process.wait(timeout=30)
        with console.status("7/7 `migrate sink`: the shadow log from Kafka into Parquet"):
            report = run_sink(settings, name, bootstrap=broker.bootstrap, idle_timeout_s=5)
    finally:
        broker.stop()
    console.print(f"[green]✓[/] shadow log: {report}", highlight=False)
    show_side_by_side(console, settings, usecase)


def show_side_by_side(console: Console, settings: Settings, usecase: UseCase, rows: int = 12) -> None:
    """Batch vs live, per entity, from the shadow log's Parquet files."""
    import duckdb

    files = str(settings.shadow_dir / usecase.name / "**" / "*.parquet")
    keys = ", ".join(f"key_{k}" for k in usecase.entity.key_names)
    with duckdb.connect() as con:
        summary = con.execute(f"""
            SELECT count(*), count(DISTINCT entity_key), avg(batch_miss::INT),
                   avg(CASE WHEN online_prediction IS NOT NULL THEN 1 ELSE 0 END),
                   avg(abs(online_prediction - batch_prediction)), median(batch_latency_ms), median(online_latency_ms)
            FROM read_parquet('{files}', hive_partitioning = true)""").fetchone()
        sample = con.execute(f"""
            SELECT {keys}, any_value(batch_prediction), any_value(online_prediction),
                   any_value(batch_data_age_s) / 3600, bool_or(batch_miss), count(*)
            FROM read_parquet('{files}', hive_partitioning = true)
            GROUP BY {keys} ORDER BY bool_or(batch_miss) DESC, count(*) DESC LIMIT {rows}""").fetchall()
    assert summary is not None
    table = Table(title="batch vs live, from the shadow log", title_justify="left")
    for column in [*usecase.entity.key_names, "batch (served)", "live (shadow)", "batch data age", "requests"]:
        table.add_column(column)
    for *key, batch_p, live_p, age_h, miss, count in sample:
        table.add_row(
            *map(str, key),
            "[yellow]miss[/]" if miss else f"{batch_p:.4f}",
            "-" if live_p is None else f"{live_p:.4f}",
            "-" if age_h is None else f"{age_h:.1f} h",
            str(count),
        )
    console.print(table)
    total, entities, miss_rate, live_rate, mean_delta, batch_ms, live_ms = summary
    console.print(
        f"{total} shadowed requests over {entities} entities: the lookup table missed {miss_rate:.1%} "
        f"(products listed after last night's run), the live path answered {live_rate:.1%} (a product with no "
        f"features yet gets the model's no-data score until real-time features arrive); "
        f"mean |live − batch| {0.0 if mean_delta is None else mean_delta:.4f} (same batch features until the "
        f"real-time features arrive); median latency batch {batch_ms:.2f} ms, live {live_ms:.2f} ms."
    )
    console.print(
        "The embedded Redis keeps the features for [bold]migrate serve[/]; stop it with [bold]migrate services stop[/]."
    )
