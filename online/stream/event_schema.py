"""Validation of raw events against the use case's declared event schema, fast enough for the stream's hot path.

A pydantic model per event would cost more than the whole window update. The schema is compiled once, twice:
into a msgspec decoder (JSON decoding and type checks in C, the fast path every good event takes) and into a
tuple of (field, checker) with plain type tests (the reference). An event msgspec refuses, or whose values it
would read differently, goes through the reference, which says why: what fails is returned as a `Rejection`
(reason + detail) for the dead-letter topic; nothing raises on bad input. The fast path accepts only what the
reference accepts, with the same values (tests/unit/stream/test_event_schema.py checks both on hostile input).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
import orjson

from migrate.feature_windows import required_event_fields
from migrate.realtime_schema import MAIN_STREAM
from migrate.usecase import EventStream, UseCase, parse_duration

__all__ = ["EventSchema", "RejectReason", "Rejection", "ValidEvent"]

RejectReason = Literal["bad_json", "not_an_object", "missing_field", "wrong_type", "wrong_key", "too_late", "in_future"]
REJECT_REASONS: tuple[RejectReason, ...] = (
    "bad_json",
    "not_an_object",
    "missing_field",
    "wrong_type",
    "wrong_key",
    "too_late",
    "in_future",
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why an event cannot be used; it goes to the dead-letter topic with this."""

    reason: RejectReason
    detail: str


@dataclass(frozen=True, slots=True)
class ValidEvent:
    """A checked event: its fields (datetimes as epoch seconds), entity key, event time and id."""

    fields: dict[str, Any]
    key: tuple[int | str, ...]
    time_s: float
    event_id: str


def _int(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError("an integer")
    return value


def _float(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TypeError("a finite number")
    return float(value)


def _str(value: Any) -> Any:
    if not isinstance(value, str) or not value:
        raise TypeError("a non-empty string")
    return value


def _bool(value: Any) -> Any:
    if not isinstance(value, bool):
        raise TypeError("true or false")
    return value


def _datetime(value: Any) -> Any:
    if not isinstance(value, str):
        raise TypeError("an ISO 8601 time with a UTC offset, e.g. 2026-11-14T09:30:00Z")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TypeError("an ISO 8601 time with a UTC offset, e.g. 2026-11-14T09:30:00Z") from None
    if moment.tzinfo is None:
        raise TypeError("a time with a UTC offset (naive times are ambiguous)")
    return moment.timestamp()


# The fast path's types: what msgspec accepts of these is what the checkers above accept, read the same way —
# signed 64-bit integers (orjson reads a float beyond its 64-bit range, which `_int` refuses; the rest of the
# unsigned range takes the reference path), finite floats
# (ints read as floats), non-empty strings, JSON booleans; datetimes are read as strings and checked by
# `_datetime` itself (msgspec rounds nanoseconds where `datetime.fromisoformat` truncates them).
_MAX_FLOAT = 1.7976931348623157e308
_FAST_TYPES: dict[str, Any] = {
    "int": Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)],
    "float": Annotated[float, msgspec.Meta(ge=-_MAX_FLOAT, le=_MAX_FLOAT)],
    "str": Annotated[str, msgspec.Meta(min_length=1)],
    "bool": bool,
    "datetime": str,
}

_CHECKERS: dict[str, Callable[[Any], Any]] = {
    "int": _int,
    "float": _float,
    "str": _str,
    "bool": _bool,
    "datetime": _datetime,
}


