"""Fixtures of the Airflow UI tests: `migrate airflow` running on a small world, and headless Chromium."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from chromium_driver import chromium

from migrate.devservices.airflow_server import free_port

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "airflow_ui"
START_TIMEOUT_S = 180
STOP_TIMEOUT_S = 60
COMPONENTS = ("api-server", "scheduler", "dag-processor")
MIGRATE = str(Path(sys.executable).parent / "migrate")  # the console script of this environment


@dataclass
class RunningAirflow:
    """`migrate airflow` as a child process, its printed URL and log-in, and a REST client logged in."""

    process: subprocess.Popen[str]
    url: str
    username: str
    password: str
    log_dir: Path
    output: list[str]
    api: httpx.Client = field(repr=False)
    stop_timeout_s: float = STOP_TIMEOUT_S

    def log_tails(self, lines: int = 40) -> str:
        """The end of every component's log and of the task logs, for a failure message."""
        parts = ["--- migrate airflow output ---", *self.output[-lines:]]
        for component in COMPONENTS:
            log = self.log_dir / f"{component}.log"
            if log.exists():
                parts += [f"--- {log} ---", *log.read_text(errors="replace").splitlines()[-lines:]]
        for log in sorted(self.log_dir.glob("dag_id=*/**/*.log")):
            parts += [f"--- {log} ---", *log.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(parts)


_FAILED = pytest.StashKey[list[str]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Remember failed tests here, so that the server fixture prints the component logs when it stops."""
    report = yield
    if report.failed:
        item.session.stash.setdefault(_FAILED, []).append(item.nodeid)
    return report


def _read_lines(stream: Any, into: list[str]) -> None:
    for line in stream:
        into.append(line.rstrip("\n"))


def _wait_for(output: list[str], process: subprocess.Popen[str], pattern: str, timeout_s: float) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for line in list(output):
            if match := re.search(pattern, line):
                return match
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"`migrate airflow` printed no {pattern!r} within {timeout_s} s:\n" + "\n".join(output[-60:]))


@pytest.fixture(scope="module")
def cli_env(world: Any) -> dict[str, str]:
    """The environment of `migrate airflow` here: the `world` fixture's state dir and a metadata DB of its own."""
    env = dict(os.environ)
    env["MIGRATE_STATE_DIR"] = str(world.settings.state_dir)
    # The session's shared metadata DB (tests/conftest.py) stays with dag.test(): this server gets its own.
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    # The materialization DAG's Redis; no test here runs it, so nothing connects to this URL.
    env["MIGRATE_REDIS_URL"] = os.environ.get("MIGRATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    return env


@pytest.fixture(scope="module")
def airflow_ui(world: Any, cli_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[RunningAirflow]:
    """`migrate airflow --port <free>` on the `world` fixture's state dir, with its own metadata DB."""

    port = free_port()
    output: list[str] = []
    process = subprocess.Popen(
        [MIGRATE, "airflow", "--port", str(port)],
        env=cli_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    reader = threading.Thread(target=_read_lines, args=(process.stdout, output), daemon=True)
    reader.start()
    log_dir = world.settings.airflow_home / "logs"
    api: httpx.Client | None = None
    try:
        url = _wait_for(output, process, r"Airflow is up: (http://\S+)", START_TIMEOUT_S).group(1)
        login = _wait_for(output, process, r"user (\S+), password (\S+)", 5)
        username, password = login.group(1), login.group(2)
        token = httpx.post(f"{url}/auth/token", json={"username": username, "password": password}, timeout=10)
        assert token.status_code == 201, token.text
        api = httpx.Client(
            base_url=f"{url}/api/v2",
            headers={"Authorization": f"Bearer {token.json()['access_token']}"},
            timeout=10,
        )
        running = RunningAirflow(process, url, username, password, log_dir, output, api)
        yield running
        if request.session.stash.get(_FAILED, []):
            print(running.log_tails())
    finally:
        if api is not None:
            api.close()
        _stop(process)
        reader.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()


def _stop(process: subprocess.Popen[str]) -> None:
    """SIGTERM (the way the test of clean shutdown does), then kill whatever is left of the tree."""
    if process.poll() is not None:
        return
    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


@pytest.fixture(scope="module")
def browser(airflow_ui: RunningAirflow) -> Iterator[Any]:
    """Debian's headless Chromium through chromedriver, logged in to the Airflow UI."""
    with chromium(window="1400,1000") as driver:
        driver.set_script_timeout(30)
        yield driver


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """`<repo>/test-artifacts/airflow_ui/`, emptied of the previous run's screenshots."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS
