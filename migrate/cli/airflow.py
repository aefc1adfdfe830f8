"""``migrate airflow``: the embedded Airflow with its UI, in the foreground until Ctrl-C."""

from __future__ import annotations

import signal
import time
from types import FrameType
from typing import Annotated

import typer

from migrate.cli.support import console, err, friendly
from migrate.settings import get_settings


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@friendly
def airflow(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the API server and UI.")] = 8080,
    host: Annotated[str, typer.Option(help="Interface to bind; 0.0.0.0 exposes the UI to the network.")] = "127.0.0.1",
    triggerer: Annotated[bool, typer.Option(help="Also start a triggerer (only deferrable tasks need one).")] = False,
) -> None:
    """Start Airflow (API server with the UI, scheduler, DAG processor) on the project's DAGs until Ctrl-C."""
    from migrate.devservices.airflow_server import AirflowServer  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.devservices.redis_server import resolve_redis_url  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs
    from migrate.registry import Registry  # noqa: PLC0415 - start-up cost and extras: a command imports its dependencies when it runs

    settings = get_settings()
    settings.ensure_state_dir()
    # The materialization DAGs write to the feature store: give the tasks the same Redis `migrate serve` reads.
    redis_url, redis_server = resolve_redis_url(settings)
    server = AirflowServer(
        settings, port=port, host=host, triggerer=triggerer, extra_env={"MIGRATE_REDIS_URL": redis_url}
    )
    # SIGTERM and SIGHUP (terminal closed) stop the components the way Ctrl-C does; SIGINT is set explicitly too,
    # for a shell that started this in the background hands it down ignored.
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {sig: signal.signal(sig, _interrupt) for sig in handled}
    try:
        with console.status(f"starting Airflow ({', '.join(server.components)}) on {server.url}"):
            login = server.start()
        usecases = [uc.name for uc in Registry(settings.usecases_dir).valid()]
        console.print(f"[green]Airflow is up:[/] [bold]{server.url}[/]")
        console.print(f"  log in   {login.describe()}", highlight=False)
        # Each file of the DAGs folder makes one `<file>__<usecase>` DAG per valid use case.
        kinds = ", ".join(
            f"{path.stem}__" for path in sorted(settings.dags_path.glob("*.py")) if not path.name.startswith("_")
        )
        console.print(
            f"  DAGs     {kinds} × {', '.join(usecases) or 'no valid use case'}"
            " (paused until you trigger or unpause them; materialize_features__ follows each publish)",
            highlight=False,
        )
        console.print(f"  logs     {server.log_dir}/{{{','.join(server.components)}}}.log", highlight=False)
        if redis_server is not None:
            console.print(f"  Redis    embedded, {redis_url} (stop it with `migrate services stop`)", highlight=False)
        console.print("Ctrl-C stops Airflow.")
        while (gone := server.exited()) is None:
            time.sleep(1)
        err.print(f"[bold red]error:[/] Airflow's {gone} exited; stopping the others. Its log: {server.log_file(gone)}")
        err.print(server.log_tail(gone), highlight=False, markup=False)
        raise typer.Exit(1)
    except KeyboardInterrupt:
        console.print("stopping Airflow …")
    finally:
        for sig in handled:  # a second Ctrl-C must not cut the clean-up short
            signal.signal(sig, signal.SIG_IGN)
        server.stop()
        for sig, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, which cannot be put back
                signal.signal(sig, handler)
    console.print("Airflow stopped.")


def register(app: typer.Typer) -> None:
    """Add ``migrate airflow`` to the ``migrate`` app."""
    app.command()(airflow)