class EventSchema:
    """The compiled event schema of one use case."""

    def __init__(self, usecase: UseCase, stream_name: str = MAIN_STREAM) -> None:
        declared = usecase.realtime_features
        if declared is None:
            raise ValueError(f"use case {usecase.name!r} declares no realtime_features")
        _, time_field, events = declared.source(stream_name)
        if events is None:
            raise ValueError(f"use case {usecase.name!r} declares no realtime_features.events")
        stream: EventStream = events
        self.usecase = usecase.name
        # The main stream is keyed by the entity; a further stream by whatever keys its groups (no entity key).
        self.key_names = tuple(usecase.entity.key_names) if stream_name == MAIN_STREAM else ()
        self.time_field = time_field
        self.id_field = stream.id_field
        # Fields an event cannot do without (`required_event_fields`: the event history refuses the same ones).
        self.required = required_event_fields(usecase, stream_name)
        self.fields = tuple((name, _CHECKERS[kind]) for name, kind in stream.fields.items())
        self.types = dict(stream.fields)
        self.names = tuple(stream.fields)
        self._times = tuple(i for i, kind in enumerate(stream.fields.values()) if kind == "datetime")
        struct = msgspec.defstruct(
            "Event",
            [
                (f"f{i}", _FAST_TYPES[kind]) if name in self.required else (f"f{i}", _FAST_TYPES[kind] | None, None)
                for i, (name, kind) in enumerate(stream.fields.items())
            ],
            rename={f"f{i}": name for i, name in enumerate(stream.fields)},
            array_like=False,
            kw_only=True,  # declared order kept, optional fields among required ones
        )
        self._decode = msgspec.json.Decoder(struct).decode
        self.lateness_s = parse_duration(stream.allowed_lateness).total_seconds()
        self.future_s = parse_duration(stream.max_future).total_seconds()

    def parse(self, raw: bytes | None) -> ValidEvent | Rejection:
        """Decode and check one message value: msgspec's decoder, else the reference checkers say why not."""
        if raw is None:
            return Rejection("bad_json", "empty message (tombstone)")
        try:
            values = list(msgspec.structs.astuple(self._decode(raw)))
            for i in self._times:
                if values[i] is not None:
                    values[i] = _datetime(values[i])
        except (msgspec.DecodeError, TypeError):
            return self.parse_reference(raw)
        return self.event_of(values)

    def parse_fetch(self, raws: Sequence[bytes | None]) -> list[list[Any] | Rejection]:
        """`parse` over a whole fetch: per message value, its checked field values in declared order (`names`;
        datetimes as epoch seconds), or why not. No dict and no `ValidEvent` per event: the stream's hot path."""
        decode, astuple, times = self._decode, msgspec.structs.astuple, self._times
        names = self.names
        out: list[list[Any] | Rejection] = []
        append = out.append
        for raw in raws:
            try:
                values = list(astuple(decode(raw)))  # type: ignore[arg-type]  # None: TypeError, the reference says why
                for i in times:
                    if values[i] is not None:
                        values[i] = _datetime(values[i])
            except (msgspec.DecodeError, TypeError):
                event = self.parse_reference(raw)
                append(event if isinstance(event, Rejection) else [event.fields[name] for name in names])
                continue
            append(values)
        return out

    def event_of(self, values: Sequence[Any]) -> ValidEvent:
        """A `parse_fetch` row as the `ValidEvent` `parse` gives."""
        fields = dict(zip(self.names, values, strict=True))
        return ValidEvent(
            fields,
            tuple(fields[k] for k in self.key_names),
            fields[self.time_field],
            str(fields[self.id_field]),
        )

    def parse_reference(self, raw: bytes | None) -> ValidEvent | Rejection:
        """Decode and check one message value with orjson and plain type tests: the reference `parse` follows,
        and the one that explains a rejection."""
        if raw is None:
            return Rejection("bad_json", "empty message (tombstone)")
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return Rejection("bad_json", f"not JSON: {exc}")
        if not isinstance(data, dict):
            return Rejection("not_an_object", f"a JSON {type(data).__name__}, not an object")
        fields: dict[str, Any] = {}
        for name, check in self.fields:
            if data.get(name) is None:
                if name in self.required:
                    return Rejection("missing_field", f"field {name!r} ({self.types[name]}) is missing")
                fields[name] = None  # an optional value not known: as training reads a NULL
                continue
            try:
                fields[name] = check(data[name])
            except TypeError as exc:
                return Rejection("wrong_type", f"field {name!r} must be {exc}, got {data[name]!r:.80}")
        return ValidEvent(
            fields,
            tuple(fields[k] for k in self.key_names),
            fields[self.time_field],
            str(fields[self.id_field]),
        )

    def timing(self, time_s: float, watermark_s: float, arrived_s: float) -> Rejection | None:
        """An event timed `time_s` is too late (behind the partition's newest event time by more than the lateness)
        or in the future (more than `max_future` after `arrived_s`, the trusted time it reached the broker:
        online/stream/arrival.py); None when it is neither. The stream processor calls it once per event."""
        if time_s < watermark_s - self.lateness_s:
            behind = watermark_s - time_s
            return Rejection(
                "too_late",
                f"{behind:.0f} s behind the partition's newest event; allowed lateness {self.lateness_s:.0f} s",
            )
        if time_s > arrived_s + self.future_s:
            ahead = time_s - arrived_s
            return Rejection(
                "in_future",
                f"timed {ahead:.0f} s after it reached the broker (or after the processor's clock, whichever is "
                f"earlier); at most {self.future_s:.0f} s (max_future)",
            )
        return None


def encode_event(fields: dict[str, Any]) -> bytes:
    """An event as the producer sends it (datetimes as ISO 8601 UTC)."""
    return orjson.dumps(fields, option=orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC)
