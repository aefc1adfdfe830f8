"""kill -9 at random instants: the features still equal an uninterrupted run over the same events.

Each processor runs in a process of its own (worker.py) and is slowed down per event so that kills land in the
middle of the stream, between and during checkpoints. Random but repeatable: a fixed seed picks the instants.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from stream_helpers import Stream, same

pytestmark = pytest.mark.integration

WORKER = Path(__file__).with_name("worker.py")
GROUP = "migrate-stream"


def spawn(stream: Stream, log: Path, *, delay_s: float, usecase: Any = None) -> subprocess.Popen[bytes]:
    """A worker process; `usecase` (a UseCase) replaces the renamed example when given."""
    args: dict[str, Any] = {
        "state_dir": str(stream.settings.state_dir),
        "usecase": stream.usecase.name,
        "bootstrap": stream.bootstrap,
        "redis_url": stream.redis_url,
        "group": GROUP,
        "delay_s": delay_s,
    }
    if usecase is not None:
        args["usecase_json"] = usecase.model_dump_json()
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, str(WORKER), orjson.dumps(args).decode()], stdout=out, stderr=out)


def positions(stream: Stream) -> dict[str, str]:
    client = redis.Redis.from_url(stream.redis_url, decode_responses=True)
    try:
        return dict(client.hgetall(f"migstream:{stream.usecase.name}:{GROUP}:offset"))
    finally:
        client.close()


def owners(stream: Stream) -> set[str]:
    client = redis.Redis.from_url(stream.redis_url, decode_responses=True)
    try:
        return set(client.hgetall(f"migstream:{stream.usecase.name}:{GROUP}:owner").values())
    finally:
        client.close()


def wait_for(condition: Any, process: subprocess.Popen[bytes], timeout_s: float, log: Path) -> bool:
    """Poll until `condition()`; False if the process ended first."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s; worker log:\n{log.read_text()[-3000:]}")


def finish(stream: Stream, log: Path, usecase: Any = None) -> None:
    final = spawn(stream, log, delay_s=0.0, usecase=usecase)
    assert final.wait(timeout=180) == 0, log.read_text()[-3000:]


def check(stream: Stream) -> None:
    end = stream.events[-1]["event_time"] + timedelta(minutes=1)
    assert same(stream.observed(end), stream.expected(stream.events, end)) == []
    offsets = positions(stream)
    assert sum(int(o) for o in offsets.values()) == len(stream.events)  # every message consumed, none skipped


def test_kill_9_at_random_instants_loses_and_doubles_nothing(stream: Stream, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    stream.publish()
    log = tmp_path / "workers.log"
    kills = 0
    for _ in range(10):
        before = positions(stream)
        worker = spawn(stream, log, delay_s=0.002)
        # Kill only once this worker has checkpointed at least once, then at a random instant after.
        if not wait_for(lambda before=before: positions(stream) != before, worker, 90, log):
            break  # it finished the stream before the kill came
        time.sleep(rng.uniform(0.0, 0.25))
        worker.kill()
        worker.wait(timeout=10)
        kills += 1
    assert kills >= 10, f"only {kills} kills landed mid-stream: slow the worker down"
    finish(stream, log)
    check(stream)


def test_two_processors_in_one_group_one_killed_mid_stream(stream: Stream, tmp_path: Path) -> None:
    rng = random.Random(7)
    stream.publish()
    log = tmp_path / "workers.log"
    first = spawn(stream, log, delay_s=0.002)
    second = spawn(stream, log, delay_s=0.002)
    try:
        # Both own partitions (the group split them) and both have checkpointed.
        wait_for(lambda: len(owners(stream)) == 2 and len(positions(stream)) >= 2, second, 120, log)
        time.sleep(rng.uniform(0.0, 0.5))
        first.kill()
        first.wait(timeout=10)
        # The survivor takes the dead member's partitions after the session timeout and finishes the stream.
        assert second.wait(timeout=180) == 0, log.read_text()[-3000:]
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    check(stream)
