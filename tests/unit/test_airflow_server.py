"""The embedded Airflow server's pure parts: environment, admin password, port check, lock and WAL, no Airflow."""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrate.devservices import airflow_server
from migrate.devservices.airflow_runner import AirflowError
from migrate.devservices.airflow_server import ADMIN, AirflowServer
from migrate.settings import Settings, get_settings

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("MIGRATE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", raising=False)
    monkeypatch.delenv("AIRFLOW__CORE__PARALLELISM", raising=False)
    return get_settings()


def test_env_points_every_component_at_this_server(settings: Settings) -> None:
    server = AirflowServer(settings, port=18_080, host="127.0.0.1", extra_env={"AIRFLOW__CORE__PARALLELISM": "3"})
    env = server.env()
    home = settings.state_dir / "airflow"
    assert env["AIRFLOW_HOME"] == str(home)
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home / 'airflow.db'}"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"
    assert (env["AIRFLOW__API__HOST"], env["AIRFLOW__API__PORT"]) == ("127.0.0.1", "18080")
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == f"{ADMIN}:admin"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == str(server.passwords_file)
    assert env["MIGRATE_STATE_DIR"] == str(settings.state_dir)
    # Free log-server ports, not Airflow's fixed 8793/8794: two embedded Airflows can share a machine.
    log_ports = {
        int(env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"]),
        int(env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"]),
    }
    assert log_ports == set(server._log_ports) and not log_ports & {8793, 8794}
    assert env["AIRFLOW__CORE__PARALLELISM"] == "3"  # extra_env wins over the defaults
    assert int(AirflowServer(settings).env()["AIRFLOW__CORE__PARALLELISM"]) >= 2
    assert server.components == ("api-server", "scheduler", "dag-processor")
    assert AirflowServer(settings, triggerer=True).components[-1] == "triggerer"


def test_the_admin_password_is_generated_once_and_reused(settings: Settings) -> None:
    first = AirflowServer(settings).login()
    assert first.username == ADMIN and first.password is not None and len(first.password) == 16
    assert set(first.password) <= set(airflow_server._UNAMBIGUOUS)
    assert stat.S_IMODE(first.passwords_file.stat().st_mode) == 0o600  # a password: readable by its owner only
    again = AirflowServer(settings, port=9_999).login()  # another server (a restart) on the same state dir
    assert again.password == first.password
    assert first.password in first.describe() and str(first.passwords_file) in first.describe()


def test_other_users_in_the_passwords_file_are_kept(settings: Settings) -> None:
    server = AirflowServer(settings)
    server.passwords_file.parent.mkdir(parents=True)
    server.passwords_file.write_text('{"erin": "secret"}')
    login = server.login()
    assert login.password and login.password != "secret"
    assert '"erin": "secret"' in server.passwords_file.read_text()


def test_an_unreadable_passwords_file_says_to_delete_it(settings: Settings) -> None:
    server = AirflowServer(settings)
    server.passwords_file.parent.mkdir(parents=True)
    server.passwords_file.write_text("admin: hunter2")
    with pytest.raises(AirflowError, match="is not JSON") as caught:
        server.login()
    assert "delete it" in str(caught.value)


def test_no_password_when_every_visitor_is_admin(settings: Settings) -> None:
    server = AirflowServer(settings, extra_env={"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"})
    login = server.login()
    assert (login.username, login.password) == (None, None) and "every visitor is admin" in login.describe()
    assert not server.passwords_file.exists()


@contextlib.contextmanager
def _listening() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield int(taken.getsockname()[1])


def test_a_port_in_use_is_refused_before_anything_starts(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("nothing may start on a port in use")

    monkeypatch.setattr(airflow_server, "ensure_metadata_db", never)
    monkeypatch.setattr("migrate.devservices.airflow_server.subprocess.Popen", never)
    with _listening() as port:
        server = AirflowServer(settings, port=port)
        with pytest.raises(AirflowError, match=f"port {port} on 127.0.0.1 is already in use") as caught:
            server.start(timeout_s=1)
    assert "--port" in str(caught.value)
    assert server.processes == {} and server._lock_file is None


def test_one_server_per_state_dir(settings: Settings) -> None:
    first, second = AirflowServer(settings), AirflowServer(settings)
    first._lock()
    try:
        with pytest.raises(AirflowError, match="another `migrate airflow` already runs"):
            second._lock()
    finally:
        first.stop()  # releases the lock
    second._lock()
    second.stop()


def test_wal_is_set_on_a_sqlite_metadata_db(tmp_path: Path) -> None:
    path = tmp_path / "airflow.db"
    airflow_server._sqlite_wal(f"sqlite:///{path}?timeout=30")
    with contextlib.closing(sqlite3.connect(path)) as con:
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_wal_is_a_no_op_off_sqlite(monkeypatch: pytest.MonkeyPatch) -> None:
    def connect(*args: object, **kwargs: object) -> None:
        raise AssertionError("no SQLite connection for another database")

    monkeypatch.setattr("migrate.devservices.airflow_server.sqlite3.connect", connect)
    airflow_server._sqlite_wal("postgresql+psycopg://airflow@127.0.0.1:5432/airflow")
    airflow_server._sqlite_wal("mysql://airflow@localhost/airflow")
