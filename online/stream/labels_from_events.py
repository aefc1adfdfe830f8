"""Labels from events: when a use case's outcome is a field of its events (``label.event_field``), each valid
event is a label of its entity at its event time; when the outcome is a later event naming the prediction's event
(``label.from_event``, a chargeback naming its authorization), each event matching its filter is a label of value
``from_event.value`` for its entity at its time. The sink turns the event topic into label rows this way, so an
outcome crosses Kafka once, as the event it is, rather than again as a label message.

The shadow comparison joins a label to the requests of the same entity within ``available_after`` before it (it
has no event id of the request); training joins ``from_event`` labels to their own event by id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from migrate.realtime_schema import MAIN_STREAM
from migrate.usecase import UseCase
from online.stream.event_schema import EventSchema, ValidEvent
from online.stream.label_topic import LabelRecord

__all__ = ["Labeler", "NoLabel", "event_labeler"]


@dataclass(frozen=True, slots=True)
class NoLabel:
    """A valid event that labels nothing, at its event time: it still tells how far the label stream has been read
    (migrate/label_progress.py)."""

    event_time: datetime


class Labeler(Protocol):
    """`event_labeler`'s function."""

    def __call__(self, value: bytes, arrived_s: float | None = None) -> LabelRecord | NoLabel | None: ...


def event_labeler(usecase: UseCase) -> Labeler:
    """A function from an event message's value (and when it reached the broker, epoch seconds, if known) to its
    label (None: the event is invalid; `NoLabel`: a valid event that is no label).

    An event timed more than the stream's ``max_future`` after it reached the broker is invalid, as the stream
    processor dead-letters it (online/stream/arrival.py): labelled, or counted as the label stream's progress
    (migrate/label_progress.py), one event a year ahead would close every label window at once."""
    field, by_reference = usecase.label.event_field, usecase.label.from_event
    if field is None and by_reference is None:
        raise ValueError(f"use case {usecase.name!r} has no label.event_field nor label.from_event")
    schema = EventSchema(usecase, by_reference.stream if by_reference is not None else MAIN_STREAM)
    names = usecase.entity.key_names
    where = tuple(by_reference.where.items()) if by_reference is not None else ()

    def label(value: bytes, arrived_s: float | None = None) -> LabelRecord | NoLabel | None:
        event = schema.parse(value)
        if not isinstance(event, ValidEvent) or (arrived_s is not None and event.time_s > arrived_s + schema.future_s):
            return None
        key: dict[str, int | str] = {}  # any stream's label events carry the entity keys
        for name in names:
            part = event.fields.get(name)
            if part is None:
                return None  # a further stream's event without the entity's key (its fields may be null): invalid
            key[name] = part
        # A field not known (null) labels nothing, as in training, whose labelled events have a non-null label and
        # whose `from_event` labels match a non-null reference only.
        at = datetime.fromtimestamp(event.time_s, UTC)
        if by_reference is not None:
            if any(event.fields.get(name) != wanted for name, wanted in where):
                return NoLabel(at)
            ref = event.fields.get(by_reference.ref_field)
            if ref is None:
                return NoLabel(at)
            outcome = by_reference.value
        else:
            assert field is not None
            raw = event.fields[field]
            if raw is None:
                return NoLabel(at)
            ref, outcome = None, float(raw)
        return LabelRecord.model_construct(
            usecase=usecase.name,
            key=key,
            event_time=at,
            label=outcome,
            source_event_id=event.event_id,
            ref=None if ref is None else str(ref),
        )

    return label
