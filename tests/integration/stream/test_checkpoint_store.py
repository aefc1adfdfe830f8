"""A checkpoint in a real Redis: what the script writes is what a resume reads and what serving reads; a write
in flight when another processor takes the partition over."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
import redis
from stream_helpers import Stream

from migrate.realtime_schema import ENTITY_GROUP
from online.features.redis_layout import state_key
from online.stream.checkpoint import ENTITIES_PER_CALL, Checkpoint, CheckpointStore, FencedError
from online.stream.event_schema import encode_event
from online.stream.processor import StreamProcessor, key_bytes

pytestmark = pytest.mark.integration

HOSTILE = ["a\nb", 'quote"s', "back\\slash", "ünï\u2028code", "]", "[,", "%3A:", "\r\n"]


def test_states_round_trip_through_the_script_over_several_calls(stream_redis_url: str) -> None:
    usecase = f"t_{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(stream_redis_url)
    try:
        store = CheckpointStore(client, usecase, "g")
        store.claim(3, "me")
        states: dict[tuple[str, tuple[int | str, ...]], list[object]] = {}
        for i in range(2 * ENTITIES_PER_CALL + 7):  # three script calls in one transaction
            name = HOSTILE[i % len(HOSTILE)]
            at = (ENTITY_GROUP, (i, name)) if i % 3 else ("store", (f"{name}{i}",))
            states[at] = [1.5e9 + i, [math.nan if i % 2 else 1.0e9], [[i, [1.0, 0.1 * i, None, -0.0]]]]
        store.commit(Checkpoint(3, 1234, 1.5e9 + 0.25, list(states.items())), "me")
        start = CheckpointStore(client, usecase, "g").claim(3, "next")
        assert start.offset == 1234 and start.watermark == 1.5e9 + 0.25
        assert start.states == {at: orjson.loads(orjson.dumps(state)) for at, state in states.items()}
        for (group, key), state in states.items():
            stored = client.hgetall(state_key(usecase, group, key))
            assert stored[b"w:3"] == orjson.dumps(state)
            assert (b"_" in stored) == (group == ENTITY_GROUP)
        with pytest.raises(FencedError):  # "next" owns the partition now
            store.commit(Checkpoint(3, 9999, 0.0, list(states.items())[:1]), "me")
        assert CheckpointStore(client, usecase, "g").positions() == {3: 1234}
    finally:
        for pattern in (f"mig:{usecase}*", f"migstream:{usecase}:*"):
            keys = list(client.scan_iter(match=pattern, count=1000))
            if keys:
                client.delete(*keys)
        client.close()


@dataclass
class _Record:
    """What the processor reads of a Kafka record."""

    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: int
    timestamp_type: int = 0


class _Consumer:
    def seek(self, *_: Any) -> None: ...

    def seek_to_beginning(self, *_: Any) -> None: ...


def test_a_write_in_flight_when_the_partition_is_taken_over_is_settled_and_the_partition_let_go(
    stream: Stream,
) -> None:
    processor = StreamProcessor(stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url)
    processor._consumer = _Consumer()  # the Kafka side is not under test: records are handed over directly
    processor.writer.start("test-checkpoint")  # as `run` starts it: writes leave the processor's thread
    now = datetime.now(UTC)

    def records(first: int, n: int) -> list[_Record]:
        out = []
        for offset in range(first, first + n):
            event = {
                "event_id": f"e{offset}",
                "event_time": now,
                "store_id": 1,
                "product_id": offset % 3,
                "found": True,
            }
            key = key_bytes({"store_id": 1, "product_id": offset % 3})
            out.append(_Record(0, offset, key, encode_event(event), int(now.timestamp() * 1000)))
        return out

    try:
        processor.take([0])
        processor.handle_fetch(records(0, 10))
        processor.checkpoint()  # written through the writer thread and settled
        CheckpointStore(processor.client, stream.usecase.name, processor.group_id).claim(0, "another-processor")
        processor.handle_fetch(records(10, 5))
        processor.checkpoint(wait=False)  # sent, fenced in the writer thread; known only once settled
        assert processor.report.checkpoints == 1 and processor.report.fenced == 0 and 0 in processor.partitions
        processor.checkpoint()  # nothing pending: settles the fenced write and lets the partition go
        assert processor.report.fenced == 1 and 0 not in processor.partitions
        assert CheckpointStore(processor.client, stream.usecase.name, processor.group_id).positions() == {0: 10}
        assert processor.report.events == 15 and len(processor.report.freshness_s) == 10
    finally:
        processor.writer.stop()
        processor.client.close()
