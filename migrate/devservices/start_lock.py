"""One process at a time checks for and starts an embedded service of a state dir: a file lock, bounded in time.

Without it, `migrate stream`, `serve` and `sink` started at the same instant each found no broker and started one.
The lock is ``flock`` on a file beside the service's files: the kernel releases it when its holder dies, so a killed
starter never blocks the next one.
"""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from migrate.errors import MigrateError

__all__ = ["start_lock"]


@contextmanager
def start_lock(path: Path, *, timeout_s: float, what: str) -> Iterator[None]:
    """Hold the exclusive lock `path` (created if missing) for the block; wait at most `timeout_s` for it.

    Raises:
        MigrateError: another process held it longer than `timeout_s`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise MigrateError(
                        f"another process has been starting the {what} for over {timeout_s:.0f} s (lock {path})",
                        fix="wait for it, or find it with `migrate services status` and stop it",
                    ) from None
                time.sleep(0.02)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
