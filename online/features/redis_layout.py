"""The Redis feature store's key layout: pure functions from use cases and keys to Redis keys.

    mig:<usecase>:<k1>:<k2>…           HASH, one per entity
        _            "1" — the entity exists (so a read can tell "no such entity" from "no such feature")
        v:<feature>  a batch feature's value: shortest round-trip decimal ("0.25"), "nan", "inf", or "" for missing
        t:<feature>  its event time, integer microseconds since the Unix epoch (UTC)
        w:<p>        the entity's window state from stream partition p (JSON, online/stream/checkpoint.py)
    mig:<usecase>@<group>:<k1>…        HASH, one per key of a feature group: w:<p> as above, one per partition

Integer key parts are written in decimal; string parts with ``%`` and ``:`` percent-escaped, so a key always
splits back into its parts.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Literal

from migrate.realtime_schema import ENTITY_GROUP
from online.features.store import EntityKey

__all__ = ["PREFIX", "entity_key", "parse_entity_key", "state_key", "window_columns"]

PREFIX = "mig"


# --- key layout: pure functions --------------------------------------------------------------------------------


def _key_part(part: int | str) -> str:
    if isinstance(part, str):
        return part.replace("%", "%25").replace(":", "%3A") if ("%" in part or ":" in part) else part
    return str(operator.index(part))  # ints and NumPy ints; a float key fails here instead of never matching


def entity_key(usecase: str, key: EntityKey) -> str:
    """The Redis key of one entity: ``mig:<usecase>:<k1>:<k2>…``."""
    return f"{PREFIX}:{usecase}:" + ":".join([_key_part(p) for p in key])


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
