"""The online feature store's contract: the latest value of each feature per entity, with its event time.

Write semantics, per entity and feature, whatever the backend:

* stored event time newer than the incoming one → the write is skipped (``stale``);
* same event time, same value → nothing to do (``unchanged``): re-materializing a window is a no-op;
* same event time, different value → a *correction*: applied and counted (``corrected``) when the caller allows
  it, otherwise left unapplied, counted (``rejected``) and raised as `CorrectionRejectedError` once the whole
  call has been written;
* incoming event time newer (or nothing stored) → written (``written``).

NaN and missing (``None``) values are stored as such and compare equal to themselves. Every backend
(``redis_store.py``) passes the same contract tests.

pyarrow is imported inside the write path only: a serving worker reads and never loads it (~36 MiB each).
"""

from __future__ import annotations

import asyncio
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from migrate.errors import CorrectionRejectedError, FeatureStoreError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BatchRow",
    "EncodedColumns",
    "EncodedRows",
    "EntityFeatures",
    "EntityKey",
    "FeatureStore",
    "FeatureValue",
    "OnCorrection",
    "Rejection",
    "WriteReport",
    "checked_column",
    "correction_error",
    "decode_time",
    "decode_value",
    "encode_columns",
    "encode_rows",
    "encode_time",
    "encode_value",
]

EntityKey = tuple[int | str, ...]
OnCorrection = Literal["reject", "apply"]
MAX_EXAMPLES = 10  # rejections kept as examples in a report and an error


class FeatureValue(NamedTuple):
    """One stored feature: its value (``None`` when missing, NaN kept as NaN) and when it was true.

    A named tuple rather than a frozen dataclass: reads build one per entity × feature on the serving path, and a
    tuple is built in half the time (0.2 µs vs 0.5 µs; 0.25 ms saved on a 100-entity, 8-feature read).
    """

    value: float | None
    event_time: datetime


class BatchRow(NamedTuple):
    """One entity's stored batch features as `FeatureStore.read_online` returns them: two lists aligned with the
    feature names asked for, so the predictor reads a feature by its position, and no per-feature object is built
    (a 100-entity read of 8 features built 800 `FeatureValue`s and 100 dicts for it)."""

    values: list[float | None]
    """each feature's value: None when it is missing (stored so) or not stored at all"""
    times: list[datetime | None]
    """each feature's event time: None when the entity's record does not hold that feature"""


@dataclass(frozen=True)
class OnlineRead:
    """What `FeatureStore.read_online` found: batch features per entity, window states per group and entity."""

    features: list[BatchRow | None]
    """per entity, its batch features (None: none stored, e.g. an entity only the stream wrote)"""
    states: dict[str, list[list[Any]]]
    """group → per entity, its partial window states (empty: no event yet, or no key in the request)"""


@dataclass(frozen=True, slots=True)
class EntityFeatures:
    """The stored features of one entity."""

    key: EntityKey
    values: dict[str, FeatureValue]


@dataclass(frozen=True, slots=True)
class Rejection:
    """One correction that was not applied: which entity and feature, the stored and the refused value."""

    key: EntityKey
    feature: str
    event_time: datetime
    stored: float | None
    incoming: float | None


@dataclass(frozen=True)
class WriteReport:
    """What one write did, counted per entity × feature; `rejected_examples` holds the first few rejections."""

    entities: int = 0
    written: int = 0
    unchanged: int = 0
    stale: int = 0
    corrected: int = 0
    rejected: int = 0
    rejected_examples: tuple[Rejection, ...] = field(default=())

    def __add__(self, other: WriteReport) -> WriteReport:
        examples = (self.rejected_examples + other.rejected_examples)[:MAX_EXAMPLES]
        return WriteReport(
            self.entities + other.entities,
            self.written + other.written,
            self.unchanged + other.unchanged,
            self.stale + other.stale,
            self.corrected + other.corrected,
            self.rejected + other.rejected,
            examples,
        )


