"""Helpers of the tests that run `migrate serve` as a process: wait until it is ready, stop it."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx


def wait_ready(process: subprocess.Popen[bytes], base: str, log_path: Path, timeout_s: float) -> None:
    """Poll ``/readyz`` until 200; fail with the last answer and the log's tail if the process dies or time runs out."""
    deadline, last = time.monotonic() + timeout_s, "no answer"
    while True:
        assert process.poll() is None, log_path.read_text()[-3000:]
        assert time.monotonic() < deadline, (
            f"the service was not ready in {timeout_s} s; /readyz: {last}; log: {log_path.read_text()[-3000:]}"
        )
        try:
            ready = httpx.get(f"{base}/readyz", timeout=2)
            if ready.status_code == 200:
                return
            last = f"{ready.status_code} {ready.text[:500]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 30 s."""
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
