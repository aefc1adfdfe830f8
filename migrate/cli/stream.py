"""``migrate stream``, ``migrate replay`` and ``migrate events replay``: the real-time feature commands."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from migrate.cli.support import as_utc, console, friendly
from migrate.errors import MigrateError
from migrate.realtime_schema import MAIN_STREAM
from migrate.registry import Registry
from migrate.settings import get_settings
from migrate.usecase import UseCase

events_app = typer.Typer(help="The use cases' event topics.", no_args_is_help=True)


def _usecase(name: str) -> UseCase:
    from migrate.batch.event_history import event_stream  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    usecase = Registry(get_settings().usecases_dir).get(name)
    event_stream(usecase)  # a clear error when it declares no event stream
    return usecase


def _redis_url() -> str:
    from migrate.devservices.redis_server import resolve_redis_url  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    url, _ = resolve_redis_url(get_settings())
    return url


@friendly
def stream(  # noqa: PLR0917 - a Typer command: each parameter is one of its options
    usecase: str,
    group: Annotated[
        str | None,
        typer.Option(help="Consumer group (default migrate-stream-<usecase>): its members split the partitions."),
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    until_caught_up: Annotated[bool, typer.Option(help="Exit once the topic's end is reached.")] = False,
    max_seconds: Annotated[float | None, typer.Option(help="Exit after this long.")] = None,
    stream_name: Annotated[
        str, typer.Option("--stream", help="Which event stream: main, or one of realtime_features.streams.")
    ] = MAIN_STREAM,
) -> None:
    """Compute the use case's real-time features from one event topic into the feature store, exactly once."""
    from migrate.devservices.shared_broker import shared_bootstrap  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.stream.processor import StreamProcessor  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uc = _usecase(usecase)
    settings = get_settings()
    bootstrap = shared_bootstrap(settings)
    if metrics_port is not None:
        from prometheus_client import start_http_server  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

        start_http_server(metrics_port, addr="127.0.0.1")
    try:
        processor = StreamProcessor(
            settings, uc, bootstrap=bootstrap, redis_url=_redis_url(), group_id=group, stream=stream_name
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--stream") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print(
        f"stream processor of {uc.name} ({processor.topic} at {bootstrap}, group {processor.group_id}); Ctrl-C stops"
    )
    report = processor.run(until_caught_up=until_caught_up, max_seconds=max_seconds, stop=stop)
    console.print(f"[green]stopped[/] {uc.name}: {report}")


@friendly
def replay(
    usecase: str,
    since: Annotated[
        datetime | None,
        typer.Option("--from", help="Rebuild from this event time (UTC); default: the topic's start."),
    ] = None,
    group: Annotated[
        str | None,
        typer.Option(help="The consumer group whose features are rebuilt (default migrate-stream-<usecase>)."),
    ] = None,
    stream_name: Annotated[
        str, typer.Option("--stream", help="Which event stream: main, or one of realtime_features.streams.")
    ] = MAIN_STREAM,
) -> None:
    """Rebuild one stream's real-time features from its topic's retention (stop its `migrate stream` first)."""
    from migrate.devservices.shared_broker import shared_bootstrap  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.stream.replay import replay as run_replay  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    uc = _usecase(usecase)
    settings = get_settings()
    with console.status(f"replaying {uc.name} from {since or 'the start of the topic'}"):
        report = run_replay(
            settings,
            uc,
            bootstrap=shared_bootstrap(settings),
            redis_url=_redis_url(),
            since=as_utc(since),
            group_id=group,
            stream=stream_name,
        )
    console.print(f"[green]rebuilt[/] the real-time features of {uc.name} ({stream_name} stream): {report}")


@events_app.command("replay")
@friendly
def events_replay(  # noqa: PLR0917 - a Typer command: each parameter is one of its options
    usecase: str,
    speed: Annotated[
        float, typer.Option(help="Event time runs this many times faster than wall time; 0: flat out.")
    ] = (60.0),
    since: Annotated[
        datetime | None, typer.Option("--from", help="First event time (UTC); default: after the newest batch run.")
    ] = None,
    until: Annotated[datetime | None, typer.Option(help="Stop before this event time (UTC); default: the end.")] = None,
    clock_wall: Annotated[
        float | None,
        typer.Option(help="Unix time at which --from is 'now' (a simulated clock shared with `migrate serve`)."),
    ] = None,
    warm_up: Annotated[
        bool,
        typer.Option(
            "--warm-up/--no-warm-up",
            help="First publish what the windows hold at --from: the events of the longest window plus the allowed "
            "lateness before it, and each key's last minutes_since match (default: windows start empty).",
        ),
    ] = False,
) -> None:
    """Play the offline event history back into the use case's Kafka topic, paced by event time."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    from migrate.batch.event_history import iter_events, refused_events, warm_up_events  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.batch.offline_store import latest_feature_time, open_offline  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.devservices.shared_broker import shared_bootstrap  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.feature_windows import warm_up as warm_up_span  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.stream.publisher import EventPublisher  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    uc = _usecase(usecase)
    settings = get_settings()
    assert uc.realtime_features is not None and uc.realtime_features.events is not None
    with open_offline(settings.offline_store_path) as con:
        start = as_utc(since) or latest_feature_time(con, uc)
        end = as_utc(until) or datetime.max.replace(tzinfo=UTC)
        if start is None:
            raise MigrateError(
                f"no batch features in the offline store to start the replay of {uc.name} after",
                fix="pass --from, or run `migrate demo` to build the example's offline store",
            )
        publisher = EventPublisher.for_usecase(
            uc,
            shared_bootstrap(settings),
            topic_prefix=settings.events_topic_prefix,
            timeout_s=settings.kafka_timeout_s,
        )
        try:
            with Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(), console=console) as bar:
                task = bar.add_task(f"replaying {uc.name} at {speed:g}×", total=None)

                def progress(sent: int, moment: datetime) -> None:
                    bar.update(task, description=f"{sent:,} events, event time {moment:%Y-%m-%d %H:%M}Z")

                time_field = uc.realtime_features.event_time_column
                history: Iterable[dict[str, Any]] = warm_up_events(con, uc, start) if warm_up else ()
                events: Iterable[dict[str, Any]] = iter_events(con, uc, start, end)
                # The warm-up is the past on either clock (a simulated one reads its start until its day begins:
                # migrate/clock.py), so it goes out at once, and the processor has the whole head start to apply it.
                sent = publisher.publish(history, time_field=time_field)
                sent += publisher.publish(
                    events,
                    time_field=time_field,
                    speed=speed or None,
                    anchor=None if clock_wall is None else (start, clock_wall),
                    on_progress=progress,
                )
        finally:
            publisher.close()
        # The history's rows the stream would dead-letter are not published (NaN and infinity could not be, and a
        # JSON null would turn them into events it accepts): counted here instead, over the replayed range and the
        # warm-up's span before it (a `minutes_since` match the warm-up reaches further back for is not counted).
        left_out = refused_events(con, uc, end, start=start - warm_up_span(uc) if warm_up else start)
    console.print(f"[green]published[/] {sent:,} events of {uc.name} to {publisher.topic}")
    if left_out:
        console.print(
            f"  left out: {left_out:,} events of the history that the stream processor refuses (a null key, time or "
            "id, NaN or infinity, an empty string), as it would dead-letter them",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    """Add the real-time feature commands to the ``migrate`` app."""
    app.command()(stream)
    app.command()(replay)
    app.add_typer(events_app, name="events")
