"""Stream checkpoints in Redis: window states, watermark and next offset of a partition in ONE transaction.

Kafka's advice for an external sink is to keep the consumed offsets in the sink, written atomically with the
data. A checkpoint checks that this processor still owns the partition (a newer owner's token fences a zombie
out), then writes the window state of every key that changed, the partition's watermark and its next offset.
A processor killed at any instant restarts from the last checkpoint and sees exactly the state that is in
Redis: every event counts once.

Key layout::

    mig:<usecase>:<entity key>            HASH w:<p> → the entity's window state from partition p (serving reads it)
    mig:<usecase>@<group>:<group key>     HASH w:<p> → a group key's partial window state from partition p
    migstream:<usecase>:<group>:owner     HASH partition → token of the processor that owns it
    migstream:<usecase>:<group>:offset    HASH partition → next offset to consume
    migstream:<usecase>:<group>:watermark HASH partition → newest event time seen (epoch s, repr)
    migstream:<usecase>:<group>:state:<p> HASH state hash key → [feature group, key, window state] (resume)
    migstream:<usecase>:<group>:topic     STRING id of the topic whose offsets these are (`bind_topic`)

Serving evaluates the states at the request's instant (migrate/feature_windows.py): nothing here is a value
frozen at the entity's last event. All keys of one checkpoint must live on one Redis node (a single primary,
as the feature store is deployed).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis

from migrate.errors import FeatureStoreUnavailableError, MigrateError, TopicRecreatedError
from migrate.realtime_schema import ENTITY_GROUP
from online.features.redis_store import PREFIX, state_key
from online.features.store import EntityKey

__all__ = ["Checkpoint", "CheckpointStore", "FencedError", "PartitionStart", "PreparedCheckpoint"]

# KEYS: owner, offset, watermark, resume hash, then one state hash per state.
# ARGV: partition, token, next offset, watermark, the partition's field (w:<p>), then per state, in KEYS' order:
# the state JSONs joined by newlines, the starts of their resume blobs (``[group, key,``) joined by newlines, and
# one byte each, 1 if it is an entity's. redis-py packs each argument in Python, so thousands of small arguments
# cost more than the script itself; and orjson never writes a raw newline, so splitting on it is exact. The
# resume blob is ``start .. state .. ']'``: the state's JSON is written once, never escaped into another string.
_CHECKPOINT_SCRIPT = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
local states, heads = {}, {}
for piece in string.gmatch(ARGV[6], '[^\\n]+') do
  states[#states + 1] = piece
end
for piece in string.gmatch(ARGV[7], '[^\\n]+') do
  heads[#heads + 1] = piece
end
for i = 5, #KEYS do
  local n = i - 4
  local state = states[n]
  if string.byte(ARGV[8], n) == 49 then
    redis.call('HSET', KEYS[i], '_', '1', ARGV[5], state)
  else
    redis.call('HSET', KEYS[i], ARGV[5], state)
  end
  redis.call('HSET', KEYS[4], KEYS[i], heads[n] .. state .. ']')
end
return 1
"""
_CHECKPOINT_SHA = hashlib.sha1(_CHECKPOINT_SCRIPT.encode(), usedforsecurity=False).hexdigest()
ENTITIES_PER_CALL = 500  # arguments per script call stay moderate; a checkpoint is one transaction of calls
HEADS_KEPT = 200_000  # states whose Redis key and resume prefix are remembered, then forgotten at once


class FencedError(MigrateError):
    """Another processor took over the partition; this one must let it go."""


StateKey = tuple[str, EntityKey]
"""(feature group, key in that group)"""


@dataclass(frozen=True)
class PartitionStart:
    """Where a processor resumes a partition: next offset (None: from the start), watermark and window states."""

    offset: int | None
    watermark: float | None
    states: dict[StateKey, Any]


@dataclass
class Checkpoint:
    """What one partition changed since its last checkpoint."""

    partition: int
    next_offset: int
    watermark: float
    states: list[tuple[StateKey, Any]] = field(default_factory=list)
    """((feature group, key), window state JSON-able)"""


@dataclass(frozen=True)
class PreparedCheckpoint:
    """A checkpoint's script calls, states already serialized (`CheckpointStore.prepare`)."""

    partition: int
    calls: list[tuple[int, list[str | bytes]]]  # (number of keys, keys and arguments) per script call


