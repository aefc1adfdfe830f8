"""A checkpoint in a real Redis: what the script writes is what a resume reads and what serving reads."""

from __future__ import annotations

import math
import uuid

import orjson
import pytest
import redis

from migrate.realtime_schema import ENTITY_GROUP
from online.features.redis_layout import state_key
from online.stream.checkpoint import ENTITIES_PER_CALL, Checkpoint, CheckpointStore, FencedError

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
