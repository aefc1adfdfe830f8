"""``migrate serve``, ``materialize``, ``sink`` and ``services``: the online path's commands."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
from datetime import UTC, datetime
from typing import Annotated, Literal

import typer

from migrate.cli.support import console, friendly
from migrate.errors import PortInUseError
from migrate.registry import Registry
from migrate.settings import get_settings

services_app = typer.Typer(help="The embedded Redis and Kafka-protocol broker.", no_args_is_help=True)


@friendly
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(min=1, help="Serving worker processes.")] = 1,
    worker_healthcheck_s: Annotated[
        int,
        typer.Option(
            min=1, help="Seconds a worker may take to answer uvicorn's health ping (at start too) before it is killed."
        ),
    ] = 30,
) -> None:
    """Serve every use case's model live (FastAPI on uvicorn); embedded Redis and broker unless configured."""
    import uvicorn  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    from migrate.devservices.redis_server import resolve_redis_url  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.devservices.shared_broker import broker_file, shared_bootstrap  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    # Before any service starts or model loads: uvicorn would bind only after all that, then exit 3 with [Errno 98].
    refuse_taken_port(host, port)
    settings = get_settings()
    redis_url, redis_server = resolve_redis_url(settings)
    bootstrap = shared_bootstrap(settings)  # the state dir's broker, shared with `stream` and `sink`
    # Workers are separate processes: they read where the services are from the environment.
    os.environ["MIGRATE_REDIS_URL"] = redis_url
    os.environ["MIGRATE_KAFKA_BOOTSTRAP"] = bootstrap
    if not settings.kafka_bootstrap:  # the embedded broker: the shadow log follows it if it restarts elsewhere
        os.environ["MIGRATE_KAFKA_BOOTSTRAP_FILE"] = str(broker_file(settings))
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # OpenMP pools woken per request cost ~10 ms at the tail
    if workers > 1:  # one /metrics view over every worker: prometheus-client's multiprocess mode
        from online.serving.metrics import prepare_multiprocess_dir  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

        prepare_multiprocess_dir(settings.state_dir / "prometheus")
    console.print(
        f"feature store {'embedded ' if redis_server else ''}Redis, shadow log to "
        f"{'' if settings.kafka_bootstrap else 'the embedded broker at '}{bootstrap}; docs at http://{host}:{port}/docs"
    )
    # uvicorn shuts down gracefully on SIGTERM (the app's shutdown flushes the shadow records), then raises the
    # signal again so that the process dies of it (exit -15). A stop asked for is a clean exit: 0.
    signal.signal(signal.SIGTERM, _stopped)
    uvicorn.run(
        "online.serving.runtime:app_factory",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,
        # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default; the app trusts MIGRATE_TRUSTED_PROXIES only.
        proxy_headers=False,
        # uvicorn's 5 s default killed workers still importing the app on a loaded 2-core machine, over and over
        # (seen with several test suites running): a slow start is not a hung worker.
        timeout_worker_healthcheck=worker_healthcheck_s,
    )


def refuse_taken_port(host: str, port: int) -> None:
    """Raise `PortInUseError` with the fix when `host:port` cannot be bound (something listens there)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise PortInUseError(
            f"cannot listen on {host}:{port}: {host!r} is not an address of this machine ({exc.strerror})",
            fix="pass --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)",
        ) from None
    with socket.socket(family, kind, proto) as probe:
        # As uvicorn binds: SO_REUSEADDR lets a port whose last connections linger in TIME_WAIT be taken again.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                with socket.socket() as spare:
                    spare.bind(("127.0.0.1", 0))
                    free = spare.getsockname()[1]
                raise PortInUseError(
                    f"port {port} on {host} is already in use, nothing was started",
                    fix=f"pick another port: `migrate serve --port {free}` ({free} is free now), or stop what "
                    f"listens on {port} (`ss -ltnp 'sport = :{port}'` names it)",
                ) from None
            raise PortInUseError(
                f"cannot listen on {host}:{port}: {exc.strerror}",
                fix="pass a port above 1023 with --port, or a --host of this machine",
            ) from None


def _stopped(signum: int, _frame: object) -> None:
    raise SystemExit(0)


@friendly
def materialize(
    usecase: str,
    as_of: Annotated[
        datetime | None,
        typer.Option(help="Features as of this time (UTC); default: the active lookup version's data interval end."),
    ] = None,
    on_correction: Annotated[
        Literal["reject", "apply"], typer.Option(help="What to do with a value that differs from the one stored.")
    ] = "reject",
) -> None:
    """Write the use case's batch features into the online feature store (a re-run is a no-op)."""
    from migrate.devservices.redis_server import resolve_redis_url  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.features.materialize import materialize as run  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.features.materialize import materialize_active  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.features.redis_store import open_feature_store  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    uc = Registry(settings.usecases_dir).get(usecase)
    with console.status(f"materializing {uc.name}"):
        if as_of is None:
            # The configured Redis, or the state dir's embedded one, left running: the features live in its memory.
            redis_url, _server = resolve_redis_url(settings)
            report = materialize_active(uc, settings, redis_url, on_correction=on_correction)
        else:
            moment = as_of.replace(tzinfo=UTC) if as_of.tzinfo is None else as_of
            with open_feature_store(settings) as store:
                report = run(uc, settings, store, moment, on_correction=on_correction)
    console.print(f"[green]materialized[/] {report}", highlight=False)


@friendly
def sink(
    usecase: str,
    idle_timeout: Annotated[float | None, typer.Option(help="Stop after this many idle seconds.")] = None,
) -> None:
    """Consume the use case's shadow log and labels (from its events) from Kafka into Parquet for DuckDB."""
    from migrate.devservices.shared_broker import shared_bootstrap  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from online.shadow.sink import run_sink  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    uc = Registry(settings.usecases_dir).get(usecase)
    bootstrap = shared_bootstrap(settings)
    # SIGTERM (a container stop, `kill`) and Ctrl-C stop it cleanly: what it consumed is written and committed.
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    report = run_sink(settings, usecase, idle_timeout_s=idle_timeout, bootstrap=bootstrap, events_of=uc, stop=stop)
    console.print(f"[green]sink stopped[/] {report}", highlight=False)


@services_app.command("status")
@friendly
def services_status() -> None:
    """Which Redis and Kafka this state dir uses: configured or embedded, address, process, healthy or not."""
    from rich.table import Table  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    from migrate.devservices.status import services_status as status_of  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    table = Table("service", "kind", "address", "pid", "state")
    for service in status_of(get_settings()):
        colour = "green" if service.healthy else "yellow" if service.state.startswith("not running") else "red"
        table.add_row(
            service.name,
            service.kind,
            service.address or "-",
            "-" if service.pid is None else str(service.pid),
            f"[{colour}]{service.state}[/]",
        )
    console.print(table)


@services_app.command("stop")
@friendly
def services_stop() -> None:
    """Stop the embedded Redis and broker of this state dir (they keep features and topics in memory)."""
    from migrate.devservices.redis_server import stop_redis  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.devservices.shared_broker import stop_shared_broker  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    stopped = stop_redis(settings)
    console.print("embedded Redis stopped" if stopped else "no embedded Redis was running")
    broker = stop_shared_broker(settings)
    console.print("embedded broker stopped" if broker else "no embedded broker was running")


def register(app: typer.Typer) -> None:
    """Add the online path's commands to the ``migrate`` app."""
    app.command()(serve)
    app.command()(materialize)
    app.command()(sink)
    app.add_typer(services_app, name="services")
