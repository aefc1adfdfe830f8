"""The state dir's shared embedded broker: one Tansu that `serve`, `stream`, `events replay` and `sink` all use.

Each command on its own would start a private broker and lose its topics on exit. Instead the first command that
needs Kafka (with ``MIGRATE_KAFKA_BOOTSTRAP`` unset) starts Tansu detached from itself and records its pid and
port in ``<state_dir>/kafka/broker.json``; later commands find and reuse it; ``migrate services stop`` ends it.
Its storage is memory: stopping it drops every topic (production points ``MIGRATE_KAFKA_BOOTSTRAP`` at Kafka).
Checking for it and starting it happen under one file lock (``<state_dir>/kafka/start.lock``), so commands started
at the same instant still share one broker. Under ``MIGRATE_PROFILE=production`` nothing is started: the settings
refuse to load without ``MIGRATE_KAFKA_BOOTSTRAP``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

from migrate.devservices.broker import broker_binary, free_port
from migrate.devservices.start_lock import start_lock
from migrate.errors import BrokerStartError, BrokerUnavailableError
from migrate.settings import Settings
from online.kafka import wait_for_broker

__all__ = ["SharedBroker", "broker_file", "running_broker", "shared_bootstrap", "stop_shared_broker"]

# Held for the life of the process that started them: a collected Popen of a running child warns (ResourceWarning).
_STARTED: list[subprocess.Popen[bytes]] = []


def broker_file(settings: Settings) -> Path:
    """Where the shared broker records its pid and port (``online.kafka.bootstrap_from_file`` reads it)."""
    return settings.kafka_dir / "broker.json"


def _info_path(settings: Settings) -> Path:
    return broker_file(settings)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(")", 1)[1].split()[0] != "Z"


def _is_tansu(pid: int) -> bool:
    """A live (not zombie) Tansu broker, not another process that got its pid since."""
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _alive(pid) and b"tansu" in command


@dataclass(frozen=True)
class SharedBroker:
    """The running shared broker: its process and port."""

    pid: int
    port: int

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"


def running_broker(settings: Settings) -> SharedBroker | None:
    """The state dir's shared broker if its process is alive (whether or not it answers right now)."""
    path = _info_path(settings)
    try:
        info = orjson.loads(path.read_bytes())
        pid, port = int(info["pid"]), int(info["port"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    # A live Tansu of that pid is reused even if slow to answer a probe: on a loaded machine a probe's timeout
    # used to read as "no broker" and a second one was started.
    return SharedBroker(pid, port) if _is_tansu(pid) else None


def shared_bootstrap(settings: Settings) -> str:
    """``kafka_bootstrap`` when configured; else the state dir's embedded broker, started if it is not running."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    settings.stand_in("kafka_bootstrap")
    settings.kafka_dir.mkdir(parents=True, exist_ok=True)
    wait_s = settings.kafka_timeout_s * 2
    with start_lock(settings.kafka_dir / "start.lock", timeout_s=3 * (wait_s + 5), what="embedded Kafka broker"):
        running = running_broker(settings)
        if running is not None:
            return running.bootstrap
        bootstrap = _start(settings, wait_s)
    settings.warn_stand_in("kafka_bootstrap", f"started at {bootstrap}; its topics are lost when it stops")
    return bootstrap


def _start(settings: Settings, wait_s: float) -> str:
    binary = broker_binary(settings)
    error: Exception | None = None
    for _ in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        log_path = settings.kafka_dir / "tansu-shared.log"
        with log_path.open("ab") as log_file:
            process = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it, like the embedded Redis
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        bootstrap = f"127.0.0.1:{port}"
        try:
            wait_for_broker(bootstrap, wait_s)
        except BrokerUnavailableError as exc:
            error = exc
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=5)
            continue
        _STARTED.append(process)
        info = _info_path(settings)
        staged = info.with_name(f".{info.name}.{os.getpid()}")
        staged.write_bytes(orjson.dumps({"pid": process.pid, "port": port}))
        os.replace(staged, info)  # readers (the shadow log) never see half a file
        return bootstrap
    raise BrokerStartError(
        f"the shared embedded broker did not start: {error}",
        fix=f"read {settings.kafka_dir / 'tansu-shared.log'}, or set MIGRATE_KAFKA_BOOTSTRAP to a running Kafka",
    )


def stop_shared_broker(settings: Settings, timeout_s: float = 5.0) -> bool:
    """Stop the state dir's shared broker; False when none was running."""
    with start_lock(settings.kafka_dir / "start.lock", timeout_s=60, what="embedded Kafka broker"):
        running = running_broker(settings)
        _info_path(settings).unlink(missing_ok=True)
    if running is None:
        return False
    pid = running.pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
    for process in [p for p in _STARTED if p.pid == pid]:
        process.wait(timeout=timeout_s)  # our own child: reap it
        _STARTED.remove(process)
    return True
