"""Labels: the observed outcome of an entity at an event time, published to ``<labels prefix><usecase>``.

The sink stores them beside the shadow log (``<state_dir>/labels/<usecase>/``) so the comparison can join each
prediction with the label that became known after it.
"""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from migrate.errors import BrokerUnavailableError
from online.kafka import acknowledged_producer, ensure_topic, kafka_errors

__all__ = ["LabelRecord", "labels_topic", "publish_labels"]


class LabelRecord(BaseModel):
    """One label: which entity, when the outcome happened, its value, and the event it came from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usecase: str = Field(min_length=1)
    key: dict[str, int | str] = Field(min_length=1, description="Entity key: key column name → value.")
    event_time: AwareDatetime
    label: float
    source_event_id: str = Field(min_length=1, description="Id of the event the label was derived from.")
    ref: str | None = Field(default=None, description="The id the label event names (label.from_event.ref_field).")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())

    @classmethod
    def from_json(cls, data: bytes | str) -> LabelRecord:
        return cls.model_validate(orjson.loads(data))


def labels_topic(usecase: str, prefix: str = "migrate.labels.") -> str:
    return f"{prefix}{usecase}"


def publish_labels(
    bootstrap: str,
    usecase: str,
    labels: Iterable[LabelRecord],
    *,
    prefix: str = "migrate.labels.",
    timeout_s: float = 5.0,
) -> int:
    """Send labels and wait for every acknowledgement (labels are not on the serving path); returns the count.

    Raises:
        BrokerUnavailableError: the broker did not take them all within ``timeout_s``.
    """
    topic = labels_topic(usecase, prefix)
    ensure_topic(bootstrap, topic, timeout_s=timeout_s)
    # Labels are the ground truth: acknowledged by the replicas, or an error.
    producer = acknowledged_producer(bootstrap, f"migrate-labels-{usecase}", timeout_s)
    try:
        futures = [
            producer.send(topic, key=orjson.dumps(label.key, option=orjson.OPT_SORT_KEYS), value=label.to_json())
            for label in labels
        ]
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)
    except kafka_errors.KafkaError as exc:
        raise BrokerUnavailableError(
            f"labels for {usecase!r} were not all acknowledged by {bootstrap}: {exc}",
            fix="retry once the broker is healthy; the sink de-duplicates nothing, so resend only what failed",
        ) from exc
    finally:
        producer.close(timeout=timeout_s)
    return len(futures)
