"""When the stream processor is caught up with its topic (`run(until_caught_up=True)`: `migrate stream
--until-caught-up`, `migrate replay`, the demo).

The fault: the embedded broker (Tansu 0.6) answers a ListOffsets for the latest offset with the first offset of the
partition's last produce batch plus one (tests/integration/stream/test_stream_hardening.py shows it on the broker).
A run that resumed from a checkpoint inside that batch, and whose first poll after the assignment came back empty
(no fetch answered yet), compared its checkpoint with that offset and stopped, caught up, with the batch's tail not
read in that run. A partition of the member's own is now at its end only once a fetch has told its high watermark.
"""

from __future__ import annotations

from typing import Any

import pytest

from online.kafka import kafka_errors
from online.stream.processor import StreamProcessor

TOPIC = "events"


class _Cluster:
    def __init__(self, partitions: set[int]) -> None:
        self._partitions = partitions

    def partitions_for_topic(self, topic: str) -> set[int]:
        return self._partitions


class _Consumer:
    """What `_caught_up` asks of a KafkaConsumer: the topic's partitions, its end offsets, the high watermarks."""

    def __init__(self, ends: dict[int, int], highwater: dict[int, int | None], assigned: set[int]) -> None:
        self._cluster = _Cluster(set(ends))
        self._ends = ends
        self._highwater = highwater
        self._assigned = assigned

    def end_offsets(self, tps: list[Any], timeout_ms: int) -> dict[Any, int]:
        return {tp: self._ends[tp.partition] for tp in tps}

    def highwater(self, tp: Any) -> int | None:
        if tp.partition not in self._assigned:
            raise kafka_errors.IllegalStateError(f"{tp} is not assigned")
        return self._highwater.get(tp.partition)


class _Checkpoints:
    def __init__(self, positions: dict[int, int]) -> None:
        self._positions = positions

    def positions(self) -> dict[int, int]:
        return dict(self._positions)


class _Part:
    pending = 0


def _processor(
    *, ends: dict[int, int], highwater: dict[int, int | None], assigned: set[int], done: dict[int, int]
) -> Any:
    processor: Any = StreamProcessor.__new__(StreamProcessor)  # only what _caught_up reads
    processor._settle = lambda: None
    processor.partitions = {n: _Part() for n in assigned}
    processor._consumer = _Consumer(ends, highwater, assigned)
    processor.checkpoints = _Checkpoints(done)
    processor.settings = type("Settings", (), {"kafka_timeout_s": 5.0})()
    processor.topic = TOPIC
    processor.bootstrap = "127.0.0.1:1"
    return processor


def test_a_checkpoint_inside_the_last_batch_is_not_the_end_before_a_fetch_answered() -> None:
    """30 events in one produce batch (offsets 0-29): Tansu's end offset is 1; the run resumed at 10."""
    processor = _processor(ends={0: 1}, highwater={0: None}, assigned={0}, done={0: 10})
    assert processor._caught_up(elapsed=60.0) is False


@pytest.mark.parametrize(("done", "caught_up"), [(10, False), (29, False), (30, True), (31, True)])
def test_a_partition_of_its_own_is_at_its_end_at_the_fetched_high_watermark(done: int, caught_up: bool) -> None:
    processor = _processor(ends={0: 1}, highwater={0: 30}, assigned={0}, done={0: done})
    assert processor._caught_up(elapsed=60.0) is caught_up


def test_the_end_offset_counts_where_it_is_past_the_high_watermark() -> None:
    """A high watermark from an older fetch, events produced since: the broker's end offset is further."""
    processor = _processor(ends={0: 50}, highwater={0: 30}, assigned={0}, done={0: 30})
    assert processor._caught_up(elapsed=60.0) is False


def test_another_members_partitions_are_judged_by_the_end_offsets() -> None:
    """Partition 1 is another member's: no high watermark here; its checkpoint against the broker's end."""
    behind = _processor(ends={0: 5, 1: 8}, highwater={0: 5}, assigned={0}, done={0: 5, 1: 7})
    assert behind._caught_up(elapsed=60.0) is False
    done = _processor(ends={0: 5, 1: 8}, highwater={0: 5}, assigned={0}, done={0: 5, 1: 8})
    assert done._caught_up(elapsed=60.0) is True


def test_empty_partitions_are_at_their_end_once_fetched() -> None:
    processor = _processor(ends={0: 0, 1: 0}, highwater={0: 0, 1: 0}, assigned={0, 1}, done={})
    assert processor._caught_up(elapsed=60.0) is True
