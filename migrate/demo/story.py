"""``migrate demo``: the whole migration of one use case, on embedded real services, in a few minutes.

Last night's batch DAG → the live path in shadow with real-time features during a simulated day → the
comparison and its verdict → the flag moved to canary 10 %, then online → the five costs of batch before and
after → the report. Every step runs the way production does (Airflow's dag.test(), the service, the stream
processor, the sink, the comparator), against the state dir's embedded DuckDB, SQLite, Redis and broker.

Then a second use case from history alone: card fraud (`migrate.examples.fraud_detection`), whose label arrives
days later as a chargeback. Both models are trained on the days before a backtest, `migrate backtest` answers two
days of past authorizations by both paths, and the comparator gives its verdict before any live traffic.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import duckdb
import redis
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from comparisons.comparison import compare
from comparisons.report import write_report
from comparisons.shadow_rows import Window
from comparisons.verdict import Verdict
from lookup_tables import TableSpec, open_lookup_store
from migrate.backtest.runner import run_backtest
from migrate.batch.training import train
from migrate.batch.versions_view import print_lookup
from migrate.cutover.flag_store import FlagStore
from migrate.cutover.flags import Stage
from migrate.demo.costs import measure_costs, print_costs
from migrate.demo.live import LiveDay
from migrate.demo.rehearse import Rehearser, Request, TrafficReport
from migrate.demo.shoppers import Shoppers, day_events, new_entities
from migrate.devservices.airflow_runner import ensure_metadata_db, run_dag_test
from migrate.devservices.redis_server import resolve_redis_url, stop_redis
from migrate.devservices.shared_broker import stop_shared_broker
from migrate.examples.fraud_detection.generator import FraudConfig
from migrate.examples.fraud_detection.generator import generate as generate_fraud
from migrate.examples.item_availability.generator import SimulationConfig, generate
from migrate.registry import Registry
from migrate.settings import Settings
from migrate.usecase import UseCase

USECASE = "item_availability"
FRAUD = "fraud_detection"


@dataclass(frozen=True)
class Plan:
    """How big and how fast: the default tells the story in a few minutes; ``--fast`` is for CI."""

    stores: int
    products: int
    days: int
    speed: float  # simulated seconds per wall second during the live day
    rate_per_s: float  # requests per wall second
    per_request: int  # at most this many entities per request
    shadow_until: timedelta  # after last night's batch cutoff (02:00)
    online_until: timedelta


CANARY = timedelta(hours=1)  # simulated time at canary 10 %, from when the flag moves
FULL = Plan(20, 400, 14, 600.0, 40.0, 4, timedelta(hours=11), timedelta(hours=20))
FAST = Plan(8, 160, 6, 1800.0, 60.0, 6, timedelta(hours=11), timedelta(hours=20))


def run_demo(console: Console, settings: Settings, *, fast: bool = False) -> None:
    """Tell the whole story; re-running starts again from a clean state dir."""

    plan = FAST if fast else FULL
    usecase = Registry(settings.usecases_dir).get(USECASE)
    settings.ensure_state_dir()
    _clean(settings)
    console.rule(f"[bold]migrate demo — {USECASE}[/] (state in {settings.state_dir})")
    cutoff = _last_night(console, settings, usecase, plan)
    console.rule("[bold]today: the live path beside batch, with real-time features[/]")
    _live_day(console, settings, usecase, plan, cutoff)
    console.rule("[bold]a second use case, from history alone: card fraud[/]")
    _fraud_from_history(console, settings, fast=fast)


def _clean(settings: Settings) -> None:
    """A re-run starts from scratch: the embedded services and every output of the previous run go."""

    stop_redis(settings)
    stop_shared_broker(settings)
    for folder in ("shadow", "labels", "reports", "demo-logs", "artifacts", "snapshots", "materialize", "backtests"):
        shutil.rmtree(settings.state_dir / folder, ignore_errors=True)
    (settings.state_dir / "lookup.db").unlink(missing_ok=True)


def _last_night(console: Console, settings: Settings, usecase: UseCase, plan: Plan) -> datetime:

    with console.status("1/9 generating stores × products and a simulated fortnight of shopper scans"):
        summary = generate(
            settings.offline_store_path, SimulationConfig(stores=plan.stores, products=plan.products, days=plan.days)
        )
    rows = ", ".join(f"{n:,} {table}" for table, n in summary.rows.items())
    console.print(f"[green]✓[/] offline store {settings.offline_store_path}: {rows}")
    last_night = summary.last_batch_cutoff
    as_of = last_night - timedelta(days=1)
    with console.status("2/9 training the batch model (batch features) and the online model (+ real-time features)"):
        batch = train(usecase, settings, as_of)
        online = train(usecase, settings, as_of, role="online")
    console.print(
        f"[green]✓[/] models on the same holdout day — batch {batch.version}: AUC {batch.metrics['auc']:.3f}, "
        f"Brier {batch.metrics['brier']:.3f}; online {online.version}: AUC {online.metrics['auc']:.3f}, "
        f"Brier {online.metrics['brier']:.3f} (it also sees the last minutes of scans)"
    )
    # The demo's runs carry simulated nights: they go to a metadata DB of their own, not the UI's grid.
    with console.status("3/9 preparing the embedded Airflow (the demo's own SQLite metadata DB)"):
        ensure_metadata_db(settings, demo=True)
    dag_id = f"batch_predictions__{USECASE}"
    for night in (last_night - timedelta(days=1), last_night):
        with console.status(f"4/9 dag.test() {dag_id} for the night of {night:%Y-%m-%d %H:%M}Z"):
            run_dag_test(settings, dag_id, night, demo=True)
        console.print(f"[green]✓[/] {dag_id} @ {night:%Y-%m-%d %H:%M}Z published a new lookup version")
    print_lookup(console, usecase, settings)
    dag_id = f"materialize_features__{USECASE}"
    with console.status(f"5/9 dag.test() {dag_id}: last night's batch features → Redis"):
        redis_url, _ = resolve_redis_url(settings)
        os.environ["MIGRATE_REDIS_URL"] = redis_url
        run_dag_test(settings, dag_id, last_night, demo=True)
    console.print(f"[green]✓[/] {dag_id} succeeded: batch features in the embedded Redis ({redis_url})")
    return last_night


def _set_flag(settings: Settings, stage: Any, percent: int | None, reason: str) -> str:

    flags = FlagStore.from_settings(settings)
    try:
        flags.ensure_schema()
        flag = flags.set(USECASE, stage, percent, actor="demo", reason=reason, source="cli", force=True)
    finally:
        flags.close()
    return flag.describe()


def _live_day(console: Console, settings: Settings, usecase: UseCase, plan: Plan, cutoff: datetime) -> None:

    end = cutoff.replace(hour=0) + timedelta(days=1)
    shoppers = Shoppers(
        usecase,
        day_events(settings, usecase, cutoff, end),
        new_entities(settings, usecase, cutoff),
        seed=7,
        per_request=plan.per_request,
    )
    every = timedelta(seconds=plan.speed / plan.rate_per_s)  # simulated time between two requests
    redis_url, _ = resolve_redis_url(settings)
    console.print(f"[green]✓[/] flag: {_set_flag(settings, Stage.SHADOW, None, 'demo: live path beside batch')}")
    with (
        LiveDay(settings, usecase, cutoff, plan.speed, end, warm_up=True) as day,
        Rehearser(day, usecase, settings, redis_url, nights_until=end) as driver,
    ):
        console.print(
            f"[green]✓[/] running: migrate stream, migrate serve ({day.base}), migrate sink, migrate events replay "
            f"— one simulated clock, {plan.speed:g}× (logs in {day.logs})"
        )
        shadow_end = cutoff + plan.shadow_until
        title = "6/9 shadow: served from the lookup table"
        traffic = _traffic(console, driver, shoppers.requests(cutoff, shadow_end, every), shadow_end, title)
        console.print(f"[green]✓[/] shadow traffic: {traffic.requests:,} requests, {traffic.sources}")
        _freshness(console, settings, usecase, day)
        time.sleep(3)  # the sink flushes every 2 s
        with console.status("7/9 the comparator on the shadow log: same requests, both paths"):
            # The feature-skew grace scales by the clock's speed, which LiveDay recorded beside the shadow log: a
            # later `migrate gate` on this state dir judges it alike.
            verdict = compare(usecase, settings, Window(cutoff, shadow_end)).verdict
        _print_verdict(console, verdict, "requests", "verdict")
        if verdict.decision != "promote":
            console.print("[yellow]a real migration would wait here; the demo moves the flag to show the rest[/]")
        console.print(f"[green]✓[/] flag: {_set_flag(settings, Stage.CANARY, 10, 'demo: verdict ' + verdict.decision)}")
        start = day.now()
        title = "8/9 canary 10 %: a tenth of entities served live"
        _traffic(console, driver, shoppers.requests(start, start + CANARY, every), start + CANARY, title)
        console.print(f"[green]✓[/] flag: {_set_flag(settings, Stage.ONLINE, None, 'demo: canary healthy')}")
        online_start = day.now()
        online_end = max(cutoff + plan.online_until, online_start + timedelta(hours=3))
        title = "9/9 online: every request served live"
        _traffic(console, driver, shoppers.requests(online_start, online_end, every), online_end, title)
        with console.status("the rest of the day's events, so the last requests' labels arrive"):
            driver.finish(end)
    lookup_rows = _lookup_rows(settings, usecase)
    # Each column names its window (simulated UTC): the report covers the first one, the shadow phase.
    before = measure_costs(
        settings,
        usecase,
        f"batch (shadow, {cutoff:%H:%M}–{shadow_end:%H:%M})",
        (cutoff, shadow_end),
        served="batch",
        lookup_rows=lookup_rows,
    )
    after = measure_costs(
        settings,
        usecase,
        f"online ({online_start:%H:%M}–{online_end:%H:%M})",
        (online_start, online_end),
        served="online",
        lookup_rows=lookup_rows,
    )
    print_costs(console, before, after)
    _moved(console, settings, usecase, cutoff, shadow_end)
    with console.status("writing the comparison report"):
        files = write_report(usecase, settings, window=Window(cutoff, shadow_end))
    console.print(
        f"[bold]report:[/] {files.html} (and {files.json.name}); verdict {files.verdict.decision}, over the shadow "
        f"phase {cutoff:%H:%M}–{shadow_end:%H:%M} like the verdict above"
    )
    console.print(
        "The embedded Redis and broker keep running for `migrate serve`, `migrate gate` and friends; stop them with "
        "[bold]migrate services stop[/]."
    )


def _fraud_from_history(console: Console, settings: Settings, *, fast: bool) -> None:
    """Card fraud: train on the days before, backtest two days of authorizations, the verdict from history."""

    fraud = Registry(settings.usecases_dir).get(FRAUD)
    config = FraudConfig(cards=1_500 if fast else 3_000, days=12)
    with console.status("generating cards, merchants and twelve days of authorizations and chargebacks"):
        world = generate_fraud(settings.offline_store_path, config)
    console.print(
        f"[green]✓[/] {world.auths:,} authorizations, {world.fraud_auths:,} fraudulent (stolen cards in bursts, "
        f"breached checkouts), {world.chargebacks:,} chargebacks up to three days later",
        highlight=False,
    )
    start = world.start + timedelta(days=7)
    until = start + timedelta(days=2)
    with console.status(f"training both fraud models on authorizations before {start:%Y-%m-%d}"):
        batch, online = (train(fraud, settings, start, role=role).metrics for role in ("batch", "online"))
    console.print(
        f"[green]✓[/] holdout AUC — batch {batch['auc']:.3f} (last night's card features), online "
        f"{online['auc']:.3f} (+ the card's and the merchant's last minutes and the amount)",
        highlight=False,
    )
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"backtest: {stage}", total=total)
            bar.update(tasks[stage], completed=done)

        result = run_backtest(fraud, settings, start, until, progress=progress)
    console.print(
        f"[green]✓[/] migrate backtest {FRAUD} --from {start:%Y-%m-%d} --until {until:%Y-%m-%d}: "
        f"{result.requests:,} past authorizations answered by both paths ({result.nights} nightly lookup "
        f"versions, {result.batch_misses:,} cards unknown to the lookup table)",
        highlight=False,
    )
    with console.status("the comparator on the backtest"):
        verdict = compare(fraud, result.settings).verdict
    _print_verdict(console, verdict, "authorizations", "verdict from history")
    console.print(f"every check: [bold]migrate gate {FRAUD} --backtest[/]", highlight=False)


def _print_verdict(console: Console, verdict: Verdict, what: str, title: str) -> None:
    """The verdict, the paired evidence behind it (both paths on the same labeled requests) and its reasons."""

    e = verdict.evidence
    if e.batch_value is not None and e.live_value is not None:
        interval = (
            ""
            if e.improvement_low is None or e.improvement_high is None
            else f", live − batch {e.improvement_low:+.3f} … {e.improvement_high:+.3f} at {e.confidence:.0%}"
        )
        console.print(
            f"same {e.labeled_pairs:,} labeled {what}, {e.metric}: batch {e.batch_value:.3f}, "
            f"live {e.live_value:.3f}{interval}",
            highlight=False,
        )
    console.print(f"[bold]{title}: {verdict.decision.upper()}[/]")
    for reason in verdict.reasons:
        console.print(f"  • {reason}", highlight=False)


def _traffic(
    console: Console, driver: Rehearser, requests: Iterable[Request], until: datetime, title: str
) -> TrafficReport:
    """One phase of shopper traffic through the rehearsal's driver, with a bar on the simulated clock."""

    start = driver.day.now()
    total = max((until - start).total_seconds(), 1.0)
    with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
        task = bar.add_task(title, total=total)

        def tick(now: datetime, report: TrafficReport) -> None:
            bar.update(
                task,
                completed=min((now - start).total_seconds(), total),
                description=f"{title} — {now:%H:%M} simulated, {report.requests:,} requests",
            )

        report = driver.send(requests, tick)
        bar.update(task, completed=total)
    return report


