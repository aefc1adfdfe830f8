"""Labels from events: when a use case's outcome is a field of its events (``label.event_field``), each valid
event is a label of its entity at its event time. The sink turns the event topic into label rows this way, so an
outcome crosses Kafka once, as the event it is, rather than again as a label message.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from migrate.usecase import UseCase
from online.stream.event_schema import EventSchema, ValidEvent
from online.stream.label_topic import LabelRecord

__all__ = ["event_labeler"]


def event_labeler(usecase: UseCase) -> Callable[[bytes], LabelRecord | None]:
    """A function from an event message's value to its label (None when the event is invalid)."""
    field = usecase.label.event_field
    if field is None:
        raise ValueError(f"use case {usecase.name!r} has no label.event_field")
    schema = EventSchema(usecase)
    names = usecase.entity.key_names

    def label(value: bytes) -> LabelRecord | None:
        event = schema.parse(value)
        if not isinstance(event, ValidEvent):
            return None
        return LabelRecord.model_construct(
            usecase=usecase.name,
            key=dict(zip(names, event.key, strict=True)),
            event_time=datetime.fromtimestamp(event.time_s, UTC),
            label=float(event.fields[field]),
            source_event_id=event.event_id,
        )

    return label
