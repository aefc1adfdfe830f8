"""The Redis feature store's key layout and record format: pure functions from use cases and keys to Redis keys.

    mig:<usecase>#b:<k1>:<k2>…         STRING, one per entity: its batch features as one record (below)
    mig:<usecase>:<k1>:<k2>…           HASH, one per entity the stream wrote
        _            "1" — the entity exists
        w:<p>        the entity's window state from stream partition p (JSON, online/stream/checkpoint.py)
    mig:<usecase>@<group>:<k1>…        HASH, one per key of a feature group: w:<p> as above, one per partition

A batch record is four lines (three when every feature has one event time), the event times as integer
microseconds since the Unix epoch (UTC), the values in `online.features.store.encode_value`'s canonical text:

    <oldest event time>,<newest event time>
    <feature>,<feature>,…
    <value>,<value>,…
    <event time>,<event time>,…      only when the features' times differ

The first line lets the write script decide most writes without reading the rest (every stored feature older
than every incoming one, or the reverse); records are canonical, so equal records mean equal features. Before
this layout (0.x) the batch features were ``v:<feature>`` / ``t:<feature>`` fields of the entity hash: a read
that finds such a field and no record says so (`OLD_LAYOUT_FIELD`) instead of serving the entity without them.

Integer key parts are written in decimal; string parts with ``%`` and ``:`` percent-escaped, so a key always
splits back into its parts.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Literal

from migrate.realtime_schema import ENTITY_GROUP
from online.features.store import EntityKey

__all__ = [
    "OLD_LAYOUT_FIELD",
    "PREFIX",
    "Record",
    "batch_key",
    "check_feature_names",
    "entity_key",
    "key_suffixes",
    "parse_entity_key",
    "parse_record",
    "prefix_of",
    "record",
    "state_key",
    "window_columns",
]

PREFIX = "mig"
OLD_LAYOUT_FIELD = "t:{}"  # the previous layout's event-time field of a batch feature, in the entity hash


# --- key layout: pure functions --------------------------------------------------------------------------------


def _key_part(part: int | str) -> str:
    if isinstance(part, str):
        return part.replace("%", "%25").replace(":", "%3A") if ("%" in part or ":" in part) else part
    return str(operator.index(part))  # ints and NumPy ints; a float key fails here instead of never matching


def _suffix(key: EntityKey) -> str:
    return ":".join([str(p) if type(p) is int else _key_part(p) for p in key])  # a plain int at once


def entity_key(usecase: str, key: EntityKey) -> str:
    """The Redis key of one entity: ``mig:<usecase>:<k1>:<k2>…``."""
    return f"{PREFIX}:{usecase}:" + _suffix(key)


def key_suffixes(keys: Sequence[EntityKey]) -> list[str]:
    """The part after the prefix of each of `keys`' Redis keys, ``<k1>:<k2>…`` (what `entity_key` appends to
    ``mig:<usecase>:``), for the read path: a plain int is written at once."""
    return [_suffix(key) for key in keys]


def prefix_of(usecase: str, kind: Literal["entity", "batch"] = "entity") -> str:
    """The prefix of `entity_key` (``mig:<usecase>:``) or of `batch_key` (``mig:<usecase>#b:``)."""
    return f"{PREFIX}:{usecase}{'#b' if kind == 'batch' else ''}:"


def batch_key(usecase: str, key: EntityKey) -> str:
    """The Redis string holding one entity's batch record: ``mig:<usecase>#b:<k1>:<k2>…``."""
    return entity_key(f"{usecase}#b", key)


def state_key(usecase: str, group: str, key: EntityKey) -> str:
    """The Redis hash of one key's window states: the entity's own hash, or ``mig:<usecase>@<group>:<key>…``."""
    return entity_key(usecase if group == ENTITY_GROUP else f"{usecase}@{group}", key)


def parse_entity_key(redis_key: str, key_types: Sequence[Literal["int", "str"]]) -> tuple[str, EntityKey]:
    """The use case and entity key of a Redis key written by `entity_key`."""
    prefix, usecase, *parts = redis_key.split(":")
    if prefix != PREFIX or len(parts) != len(key_types):
        raise ValueError(f"{redis_key!r} is not a {len(key_types)}-part entity key of the feature store")
    decoded = [p.replace("%3A", ":").replace("%25", "%") for p in parts]
    return usecase, tuple(int(p) if t == "int" else p for p, t in zip(decoded, key_types, strict=True))


def window_columns(partitions: int) -> list[str]:
    """The hash fields that hold window states, one per stream partition."""
    return [f"w:{p}" for p in range(partitions)]


# --- batch records ---------------------------------------------------------------------------------------------

Record = tuple[list[bytes], list[bytes], list[bytes]]
"""A parsed record: feature names, their values and their event times (text, as stored), in record order."""


def check_feature_names(names: Sequence[str]) -> None:
    """Raise ValueError for a name a record cannot hold: empty, or with a comma or a line break."""
    bad = [n for n in names if not n or "," in n or "\n" in n or "\r" in n]
    if bad:
        raise ValueError(f"feature names {bad} cannot be stored: a name must be non-empty, without ',' or a line break")


def record(names: Sequence[bytes], values: Sequence[bytes], times: Sequence[bytes]) -> bytes:
    """The canonical record of features `names` with `values` and event `times` (integers as decimal text)."""
    numbers = [int(t) for t in times]
    low, high = min(numbers), max(numbers)
    lines = [b"%d,%d" % (low, high), b",".join(names), b",".join(values)]
    if low != high:
        lines.append(b",".join(b"%d" % n for n in numbers))
    return b"\n".join(lines)


def parse_record(raw: bytes) -> Record:
    """The names, values and times of a record written by `record` (or by the bulk writer, in the same form)."""
    head, names, values, *times = raw.split(b"\n")
    split_names, split_values = names.split(b","), values.split(b",")
    split_times = times[0].split(b",") if times else [head.split(b",", 1)[0]] * len(split_names)
    return split_names, split_values, split_times