class CheckpointStore:
    """The checkpoints of one use case's stream processors in one consumer group."""

    def __init__(self, client: redis.Redis, usecase: str, group: str) -> None:
        self.client = client
        self.usecase = usecase
        self.base = f"migstream:{usecase}:{group}"
        self._loaded = False
        self._heads: dict[StateKey, tuple[str, bytes, bytes]] = {}

    @contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        try:
            yield
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise FeatureStoreUnavailableError(
                f"stream checkpoint ({action}) of {self.usecase!r}: Redis unreachable: {exc}",
                fix="check MIGRATE_REDIS_URL and that Redis is up; the processor resumes from its last checkpoint",
            ) from exc

    def bind_topic(self, topic: str, topic_id: str | None) -> None:
        """Record that these checkpoints count offsets of the topic with id `topic_id`, or refuse another one.

        A topic deleted and created again (an embedded broker restarted, a cluster rebuilt) starts at offset 0
        under the same name: resuming at the old offsets would skip its first events and keep window states built
        from events it no longer holds, with nothing but a log line to show for it. Checkpoints written before the
        id was recorded adopt the current topic. A broker that reports no topic id (older than Kafka 2.8) checks
        nothing.

        Raises:
            TopicRecreatedError: the checkpoints belong to an earlier topic of the same name.
        """
        if topic_id is None:
            return
        key = f"{self.base}:topic"
        with self._translated("topic"):
            pipe = self.client.pipeline(transaction=True)
            pipe.set(key, topic_id, nx=True)
            pipe.get(key)
            _, stored = pipe.execute()
        recorded = stored.decode() if isinstance(stored, bytes) else str(stored)
        if recorded != topic_id:
            raise TopicRecreatedError(
                f"the stream checkpoints of {self.usecase!r} ({self.base}) count offsets of topic {topic!r} with id "
                f"{recorded}, but the topic now has id {topic_id}: it was recreated, so resuming would skip its "
                "first events and keep windows of events it no longer holds",
                fix=f"rebuild the features from the new topic with `migrate replay {self.usecase}` (it clears these "
                "checkpoints), or point MIGRATE_REDIS_URL / MIGRATE_KAFKA_BOOTSTRAP at the store and broker that "
                "belong together",
            )

    def claim(self, partition: int, token: str) -> PartitionStart:
        """Own `partition` from now on (fencing out its previous owner) and read where it stopped."""
        with self._translated("claim"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(f"{self.base}:owner", str(partition), token)
            pipe.hget(f"{self.base}:offset", str(partition))
            pipe.hget(f"{self.base}:watermark", str(partition))
            pipe.hgetall(f"{self.base}:state:{partition}")
            _, offset, watermark, raw_states = pipe.execute()
        states: dict[StateKey, Any] = {}
        for blob in raw_states.values():  # each blob carries its group and key: [group, key, state]
            group, key, state = orjson.loads(blob)
            states[(group, tuple(key))] = state
        return PartitionStart(
            None if offset is None else int(offset), None if watermark is None else float(watermark), states
        )

    def commit(self, checkpoint: Checkpoint, token: str) -> None:
        """Write the checkpoint atomically: one MULTI/EXEC of script calls, the offset with the last one.

        Raises:
            FencedError: another processor owns the partition now; nothing was written.
        """
        self.write(self.prepare(checkpoint, token))

    def prepare(self, checkpoint: Checkpoint, token: str) -> PreparedCheckpoint:
        """The script calls of a checkpoint, its states serialized now: `write` may run in another thread while
        the states move on."""
        states = checkpoint.states
        chunks = [states[i : i + ENTITIES_PER_CALL] for i in range(0, len(states), ENTITIES_PER_CALL)] or [[]]
        column = f"w:{checkpoint.partition}"
        args = [str(checkpoint.partition), token, str(checkpoint.next_offset), repr(checkpoint.watermark), column]
        base = [
            f"{self.base}:owner",
            f"{self.base}:offset",
            f"{self.base}:watermark",
            f"{self.base}:state:{checkpoint.partition}",
        ]
        calls: list[tuple[int, list[str | bytes]]] = []
        for chunk in chunks:
            keys: list[str | bytes] = list(base)
            bodies, heads, entities = [], [], []
            for at, state in chunk:
                redis_key, resume_head, is_entity = self._head(at)
                keys.append(redis_key)
                bodies.append(orjson.dumps(state))
                heads.append(resume_head)
                entities.append(is_entity)
            packed = [b"\n".join(bodies), b"\n".join(heads), b"".join(entities)]
            calls.append((len(keys), [*keys, *args, *packed]))
        return PreparedCheckpoint(checkpoint.partition, calls)

    def write(self, prepared: PreparedCheckpoint) -> None:
        """Write a prepared checkpoint in one MULTI/EXEC (`commit`'s second half; safe from one other thread).

        Raises:
            FencedError: another processor owns the partition now; nothing was written.
        """
        try:
            self._write(prepared)
        except redis.exceptions.NoScriptError:
            self._loaded = False  # Redis restarted and lost its script cache: load it and try once more
            self._write(prepared)

    def _write(self, prepared: PreparedCheckpoint) -> None:
        with self._translated("commit"):
            self._ensure_script()
            # All calls in one transaction: a crash leaves either none or all of them applied, so window state
            # and offset never disagree (a state ahead of its offset would count replayed events twice).
            pipe = self.client.pipeline(transaction=True)
            for numkeys, call in prepared.calls:
                pipe.evalsha(_CHECKPOINT_SHA, numkeys, *call)
            results = pipe.execute()
        if not all(results):
            raise FencedError(
                f"partition {prepared.partition} of {self.usecase!r} is owned by another processor now",
                fix="nothing to do: the group rebalanced and the new owner resumes from the last checkpoint",
            )

    def _head(self, at: StateKey) -> tuple[str, bytes, bytes]:
        """What a checkpoint writes of a state besides the state itself: its Redis hash, the start of its resume
        blob (``[group, key,``) and whether it is an entity's (b"1" or b"0"); remembered for the states written
        lately."""
        head = self._heads.get(at)
        if head is None:
            if len(self._heads) >= HEADS_KEPT:
                self._heads.clear()
            group, key = at
            head = self._heads[at] = (
                state_key(self.usecase, group, key),
                orjson.dumps([group, list(key)])[:-1] + b",",
                b"1" if group == ENTITY_GROUP else b"0",
            )
        return head

    def _ensure_script(self) -> None:
        if not self._loaded:
            self.client.script_load(_CHECKPOINT_SCRIPT)
            self._loaded = True

    def positions(self) -> dict[int, int]:
        """The next offset of every checkpointed partition."""
        with self._translated("positions"):
            raw = self.client.hgetall(f"{self.base}:offset")
        return {int(p): int(o) for p, o in raw.items()}

    def reset(self, partitions: int, groups: list[str]) -> int:
        """Forget every checkpoint of the consumer group and delete the window states of the feature `groups` it
        feeds (replay starts from scratch); other streams' groups are kept. Returns the number of hashes cleared.
        """
        columns = [f"w:{p}" for p in range(partitions)]
        patterns = [f"{PREFIX}:{self.usecase}@{group}:*" for group in groups if group != ENTITY_GROUP]
        cleared = 0
        with self._translated("reset"):
            for key in self.client.scan_iter(match=f"{self.base}:*", count=1000):
                self.client.delete(key)
            pipe = self.client.pipeline(transaction=False)
            for pattern in patterns:
                for key in self.client.scan_iter(match=pattern, count=1000):
                    pipe.delete(key)
                    cleared += 1
                    if len(pipe) >= 1000:
                        pipe.execute()
            if ENTITY_GROUP in groups:
                for key in self.client.scan_iter(match=f"{PREFIX}:{self.usecase}:*", count=1000):
                    pipe.hdel(key, *columns)
                    cleared += 1
                    if len(pipe) >= 1000:
                        pipe.execute()
            pipe.execute()
        return cleared


def start_offsets(client: redis.Redis, usecase: str, group: str, offsets: dict[int, int]) -> None:
    """Make the group's processors start each partition at the given offset (a replay's starting point)."""
    if offsets:
        client.hset(f"migstream:{usecase}:{group}:offset", mapping={str(p): str(o) for p, o in offsets.items()})