def _freshness(console: Console, settings: Settings, usecase: UseCase, day: Any) -> None:
    """How old the newest real-time feature of recently scanned entities is, on the simulated clock."""

    url, _ = resolve_redis_url(settings)
    client = redis.Redis.from_url(url, socket_timeout=2)
    now = day.now()
    ages: list[float] = []
    try:
        # The entity hashes hold the stream's window states, one field w:<partition> each, a JSON list whose first
        # element is the newest event time it counted (docs/online_features.md).
        for key in client.scan_iter(match=f"mig:{usecase.name}:*", count=1000):
            fields = cast(dict[bytes, bytes], client.hgetall(key))
            newest = [json.loads(state)[0] for field, state in fields.items() if field.startswith(b"w:")]
            newest = [t for t in newest if t is not None]
            if newest:
                ages.append(now.timestamp() - max(newest))
            if len(ages) >= 2000:
                break
    finally:
        client.close()
    fresh = day.stream_freshness()
    if ages:
        recent = sum(1 for a in ages if a < 3600)
        console.print(
            f"[green]✓[/] real-time features: {recent:,} of {len(ages):,} sampled entities updated within the last "
            f"simulated hour, the freshest {max(0.0, min(ages)):.0f} s before the simulated now"
        )
    console.print(
        f"[green]✓[/] stream freshness, event reaching Kafka → its features in Redis (wall clock, "
        f"{fresh['n']:,.0f} events sampled): p50 ≤ {fresh['p50'] * 1000:.0f} ms, p99 ≤ {fresh['p99'] * 1000:.0f} ms"
    )