class FeatureStore(ABC):
    """Latest feature values per entity of each use case, written in bulk and read on the serving path."""

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the store lives, with any password masked."""

    @abstractmethod
    def write_features(
        self,
        usecase: str,
        key_names: Sequence[str],
        rows: pa.Table,
        feature_names: Sequence[str],
        event_times: str | Mapping[str, str],
        *,
        on_correction: OnCorrection = "reject",
    ) -> WriteReport:
        """Write the features of every row of `rows`, entity by entity atomically.

        Args:
            usecase: the use case the features belong to (their namespace).
            key_names: the columns of `rows` that form the entity key, in key order (int or string columns).
            rows: one row per entity; the feature columns are numeric (nulls allowed).
            feature_names: the feature columns to write.
            event_times: the timestamp column giving every feature's event time, or a mapping from each
                feature to its own timestamp column.
            on_correction: ``"reject"`` leaves corrections unapplied and raises after writing the rest;
                ``"apply"`` overwrites them.

        Returns:
            The counts of the write (see the module docstring).

        Raises:
            CorrectionRejectedError: corrections were refused; `.report` holds the full `WriteReport`.
            FeatureStoreUnavailableError: the server cannot be reached or timed out.
        """

    @abstractmethod
    def read(
        self, usecase: str, keys: Sequence[EntityKey], feature_names: Sequence[str]
    ) -> list[dict[str, FeatureValue] | None]:
        """The stored features of each key, in order, in one round trip.

        An entity the store holds nothing of gives ``None``; a feature it lacks is absent from the dict.
        """

    @abstractmethod
    def read_online(
        self,
        usecase: str,
        keys: Sequence[EntityKey],
        feature_names: Sequence[str],
        group_keys: Mapping[str, Sequence[EntityKey | None]],
        partitions: int,
    ) -> OnlineRead:
        """A request's stored data in one round trip: `read`'s batch features, and every window state it needs.

        `group_keys` maps each feature group to one key per entity (None: the request has no key for it); the
        entity group's key is the entity's own. Window states come back as decoded partial states, one per stream
        partition that wrote the key, for `migrate.feature_windows.evaluate`.
        """

    async def aopen(self) -> None:  # noqa: B027 - a hook: a store without an asyncio client has nothing to open
        """Open, on the running event loop, what `read_online_async` waits on there (the worker's start-up awaits
        it; `aclose` at its shutdown). Without it, or on another loop, `read_online_async` runs on a thread."""

    async def read_online_async(
        self,
        usecase: str,
        keys: Sequence[EntityKey],
        feature_names: Sequence[str],
        group_keys: Mapping[str, Sequence[EntityKey | None]],
        partitions: int,
    ) -> OnlineRead:
        """`read_online` awaited on the serving worker's event loop. The default runs it on a thread; a store with
        an asyncio client of its own (Redis, once `aopen` ran on this loop) waits for the answer on the loop, with
        no thread between: two hand-offs fewer per call (docs/serving.md, issue 14)."""
        return await asyncio.to_thread(self.read_online, usecase, keys, feature_names, group_keys, partitions)

    async def aclose(self) -> None:  # noqa: B027 - a hook: a store without an asyncio client has nothing to close
        """Close what `read_online_async` opened on the running event loop (the worker's shutdown awaits it)."""

    def read_entities(
        self, usecase: str, keys: Sequence[EntityKey], feature_names: Sequence[str]
    ) -> list[EntityFeatures | None]:
        """`read`, with each result paired with its key."""
        found = self.read(usecase, keys, feature_names)
        pairs = zip(keys, found, strict=True)
        return [None if values is None else EntityFeatures(key, values) for key, values in pairs]

    def prepare(self, usecase: str) -> None:  # noqa: B027 - a hook: most stores have nothing to prepare
        """Ready the store for a bulk write of `usecase`; materialization calls it once before writing.

        A store whose layout changed between versions moves what an earlier version wrote here, so the write's
        decisions (stale, unchanged, corrections) are made against every stored value. The default does nothing.
        """

    @abstractmethod
    def ping(self) -> None:
        """Return when the store answers; raise `FeatureStoreUnavailableError` otherwise."""

    @abstractmethod
    def close(self) -> None:
        """Release connections; the store object is not used afterwards."""

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- the text encoding every backend stores: canonical, so equal values are equal strings ------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def encode_value(value: float | None) -> str:
    """``None`` → ``""``; NaN → ``"nan"``; ±0.0 → ``"0.0"``; else the shortest decimal that reads back exactly."""
    if value is None:
        return ""
    number = float(value)
    if math.isnan(number):
        return "nan"
    return "0.0" if number == 0.0 else repr(number)


def decode_value(raw: bytes | str) -> float | None:
    """The inverse of `encode_value`."""
    return None if not raw else float(raw)


def encode_time(moment: datetime) -> str:
    """Integer microseconds since the Unix epoch; a naive datetime is taken to be UTC."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return str((aware - _EPOCH) // _MICROSECOND)


def decode_time(raw: bytes | str) -> datetime:
    """The inverse of `encode_time`: an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=int(raw))


