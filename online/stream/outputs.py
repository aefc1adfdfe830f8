"""What the stream processor sends back to Kafka: dead letters, the events it could not use, with the reason.

They are flushed and acknowledged *before* the checkpoint that moves past their events is written, so none is
lost; a crash between the two resends them (at least once): readers de-duplicate by (topic, partition, offset).
Labels are not sent from here: the sink reads them from the event topic itself (online/stream/labels_from_events.py).
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from migrate.errors import BrokerUnavailableError
from online.kafka import acknowledged_producer, ensure_topic, kafka_errors
from online.stream.event_schema import RejectReason

__all__ = ["DeadLetter", "StreamOutputs", "dead_letter_topic"]


def dead_letter_topic(usecase: str, prefix: str = "migrate.dlq.") -> str:
    return f"{prefix}{usecase}"


class DeadLetter(BaseModel):
    """An event the processor could not use: where it was, why, and its bytes as they came."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    usecase: str
    reason: RejectReason
    detail: str
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    value: str | None
    value_base64: bool = False

    @classmethod
    def of(cls, usecase: str, reason: RejectReason, detail: str, message: Any) -> DeadLetter:
        raw: bytes | None = message.value
        try:
            text, b64 = (None if raw is None else raw.decode("utf-8")), False
        except UnicodeDecodeError:
            text, b64 = base64.b64encode(raw or b"").decode(), True
        key = None if message.key is None else message.key.decode("utf-8", "replace")
        return cls(
            usecase=usecase,
            reason=reason,
            detail=detail,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(message.timestamp),
            key=key,
            value=text,
            value_base64=b64,
        )


class StreamOutputs:
    """One producer for the dead-letter topic of a use case."""

    def __init__(self, bootstrap: str, usecase: str, dlq_topic: str, timeout_s: float):
        self.usecase = usecase
        self.dlq_topic = dlq_topic
        self.timeout_s = timeout_s
        ensure_topic(bootstrap, dlq_topic, timeout_s=timeout_s)
        self.producer = acknowledged_producer(bootstrap, f"migrate-stream-{usecase}", timeout_s)
        self._futures: list[Any] = []
        self.dead_letters = 0

    def dead_letter(self, letter: DeadLetter) -> None:
        key = None if letter.key is None else letter.key.encode()
        self._futures.append(self.producer.send(self.dlq_topic, key=key, value=orjson.dumps(letter.model_dump())))
        self.dead_letters += 1

    def flush(self) -> None:
        """Wait until every record sent so far is acknowledged.

        Raises:
            BrokerUnavailableError: not all were acknowledged in time (the checkpoint must not be written).
        """
        if not self._futures:
            return
        try:
            self.producer.flush(timeout=self.timeout_s)
            for future in self._futures:
                future.get(timeout=self.timeout_s)
        except kafka_errors.KafkaError as exc:
            raise BrokerUnavailableError(
                f"dead letters of {self.usecase!r} were not acknowledged: {exc}",
                fix="the processor stops without checkpointing; restart it once the broker is healthy",
            ) from exc
        self._futures.clear()

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
