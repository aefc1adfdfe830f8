"""A fetch of one partition's messages → the partition's window states: each event checked (message key,
lateness against the watermark as it moves, future) and the accepted ones added to each feature group's states,
one `WindowState.add_columns` per group and fetch; a bad or untimely one is dead-lettered with the reason.

The stream processor's hot path (online/stream/processor.py owns the partitions and hands each fetch here).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from migrate.feature_windows import Group, WindowState
from migrate.realtime_schema import MAIN_STREAM
from online.stream.checkpoint import StateKey
from online.stream.event_schema import EventSchema, Rejection, RejectReason
from online.stream.partition import Partition
from online.stream.topic import key_bytes

__all__ = ["KNOWN_KEYS", "Counts", "EventApplier"]

KNOWN_KEYS = 200_000  # message keys remembered (about 25 MB at most), then forgotten at once


class Counts(Protocol):
    """Where the applier counts the events it accepted (the processor's `StreamReport`)."""

    events: int


def _getter(at: tuple[int, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    """The values at positions `at` of a row, as a tuple (`operator.itemgetter`, a 1-tuple for one position)."""
    if len(at) == 1:
        only = operator.itemgetter(at[0])
        return lambda row: (only(row),)
    if not at:
        return lambda row: ()
    return operator.itemgetter(*at)


class EventApplier:
    """Applies the fetched events of one stream to the window states of the partition they came from."""

    def __init__(
        self,
        schema: EventSchema,
        groups: Sequence[Group],
        *,
        stream: str,
        received_s: Callable[[Any], float],
        dead_letter: Callable[[Any, RejectReason, str], None],
        counts: Counts,
    ) -> None:
        self.schema = schema
        self.specs = {group.name: group.spec for group in groups}
        self.check_key = stream == MAIN_STREAM  # a further stream is keyed by whatever keys its groups
        self.received_s = received_s  # when a message reached the broker (`Arrival.received_s`)
        self.dead_letter = dead_letter  # hands one message's dead letter on; raises `DeadLetterError` if it fails
        self.counts = counts
        # Where an event's values are (`EventSchema.parse_fetch` rows): its entity key, its time, and per group the
        # key columns (None: the entity's own key; a column the event does not carry: None, so it feeds no key).
        names = schema.names
        self._key_of = _getter(tuple(names.index(k) for k in schema.key_names))
        self._time_at = names.index(schema.time_field)
        self._group_at = [
            (g.name, None if g.is_entity else _getter(tuple(names.index(c) for c in g.key)))
            for g in groups
            if g.is_entity or all(c in names for c in g.key)  # else no event of this stream has a key of it
        ]
        self._known_keys: dict[tuple[Any, ...], bytes] = {}  # entity key → its message key bytes, bounded

    def _key_bytes(self, key: tuple[Any, ...]) -> bytes:
        """The message key an event of this entity must carry (`key_bytes`), remembered for the entities seen
        lately: most events are of an entity met before, and its JSON need not be built again."""
        known = self._known_keys.get(key)
        if known is None:
            if len(self._known_keys) >= KNOWN_KEYS:
                self._known_keys.clear()
            known = self._known_keys[key] = key_bytes(dict(zip(self.schema.key_names, key, strict=True)))
        return known

    def apply(self, part: Partition, messages: Sequence[Any]) -> None:
        """Apply a fetch's messages of partition `part`, in order, or dead-letter each bad one.

        The events are checked one by one (key, lateness against the watermark as it moves, future), then applied
        to the window states per feature group, one `WindowState.add_columns` per fetch. The partition's next
        offset moves past a message only once it is applied or its dead letter is handed on: a dead letter that
        fails raises `DeadLetterError`, and the offset stays before it (the events before it applied).
        """
        schema, dead_letter = self.schema, self.dead_letter
        check_key = self.check_key
        known, key_bytes_of = self._known_keys, self._key_bytes
        key_of, time_at = self._key_of, self._time_at
        timing = schema.timing
        received_s = self.received_s
        accepted: list[list[Any]] = []
        keys: list[tuple[Any, ...]] = []  # their entity keys (main stream)
        arrivals = part.arrivals
        watermark = part.watermark
        next_offset = part.next_offset
        handled = 0
        try:
            for message, event in zip(messages, schema.parse_fetch([m.value for m in messages]), strict=True):
                if not isinstance(event, Rejection):
                    # The key first: an event on the wrong partition must not be judged by this partition's watermark.
                    if check_key:
                        key = key_of(event)
                        wanted = known.get(key)
                        if wanted is None:
                            wanted = key_bytes_of(key)
                        if message.key != wanted:
                            dead_letter(message, "wrong_key", "message key is not the event's entity key (sorted JSON)")
                            next_offset = message.offset + 1
                            handled += 1
                            continue
                    time_s = event[time_at]
                    rejection = timing(time_s, watermark, received_s(message))
                    if rejection is not None:
                        dead_letter(message, rejection.reason, rejection.detail)
                        next_offset = message.offset + 1
                        handled += 1
                        continue
                    accepted.append(event)
                    if check_key:
                        keys.append(key)
                    arrivals.append(message.timestamp / 1000.0)  # freshness: from the record's timestamp
                    watermark = max(watermark, time_s)
                else:
                    dead_letter(message, event.reason, event.detail)
                next_offset = message.offset + 1
                handled += 1
        finally:
            self._add(part, accepted, keys)
            part.watermark = watermark
            part.next_offset = next_offset
            part.pending += handled
            self.counts.events += len(accepted)

    def _add(self, part: Partition, rows: list[list[Any]], keys: list[tuple[Any, ...]]) -> None:
        """Accepted events (field values in declared order; their entity keys on the main stream) → each feature
        group's window states, one update per group."""
        if not rows:
            return
        columns = dict(zip(self.schema.names, zip(*rows, strict=True), strict=True))
        times = columns[self.schema.time_field]
        states, dirty = part.states, part.dirty
        for name, key_of in self._group_at:
            spec = self.specs[name]
            if key_of is None:
                ats: list[StateKey] = [(name, key) for key in keys]
                chosen: list[int] | None = None
            else:
                ats, chosen = [], []
                for i, row in enumerate(rows):
                    key = key_of(row)
                    if None not in key:  # no value for the group's key: the event feeds no key of that group
                        ats.append((name, key))
                        chosen.append(i)
            group_states: list[WindowState] = []
            for at in ats:
                state = states.get(at)
                if state is None:
                    state = states[at] = WindowState(spec)
                group_states.append(state)
            dirty.update(ats)
            if chosen is None:
                WindowState.add_columns(group_states, times, columns)
            else:
                # Only the columns the group's features read (a missing column reads as None, as it would here).
                WindowState.add_columns(
                    group_states,
                    [times[i] for i in chosen],
                    {field: [columns[field][i] for i in chosen] for field in spec.fields if field in columns},
                )