@dataclass(frozen=True)
class EncodedRows:
    """Rows to write, checked and encoded: keys, and per feature (in order) each row's value and event time."""

    keys: list[EntityKey]
    features: list[str]
    values: list[list[str]]
    times: list[list[str]]


@dataclass(frozen=True)
class EncodedColumns:
    """`EncodedRows` as Arrow columns, for bulk writes: the checked key columns, per feature values and times."""

    keys: list[pa.ChunkedArray]
    features: list[str]
    values: list[pa.Array]  # strings, as `encode_value` writes them
    times: list[pa.Array]  # strings, as `encode_time` writes them

    def __len__(self) -> int:
        return len(self.keys[0])

    def key(self, row: int) -> EntityKey:
        """The entity key of one row (for reports: a handful of rows, not the write path)."""
        return tuple(column[row].as_py() for column in self.keys)


def checked_column(rows: pa.Table, name: str, role: str) -> pa.ChunkedArray:
    """The column `name` of `rows`; raise what is wrong if it is absent, or holds nulls (unless a feature)."""
    if name not in rows.column_names:
        raise FeatureStoreError(
            f"{role} column {name!r} is not among the rows' columns {rows.column_names}",
            fix=f"pass the name of the {role} column as it appears in the rows",
        )
    column: pa.ChunkedArray = rows.column(name)
    if column.null_count and role != "feature":
        raise FeatureStoreError(
            f"{role} column {name!r} holds {column.null_count} nulls",
            fix=f"drop the rows without a {role} before writing them",
        )
    return column


def _times(rows: pa.Table, name: str) -> pa.Array:
    import pyarrow as pa  # noqa: PLC0415 - start-up cost: pyarrow (~45 MiB) only on the write path
    import pyarrow.compute as pc  # noqa: PLC0415 - start-up cost: pyarrow (~45 MiB) only on the write path

    column = checked_column(rows, name, "event-time")
    if not pa.types.is_timestamp(column.type):
        raise FeatureStoreError(f"event-time column {name!r} is {column.type}", fix="cast it to a UTC timestamp")
    # Naive timestamps hold UTC (the offline store's convention): the raw integers are UTC either way.
    micros = pc.cast(column, pa.timestamp("us", tz=column.type.tz), safe=False).cast(pa.int64())
    return pc.cast(micros, pa.string()).combine_chunks()  # decimal integers, as str(int) writes them


