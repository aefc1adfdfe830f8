"""The shadow job on its way to the comparison process: MessagePack bytes (msgspec), typed on both ends.

A job is what `online.serving.shadow_compare.compare` needs of one request: the request, which path served each
entity, and both paths' outcomes. Pickled, a job held the worker's GIL in the queue's feeder thread (28–52 µs
for one entity, 0.3–1.2 ms for 100, on a loaded machine) and took the comparison process 0.74 ms to unpickle
at 100 entities; msgspec writes it in 3.5 µs and 0.14–0.32 ms and reads it back into the same classes in 0.41 ms
(docs/serving.md, "Where the tail came from").

The decoded job equals the job as pickle would carry it (tests/unit/online/test_shadow_wire.py, on hostile
values), but for NumPy scalars, which arrive as the Python numbers they hold.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from lookup_tables.records import LookupRow
from online.serving.prediction_paths import Outcome, Request
from online.serving.predictor import OnlineResult

__all__ = ["Job", "decode_job", "encode_job"]

Job = tuple[str, Request, list[str], Outcome, Outcome]
"""(use case, request, served source per entity, online outcome, batch outcome)"""


@dataclass
class _Online:
    results: dict[int, OnlineResult | None]
    latency_ms: float
    error: str | None
    asked: frozenset[int]


@dataclass
class _Batch:
    results: dict[int, LookupRow | None]
    latency_ms: float
    error: str | None
    asked: frozenset[int]


def _numpy(value: Any) -> Any:
    """NumPy scalars (a model's output, a feature read into an array) as the Python numbers they hold."""
    if isinstance(value, np.generic):
        return value.item()
    raise NotImplementedError(f"a shadow job cannot carry a {type(value).__name__}")


_encoder = msgspec.msgpack.Encoder(enc_hook=_numpy)
_decoder = msgspec.msgpack.Decoder(tuple[str, Request, list[str], _Online, _Batch])


def encode_job(usecase: str, req: Request, served: Sequence[str], online: Outcome, batch: Outcome) -> bytes:
    """One job as bytes.

    Raises:
        NotImplementedError: a value of a type the job does not carry (a bug in the caller, not bad input).
    """
    return _encoder.encode((usecase, req, list(served), online, batch))


def decode_job(data: bytes) -> Job:
    """A job from `encode_job`'s bytes, as the same classes."""
    usecase, req, served, online, batch = _decoder.decode(data)
    return (
        usecase,
        req,
        served,
        Outcome(dict(online.results), online.latency_ms, online.error, online.asked),
        Outcome(dict(batch.results), batch.latency_ms, batch.error, batch.asked),
    )
