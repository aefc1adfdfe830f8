"""The state dir's shared embedded broker: one Tansu that `serve`, `stream`, `events replay` and `sink` all use.

Each command on its own would start a private broker and lose its topics on exit. Instead the first command that
needs Kafka (with ``MIGRATE_KAFKA_BOOTSTRAP`` unset) starts Tansu detached from itself and records its pid and
port in ``<state_dir>/kafka/broker.json``; later commands find and reuse it; ``migrate services stop`` ends it.
Its storage is memory: stopping it drops every topic (production points ``MIGRATE_KAFKA_BOOTSTRAP`` at Kafka).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import orjson

from migrate.devservices.broker import broker_binary, free_port
from migrate.errors import BrokerStartError, BrokerUnavailableError
from migrate.settings import Settings
from online.kafka import wait_for_broker

__all__ = ["shared_bootstrap", "stop_shared_broker"]

# Held for the life of the process that started them: a collected Popen of a running child warns (ResourceWarning).
_STARTED: list[subprocess.Popen[bytes]] = []


def _info_path(settings: Settings) -> Path:
    return settings.kafka_dir / "broker.json"


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.split(")", 1)[1].split()[0] != "Z"


def _running(settings: Settings) -> tuple[int, int] | None:
    path = _info_path(settings)
    try:
        info = orjson.loads(path.read_bytes())
        pid, port = int(info["pid"]), int(info["port"])
    except (FileNotFoundError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    if not _alive(pid):
        return None
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return pid, port
    return None


def shared_bootstrap(settings: Settings) -> str:
    """``kafka_bootstrap`` when configured; else the state dir's embedded broker, started if it is not running."""
    if settings.kafka_bootstrap:
        return settings.kafka_bootstrap
    running = _running(settings)
    if running is not None:
        return f"127.0.0.1:{running[1]}"
    binary = broker_binary(settings)
    settings.kafka_dir.mkdir(parents=True, exist_ok=True)
    error: Exception | None = None
    for _ in range(3):  # a free port can be taken between probe and bind
        port = free_port()
        url = f"tcp://127.0.0.1:{port}"
        log_path = settings.kafka_dir / "tansu-shared.log"
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # outlives the command that started it, like the embedded Redis
                env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        bootstrap = f"127.0.0.1:{port}"
        try:
            wait_for_broker(bootstrap, settings.kafka_timeout_s * 2)
        except BrokerUnavailableError as exc:
            error = exc
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=5)
            continue
        _STARTED.append(process)
        _info_path(settings).write_bytes(orjson.dumps({"pid": process.pid, "port": port}))
        return bootstrap
    raise BrokerStartError(
        f"the shared embedded broker did not start: {error}",
        fix=f"read {settings.kafka_dir / 'tansu-shared.log'}, or set MIGRATE_KAFKA_BOOTSTRAP to a running Kafka",
    )


def stop_shared_broker(settings: Settings, timeout_s: float = 5.0) -> bool:
    """Stop the state dir's shared broker; False when none was running."""
    running = _running(settings)
    _info_path(settings).unlink(missing_ok=True)
    if running is None:
        return False
    pid = running[0]
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