def _values(rows: pa.Table, name: str) -> pa.Array:
    import numpy as np  # noqa: PLC0415 - start-up cost: only on the write path
    import pyarrow as pa  # noqa: PLC0415 - start-up cost: pyarrow (~45 MiB) only on the write path
    import pyarrow.compute as pc  # noqa: PLC0415 - start-up cost: pyarrow (~45 MiB) only on the write path

    column = checked_column(rows, name, "feature")
    try:
        floats = pc.cast(column, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FeatureStoreError(f"feature column {name!r} is not numeric: {exc}", fix="cast it to float") from exc
    # `encode_value` for a whole column. Arrow's cast writes the same shortest round-trip digits as repr (~2x
    # faster), in its own notation: where it wrote a plain decimal with a point and no exponent, and the value is
    # at least 1e-4 (below that repr switches to an exponent), it is repr's string; where it wrote digits alone
    # (an integer) and the value is nonzero and below 1e16 (from there repr writes an exponent), repr's string is
    # those digits and ".0" (counts are most of a materialization's integers: per value in Python they cost
    # a second per million). The rest (exponents, zeros, NaN, inf, nulls) is written by encode_value itself. The
    # unit tests compare the two on every magnitude.
    flat = floats.combine_chunks()
    arrow = pc.cast(flat, pa.string())
    if not len(flat):
        return arrow
    numbers = flat.to_numpy(zero_copy_only=False)
    with np.errstate(invalid="ignore"):
        size = np.abs(numbers)
        large = size >= 1e-4
        whole = np.isfinite(numbers) & (size < 1e16) & (numbers != 0.0)
    point = pc.match_substring(arrow, ".").fill_null(False).to_numpy(zero_copy_only=False)
    exponent = pc.match_substring(arrow, "e").fill_null(False).to_numpy(zero_copy_only=False)
    plain = point & ~exponent & large
    integer = ~point & ~exponent & whole
    if integer.any():
        arrow = pc.if_else(pa.array(integer), pc.binary_join_element_wise(arrow, ".0", ""), arrow)
    mine = ~(plain | integer)
    if flat.null_count:
        mine |= flat.is_null().to_numpy(zero_copy_only=False)
        arrow = arrow.fill_null("")
    if not mine.any():
        return arrow
    others = flat.filter(pa.array(mine)).to_pylist()
    return pc.replace_with_mask(arrow, pa.array(mine), pa.array([encode_value(v) for v in others], pa.string()))


def encode_columns(
    rows: pa.Table, key_names: Sequence[str], feature_names: Sequence[str], event_times: str | Mapping[str, str]
) -> EncodedColumns:
    """Check `rows` against the `FeatureStore.write_features` arguments and encode them; raise what is wrong."""
    features = list(feature_names)
    if not key_names or not features:
        raise FeatureStoreError("no key or no feature names given to write", fix="pass both key and feature names")
    keys = [checked_column(rows, k, "key") for k in key_names]
    values = [_values(rows, n) for n in features]
    if isinstance(event_times, str):
        times = [_times(rows, event_times)] * len(features)
    else:
        absent = [n for n in features if n not in event_times]
        if absent:
            raise FeatureStoreError(
                f"features {absent} have no event-time column in the mapping given",
                fix="map every feature to its timestamp column, or pass one column for all",
            )
        times = [_times(rows, event_times[n]) for n in features]
    return EncodedColumns(keys, features, values, times)


def encode_rows(
    rows: pa.Table, key_names: Sequence[str], feature_names: Sequence[str], event_times: str | Mapping[str, str]
) -> EncodedRows:
    """`encode_columns` as Python lists."""
    encoded = encode_columns(rows, key_names, feature_names, event_times)
    keys: list[EntityKey] = list(zip(*[k.to_pylist() for k in encoded.keys], strict=True))
    return EncodedRows(
        keys, encoded.features, [v.to_pylist() for v in encoded.values], [t.to_pylist() for t in encoded.times]
    )


def correction_error(usecase: str, store: str, report: WriteReport) -> CorrectionRejectedError:
    """The error raised once a write that met corrections, with `on_correction="reject"`, has finished."""
    shown = ", ".join(f"{r.key}/{r.feature} {r.stored!r}→{r.incoming!r}" for r in report.rejected_examples)
    return CorrectionRejectedError(
        f"{report.rejected} corrections to {usecase!r} in {store} were rejected (stored values at the same event "
        f"time differ from the incoming ones; those stay as they were), e.g. {shown}; the rest of the write went "
        f"through: {report.written} written, {report.unchanged} unchanged, {report.stale} stale",
        fix="if the source data was corrected on purpose, write again with on_correction='apply' "
        "(DAG param on_correction=apply); otherwise find out why the offline store's history changed",
        count=report.rejected,
        examples=[f"{r.key}/{r.feature}" for r in report.rejected_examples],
        report=report,
    )
