"""The hand-off to the comparison process: bounded in jobs, in entities in flight and by its socket's buffer; what
it refuses is dropped and counted."""

from __future__ import annotations

import multiprocessing
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from migrate.registry import load_usecase
from online.serving.shadow_handoff import PROBLEM_BYTES, SEND_BUFFER_BYTES, STARTING, ShadowProcess, take_together

pytestmark = pytest.mark.unit

USECASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")


class IdleProcess:
    """Stands in for the comparison process: never started, so nothing is taken unless the test says so. It keeps
    its own copy of the receiving socket, as a started process does, for the test to read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = kwargs["args"]
        self.receiver: socket.socket | None = None

    def start(self) -> None:
        self.receiver = self.args[0].dup()

    def take(self) -> tuple[list[tuple[int, bytes]], bool]:
        assert self.receiver is not None
        return take_together(self.receiver, memoryview(bytearray(self.args[1])), 1_000_000)


@pytest.fixture
def shadow(monkeypatch: pytest.MonkeyPatch) -> Iterator[ShadowProcess]:
    monkeypatch.setattr(multiprocessing.get_context("spawn"), "Process", IdleProcess)
    process = ShadowProcess([USECASE.name], capacity=1_000, max_entities=10_000, registry=CollectorRegistry())
    yield process
    process._sender.close()


def _take(process: ShadowProcess, entities: int) -> None:
    process._taken[0] += entities  # what the comparison process does for each job it takes
    process._taken[1] += 1


def test_the_queue_refuses_jobs_beyond_the_entity_bound(shadow: ShadowProcess) -> None:
    assert all(shadow.submit(b"job %d" % i, entities=100) for i in range(100))  # 10,000 entities in flight
    assert shadow.submit(b"one more", entities=1) is False
    assert shadow.submit(b"one more", entities=100) is False
    _take(shadow, 100)  # the process took one job: room for 100 entities, no more
    assert shadow.submit(b"fits", entities=100) is True
    assert shadow.submit(b"too many", entities=1) is False


def test_a_single_job_larger_than_the_bound_is_refused(shadow: ShadowProcess) -> None:
    assert shadow.submit(b"job", entities=10_001) is False
    assert shadow.submit(b"job", entities=10_000) is True


def test_the_queue_is_bounded_in_jobs_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(multiprocessing.get_context("spawn"), "Process", IdleProcess)
    process = ShadowProcess([USECASE.name], capacity=3, max_entities=10_000, registry=CollectorRegistry())
    try:
        assert [process.submit(b"job %d" % i) for i in range(5)] == [True, True, True, False, False]
        assert process._submitted == 3  # a refused job does not count as in flight
        process._taken[0] += 1  # what the comparison process does for each job it takes
        process._taken[1] += 1
        assert process.submit(b"room for one") and not process.submit(b"no more")
    finally:
        process._sender.close()


def test_each_job_leaves_at_once_in_order_and_the_process_takes_them_together(shadow: ShadowProcess) -> None:
    idle = cast(IdleProcess, shadow._process)
    assert [shadow.submit(b"job %d" % i, entities=i + 1) for i in range(3)] == [True, True, True]
    assert idle.take() == ([(1, b"job 0"), (2, b"job 1"), (3, b"job 2")], True)  # all that was queued, no more
    assert shadow.submit(b"next", entities=2)
    assert idle.take() == ([(2, b"next")], True)
    assert shadow._submitted == 8 and shadow._jobs == 4


def test_a_full_socket_refuses_the_job_without_blocking_and_it_is_not_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(multiprocessing.get_context("spawn"), "Process", IdleProcess)
    process = ShadowProcess([USECASE.name], capacity=1_000_000, max_entities=10_000_000, registry=CollectorRegistry())
    try:
        job = b"x" * 2_000
        sent = 0
        while process.submit(job):  # nobody reads: the socket's buffer fills, then refuses
            sent += 1
            assert sent < 100_000, "the socket never filled"
        assert sent * len(job) <= 2 * SEND_BUFFER_BYTES  # bounded by the buffer, in the kernel, not the worker
        assert (process._jobs, process._submitted) == (sent, sent)  # the refused one is not in flight
        assert not process.submit(b"y" * (3 * SEND_BUFFER_BYTES))  # larger than the buffer can ever hold
    finally:
        process._sender.close()


def test_close_ends_the_stream_after_the_last_job(shadow: ShadowProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    idle = cast(IdleProcess, shadow._process)
    monkeypatch.setattr(shadow._process, "join", lambda timeout: None, raising=False)
    monkeypatch.setattr(shadow._process, "is_alive", lambda: False, raising=False)
    shadow.submit(b"last", entities=1)
    shadow.close()
    assert idle.take() == ([(1, b"last")], False)  # the job, then the end: the process stops after comparing it
    assert not shadow.submit(b"after close")


def test_the_shadow_log_is_not_ok_until_the_process_first_reports(
    shadow: ShadowProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before its first report the process has delivered nothing: /readyz must not say "ok" yet."""
    monkeypatch.setattr(shadow._process, "is_alive", lambda: True, raising=False)
    assert shadow.health(USECASE.name) == STARTING.decode()
    assert shadow.channel(USECASE.name).health() == STARTING.decode()
    shadow._problems[0].value = b""  # what the process's first report writes while its logger delivers
    assert shadow.health(USECASE.name) is None
    shadow._problems[0].value = b"x" * (PROBLEM_BYTES - 1)  # the longest problem it writes still fits
    assert shadow.health(USECASE.name) == "x" * (PROBLEM_BYTES - 1)
