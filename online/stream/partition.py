"""A partition as a stream processor holds it: window states, watermark, next offset, and what changed since its
last checkpoint (what online/stream/checkpoint_writer.py writes next)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from migrate.feature_windows import WindowState
from online.stream.checkpoint import StateKey

__all__ = ["Partition"]


@dataclass
class Partition:
    """One partition a processor owns: its window states and position, and what its next checkpoint writes."""

    number: int
    states: dict[StateKey, WindowState] = field(default_factory=dict)
    watermark: float = -math.inf
    next_offset: int | None = None
    dirty: set[StateKey] = field(default_factory=set)
    pending: int = 0  # messages since the last checkpoint
    arrivals: list[float] = field(default_factory=list)  # broker timestamps (s) of events since the checkpoint