def _lookup_rows(settings: Settings, usecase: UseCase) -> int:

    store = open_lookup_store(settings)
    active = [v for v in store.versions(TableSpec.for_usecase(usecase, settings)) if v.status == "active"]
    return int(active[0].row_count or 0) if active else 0


def _moved(console: Console, settings: Settings, usecase: UseCase, since: datetime, until: datetime) -> None:
    """A few entities whose live prediction moved away from the stale batch one during the day."""

    files = str(settings.shadow_dir / usecase.name / "**" / "*.parquet")
    keys = ", ".join(f"key_{k}" for k in usecase.entity.key_names)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        rows = con.execute(
            f"""SELECT {keys}, arg_max(request_time, d), arg_max(batch_prediction, d), arg_max(online_prediction, d)
            FROM (SELECT *, abs(online_prediction - batch_prediction) AS d
                  FROM read_parquet('{files}', hive_partitioning = true, union_by_name = true)
                  WHERE request_time >= $since AND request_time < $until AND batch_prediction IS NOT NULL
                    AND online_prediction IS NOT NULL)
            GROUP BY {keys} ORDER BY max(d) DESC LIMIT 6""",
            {"since": since, "until": until},
        ).fetchall()
    table = Table(title="where the live prediction moved away from last night's", title_justify="left")
    for column in [*usecase.entity.key_names, "time (simulated)", "batch (last night)", "live (real-time)"]:
        table.add_column(column)
    for *key, at, batch, live in rows:
        table.add_row(*map(str, key), f"{at:%H:%M}", f"{batch:.3f}", f"{live:.3f}")
    console.print(table)
