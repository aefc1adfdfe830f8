"""The embedded Airflow as a server: API server (with the UI), scheduler and DAG processor as child processes.

Each component runs in a process group of its own, on the project's environment (``airflow_env()``: the
embedded metadata DB and the project's DAGs folder), with its output in ``<airflow_home>/logs/<component>.log``.
Stopping signals every group, so the API server's workers and the executor's task processes go too.

The executor is Airflow 3's ``LocalExecutor``: Airflow 3 removed the ``SequentialExecutor``, and its task
processes talk to the API server's execution API rather than to the metadata DB, so SQLite is enough here.
Log-in goes through Airflow's ``SimpleAuthManager`` (development only): one ``admin`` user whose password this
module generates once into Airflow's own passwords file, so it can be printed.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TextIO

import httpx

from migrate.devservices.airflow_runner import AirflowError, airflow_env, ensure_metadata_db
from migrate.settings import Settings

__all__ = ["AirflowServer", "Login", "free_port"]

COMPONENTS = ("api-server", "scheduler", "dag-processor")
ADMIN = "admin"
# The characters SimpleAuthManager generates its own passwords from: none that reads like another.
_UNAMBIGUOUS = "abcdefghkmnpqrstuvwxyzABCDEFGHKMNPQRSTUVWXYZ23456789"
_HEALTH_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Login:
    """How to log in to the UI: a user and password, or nobody needs to (every visitor is admin)."""

    username: str | None
    password: str | None
    passwords_file: Path

    def describe(self) -> str:
        if self.username is None:
            return "no log-in: every visitor is admin (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS)"
        return f"user {self.username}, password {self.password} (kept in {self.passwords_file})"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return True
    return False


class AirflowServer:
    """Airflow's API server, scheduler and DAG processor (and triggerer, if asked) for the project's DAGs."""

    def __init__(
        self,
        settings: Settings,
        *,
        port: int = 8080,
        host: str = "127.0.0.1",
        triggerer: bool = False,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.components = (*COMPONENTS, "triggerer") if triggerer else COMPONENTS
        self.extra_env = dict(extra_env or {})
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        # The scheduler and triggerer serve task logs on fixed ports (8793, 8794) by default: free ones instead,
        # so that two embedded Airflows (a test beside a user's) can run on one machine.
        self._log_ports = (free_port(host), free_port(host))
        self._lock_file: TextIO | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.settings.airflow_home / "logs"

    @property
    def passwords_file(self) -> Path:
        return self.settings.airflow_home / "simple_auth_manager_passwords.json.generated"

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    def env(self) -> dict[str, str]:
        """The components' environment: the project's Airflow env plus what serving needs."""
        env = airflow_env(self.settings)
        env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
                # Task processes report to the execution API of this API server, wherever it listens.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
                "AIRFLOW__API__HOST": self.host,
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
            }
        )
        env.setdefault("AIRFLOW__CORE__PARALLELISM", str(max(2, os.cpu_count() or 2)))
        env.update(self.extra_env)
        return env

    def login(self) -> Login:
        """The UI's log-in; generates the admin password once, into SimpleAuthManager's passwords file."""
        if self.env().get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "").lower() == "true":
            return Login(None, None, self.passwords_file)
        self.passwords_file.parent.mkdir(parents=True, exist_ok=True)
        passwords: dict[str, str] = {}
        if self.passwords_file.exists():
            text = self.passwords_file.read_text().strip()
            try:
                passwords = json.loads(text or "{}")
            except json.JSONDecodeError:
                raise AirflowError(
                    f"the Airflow passwords file {self.passwords_file} is not JSON",
                    fix="delete it; a new admin password is generated at the next start",
                ) from None
        if ADMIN not in passwords:
            passwords[ADMIN] = "".join(secrets.choice(_UNAMBIGUOUS) for _ in range(16))
            self.passwords_file.write_text(json.dumps(passwords) + "\n")
            self.passwords_file.chmod(0o600)
        return Login(ADMIN, passwords[ADMIN], self.passwords_file)

    def _command(self, component: str) -> list[str]:
        command = [sys.executable, "-m", "airflow", component]
        if component == "api-server":
            command += ["--host", self.host, "--port", str(self.port), "--workers", "1"]
        return command

    def start(self, timeout_s: float = 180) -> Login:
        """Prepare the metadata DB, start every component and wait until the API server reports them healthy."""
        if _port_in_use(self.host, self.port):
            raise AirflowError(
                f"port {self.port} on {self.host} is already in use",
                fix="pick another with --port N, or stop its owner",
            )
        self._lock()
        try:
            ensure_metadata_db(self.settings)
            env = self.env()
            _sqlite_wal(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"])
            login = self.login()
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for component in self.components:
                with self.log_file(component).open("ab") as log:
                    log.write(f"\n=== migrate airflow: {component} starting at {time.ctime()} ===\n".encode())
                    log.flush()
                    self.processes[component] = subprocess.Popen(
                        self._command(component),
                        env=env,
                        cwd=self.settings.project_dir,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its own process group: stopped as a whole, deaf to the tty's ^C
                    )
            self.wait_healthy(timeout_s)
        except BaseException:
            self.stop()
            raise
        return login

    def exited(self) -> str | None:
        """The first component that is no longer running, if any."""
        for component, process in self.processes.items():
            if process.poll() is not None:
                return component
        return None

    def health(self) -> dict[str, str]:
        """Each component's status from the API server's health endpoint (empty when it does not answer)."""
        try:
            response = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=_HEALTH_TIMEOUT_S)
            response.raise_for_status()
            body = response.json()
        except (httpx.HTTPError, ValueError):
            return {}
        return {name: str((part or {}).get("status")) for name, part in body.items() if isinstance(part, dict)}

    def wait_healthy(self, timeout_s: float = 180) -> None:
        """Wait until the metadata DB and every started component are healthy; fail fast when one exits."""
        wanted = {"metadatabase", *(c.replace("-", "_") for c in self.components if c != "api-server")}
        deadline = time.monotonic() + timeout_s
        status: dict[str, str] = {}
        while time.monotonic() < deadline:
            if (gone := self.exited()) is not None:
                raise AirflowError(
                    f"Airflow's {gone} exited during start-up (code {self.processes[gone].returncode})",
                    fix=f"see its log: {self.log_file(gone)}\n{self.log_tail(gone)}",
                )
            status = self.health()
            if status and all(status.get(name) == "healthy" for name in wanted):
                return
            time.sleep(1)
        raise AirflowError(
            f"Airflow was not healthy within {timeout_s:.0f} s (health: {status or 'no answer'})",
            fix=f"see the logs in {self.log_dir}",
        )

    def log_tail(self, component: str, lines: int = 30) -> str:
        """The last lines of a component's log."""
        try:
            text = self.log_file(component).read_text(errors="replace")
        except FileNotFoundError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout_s: float = 20) -> None:
        """SIGTERM every component's process group, then SIGKILL what is left after `timeout_s`."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in self.processes.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(5)
            # Task processes of the executor may outlive their parent in the group: leave none behind.
            _signal_group(process, signal.SIGKILL)
        self.processes.clear()
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the lock
            self._lock_file = None

    def _lock(self) -> None:
        """One server per state dir: two schedulers on one SQLite metadata DB would trip over each other."""
        path = self.settings.airflow_home / "server.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = path.open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise AirflowError(
                f"another `migrate airflow` already runs on the state dir {self.settings.state_dir}",
                fix="use that one (or stop it with Ctrl-C in its terminal), or set MIGRATE_STATE_DIR for another",
            ) from None
        self._lock_file = handle

    def __enter__(self) -> AirflowServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def _sqlite_wal(url: str) -> None:
    """Put a SQLite metadata DB in WAL mode (it stays so): readers and the writer no longer block each other.

    In SQLite's default rollback-journal mode, the UI's polling reads and the scheduler's and task API's writes
    queue behind one another; under load the API server stalled for over 10 s here. Other databases: no-op.
    """
    if not url.startswith("sqlite:///"):
        return
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as con:
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()
    if not mode or str(mode[0]).lower() != "wal":
        raise AirflowError(
            f"cannot put the Airflow metadata DB {path} in WAL mode (got {mode})",
            fix="make sure the file is writable and not on a network file system",
        )


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
