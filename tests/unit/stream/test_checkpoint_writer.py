"""The checkpoint writer: states serialized when sent, the write in its own thread, outcomes known once settled."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import redis

from migrate.errors import FeatureStoreUnavailableError
from online.stream.checkpoint import CheckpointStore, FencedError, PreparedCheckpoint
from online.stream.checkpoint_writer import CheckpointWriter
from online.stream.partition import Partition

pytestmark = pytest.mark.unit


class _State:
    """A window state as the writer sees it: something that serializes."""

    def __init__(self, value: int) -> None:
        self.value = value

    def to_json(self) -> list[Any]:
        return [self.value]


class _Store(CheckpointStore):
    """A checkpoint store whose Redis write is replaced: held until `go`, fenced or failing per partition."""

    def __init__(self, *, fenced: frozenset[int] = frozenset(), failing: bool = False) -> None:
        super().__init__(redis.Redis(), "uc", "g")  # never connects: `prepare` needs no Redis
        self.go = threading.Event()
        self.go.set()
        self.fenced, self.failing = fenced, failing
        self.written: list[PreparedCheckpoint] = []

    def write(self, prepared: PreparedCheckpoint) -> None:
        assert self.go.wait(10)
        if self.failing:
            raise FeatureStoreUnavailableError("Redis unreachable", fix="start it")
        if prepared.partition in self.fenced:
            raise FencedError(f"partition {prepared.partition} is another's", fix="none")
        self.written.append(prepared)


def _partition(number: int, value: int) -> Partition:
    part = Partition(number, next_offset=10 * number + 5, watermark=1.5e9)
    part.states = {("entity", (number,)): _State(value)}  # type: ignore[dict-item]
    part.dirty = {("entity", (number,))}
    part.pending, part.arrivals = 3, [1.0, 2.0]
    return part


def _states_of(prepared: PreparedCheckpoint) -> bytes:
    (_, call), *_ = prepared.calls
    return bytes(call[-3])  # the states' JSON, joined by newlines


def test_a_write_runs_while_the_states_move_on_and_writes_them_as_they_were_sent() -> None:
    store = _Store()
    store.go.clear()
    writer = CheckpointWriter(store, "me")
    writer.start("test-writer")
    try:
        part = _partition(0, 7)
        writer.send([part])  # returns with the write held in the writer thread
        assert (part.dirty, part.pending, part.arrivals) == (set(), 0, [])
        part.states[("entity", (0,))].value = 8  # type: ignore[attr-defined]
        store.go.set()
        [(sent, written)] = writer.settle()
        assert sent.partition is part and sent.messages == 3 and sent.arrivals == [1.0, 2.0]
        assert written is not None and [_states_of(p) for p in store.written] == [b"[7]"]
        assert writer.settle() == []  # nothing in flight any more
    finally:
        writer.stop()


def test_a_fenced_partition_settles_as_none_and_the_others_as_written_in_order() -> None:
    store = _Store(fenced=frozenset({1}))
    writer = CheckpointWriter(store, "me")
    writer.start("test-writer")
    try:
        parts = [_partition(n, n) for n in range(3)]
        writer.send(parts)
        settled = writer.settle()
        assert [sent.partition for sent, _ in settled] == parts
        assert [written is None for _, written in settled] == [False, True, False]
        assert [p.partition for p in store.written] == [0, 2]
    finally:
        writer.stop()


def test_a_failed_write_raises_when_settled_then_nothing_is_in_flight() -> None:
    writer = CheckpointWriter(_Store(failing=True), "me")
    writer.start("test-writer")
    try:
        writer.send([_partition(0, 1)])
        with pytest.raises(FeatureStoreUnavailableError):
            writer.settle()
        assert writer.settle() == []
    finally:
        writer.stop()


def test_without_a_thread_the_write_is_done_when_send_returns() -> None:
    store = _Store()
    writer = CheckpointWriter(store, "me")
    writer.send([_partition(0, 1)])
    assert [p.partition for p in store.written] == [0]
    [(_, written)] = writer.settle()
    assert written is not None


def test_without_a_thread_a_failed_write_raises_at_once_and_leaves_nothing_in_flight() -> None:
    writer = CheckpointWriter(_Store(failing=True), "me")
    with pytest.raises(FeatureStoreUnavailableError):
        writer.send([_partition(0, 1)])
    settled: list[object] = []
    waiter = threading.Thread(target=lambda: settled.append(writer.settle()), daemon=True)  # daemon: it may hang
    waiter.start()
    waiter.join(5)
    assert settled == [[]], "settling after a failed write outside `run` waits forever"
