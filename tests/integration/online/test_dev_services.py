"""The embedded services of a state dir: one broker and one Redis however many commands start at once; status."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from migrate import settings as settings_module
from migrate.cli.main import app
from migrate.devservices.redis_server import resolve_redis_url, stop_redis
from migrate.devservices.shared_broker import running_broker, shared_bootstrap, stop_shared_broker
from migrate.devservices.status import services_status
from migrate.settings import Settings, get_settings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
STARTERS = 4

STARTER = textwrap.dedent(
    """
    import os, pathlib, sys, time
    from migrate.devservices.redis_server import resolve_redis_url
    from migrate.devservices.shared_broker import shared_bootstrap
    from migrate.settings import get_settings

    settings = get_settings(state_dir=sys.argv[1])
    go = pathlib.Path(sys.argv[2])
    pathlib.Path(f"{go}.ready.{os.getpid()}").touch()
    while not go.exists():  # every starter is imported and waiting: then they all race
        time.sleep(0.001)
    print(shared_bootstrap(settings) if sys.argv[3] == "kafka" else resolve_redis_url(settings)[0])
    """
)


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    chosen = get_settings(state_dir=tmp_path / "state").model_copy(update={"redis_url": None, "kafka_bootstrap": None})
    yield chosen
    stop_shared_broker(chosen)
    stop_redis(chosen)
    for pid in _processes(str(chosen.state_dir / "bin").encode()):  # extra brokers of a failed race: this test's
        os.kill(pid, signal.SIGKILL)


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MIGRATE_REDIS_URL", "MIGRATE_KAFKA_BOOTSTRAP")}
    return {**env, "MIGRATE_STATE_DIR": str(settings.state_dir), "MIGRATE_PROJECT_DIR": str(ROOT)}


def _race(settings: Settings, service: str) -> list[str]:
    """Start STARTERS processes that ask for the service at the same instant; what each was given."""
    go = settings.state_dir.parent / f"go-{service}"
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(settings.state_dir), str(go), service],
            env=_env(settings),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(STARTERS)
    ]
    answers = []
    try:
        # Each starter says it is ready (imported, waiting for `go`); then `go` lets them all check and start at once.
        ready = lambda: len(list(go.parent.glob(f"{go.name}.ready.*"))) == STARTERS  # noqa: E731
        deadline = time.monotonic() + 120
        while not ready() and time.monotonic() < deadline and all(s.poll() is None for s in starters):
            time.sleep(0.01)
        assert ready(), "the starters did not all get ready"
        go.touch()
        for starter in starters:
            out, err = starter.communicate(timeout=120)
            assert starter.returncode == 0, err[-3000:]
            answers.append(out.strip().splitlines()[-1])
    finally:
        for starter in starters:
            if starter.poll() is None:
                starter.kill()
                starter.wait()
    return answers


def _processes(match: bytes, cwd: Path | None = None) -> list[int]:
    """Live processes whose command line contains `match` (and whose working directory is `cwd`, if given)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            where = Path(os.readlink(entry / "cwd")) if cwd is not None else None
        except OSError:
            continue
        if match in command and state != "Z" and (cwd is None or where == cwd):
            found.append(int(entry.name))
    return found


def test_commands_started_together_share_one_embedded_broker(settings: Settings) -> None:
    answers = _race(settings, "kafka")
    assert len(set(answers)) == 1, answers
    # The broker runs the state dir's copy of the tansu binary: its command line names the state dir.
    brokers = _processes(str(settings.state_dir / "bin").encode())
    running = running_broker(settings)
    assert running is not None and brokers == [running.pid]
    assert answers[0] == running.bootstrap


def test_commands_started_together_share_one_embedded_redis(settings: Settings) -> None:
    answers = _race(settings, "redis")
    assert len(set(answers)) == 1, answers
    servers = _processes(b"redis-server", cwd=(settings.state_dir / "redis").resolve())
    assert len(servers) == 1, servers


def test_services_status_says_what_runs_where_and_whether_it_answers(settings: Settings) -> None:
    assert [(s.name, s.state) for s in services_status(settings)] == [
        ("redis", "not running"),
        ("kafka", "not running"),
    ]
    [bootstrap] = set(_race(settings, "kafka"))
    [redis_url] = set(_race(settings, "redis"))
    redis, kafka = services_status(settings)
    assert (redis.kind, redis.address, redis.state) == ("embedded", redis_url, "healthy") and redis.pid
    running = running_broker(settings)
    assert running is not None
    assert (kafka.kind, kafka.address, kafka.pid, kafka.state) == ("embedded", bootstrap, running.pid, "healthy")

    result = CliRunner().invoke(app, ["services", "status"], env=_env(settings), terminal_width=400)
    assert result.exit_code == 0, result.output
    assert str(running.pid) in result.output and result.output.count("healthy") == 2

    stop_shared_broker(settings)
    assert services_status(settings)[1].state == "not running"
    configured = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})  # nobody listens on port 1
    kafka = services_status(configured, timeout_s=0.5)[1]
    assert kafka.kind == "configured" and kafka.state.startswith("unhealthy: ")


def test_dev_profile_logs_one_warning_line_when_it_starts_a_stand_in(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings_module, "_warned", set())  # as in a fresh process
    with caplog.at_level(logging.WARNING, logger="migrate.settings"):
        bootstrap = shared_bootstrap(settings)
        redis_url, _ = resolve_redis_url(settings)
        assert shared_bootstrap(settings) == bootstrap  # reused: nothing more to say
    lines = [r.getMessage() for r in caplog.records if r.name == "migrate.settings"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("MIGRATE_KAFKA_BOOTSTRAP is not set") and bootstrap in lines[0]
    assert lines[1].startswith("MIGRATE_REDIS_URL is not set") and redis_url in lines[1]
