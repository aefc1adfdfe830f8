"""What the stream processor sends back to Kafka: dead letters, the events it could not use, with the reason.

They are flushed and acknowledged *before* the checkpoint that moves past their events is written, so none is
lost; a crash between the two resends them (at least once): readers de-duplicate by (topic, partition, offset).
Labels are not sent from here: the sink reads them from the event topic itself (online/stream/labels_from_events.py).

A dead letter never exceeds the producer's request size: an event too big to be carried whole (its bytes, base64
or JSON-escaped, plus the envelope) keeps its first bytes only, with its original size and sha256 in the record and
in the record's headers, so it can still be found in the event topic and told apart from others. A dead letter
that cannot be sent raises `DeadLetterError`: the processor stops without committing past its event.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from migrate.errors import DeadLetterError
from online.kafka import acknowledged_producer, ensure_topic, kafka_errors
from online.stream.event_schema import RejectReason

__all__ = ["MAX_DEAD_LETTER_BYTES", "MAX_KEY_BYTES", "DeadLetter", "StreamOutputs", "dead_letter_topic"]

MAX_REQUEST_BYTES = 1_048_576  # the dead-letter producer's max_request_size (kafka-python's default, set explicitly)
MAX_DEAD_LETTER_BYTES = MAX_REQUEST_BYTES - 16 * 1024  # headroom for the record batch, key and headers
MAX_KEY_BYTES = 1024  # a longer message key is kept truncated in the record; the dead letter is keyed by its sha256


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

    value_size: int | None = None
    """The original value's size in bytes (None: no value)."""
    value_sha256: str | None = None
    """The original value's sha256 (hex), whether or not it is kept whole."""
    value_truncated: bool = False
    """Only the first bytes of the value are kept: the whole record would exceed the producer's size limit."""
    key_truncated: bool = False

    @classmethod
    def of(
        cls, usecase: str, reason: RejectReason, detail: str, message: Any, *, max_bytes: int = MAX_DEAD_LETTER_BYTES
    ) -> DeadLetter:
        """The dead letter of `message`, its JSON at most `max_bytes` long (the value truncated if need be)."""
        raw: bytes | None = message.value
        key = None if message.key is None else message.key.decode("utf-8", "replace")
        key_truncated = key is not None and len(message.key) > MAX_KEY_BYTES
        if key_truncated:
            key = message.key[:MAX_KEY_BYTES].decode("utf-8", "replace")
        letter = cls(
            usecase=usecase,
            reason=reason,
            detail=detail[:2000],
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            timestamp_ms=int(message.timestamp),
            key=key,
            key_truncated=key_truncated,
            value=None,
            value_size=None if raw is None else len(raw),
            value_sha256=None if raw is None else hashlib.sha256(raw).hexdigest(),
        )
        if raw is None:
            return letter
        kept = raw
        while True:
            text, b64 = _text(kept)
            letter = letter.model_copy(
                update={"value": text, "value_base64": b64, "value_truncated": len(kept) < len(raw)}
            )
            size = len(letter.to_json())
            if size <= max_bytes or not kept:
                return letter
            # JSON escaping can grow text up to 6x (\u00XX) and base64 by 4/3: cut in proportion, with margin.
            kept = kept[: max(0, int(len(kept) * max_bytes / size * 0.9))]

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump())

    def headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers that find the original event without parsing the record."""
        headers = [("migrate-reason", self.reason.encode())]
        if self.value_size is not None and self.value_sha256 is not None:
            headers += [
                ("migrate-value-size", str(self.value_size).encode()),
                ("migrate-value-sha256", self.value_sha256.encode()),
                ("migrate-value-truncated", b"1" if self.value_truncated else b"0"),
            ]
        return headers

    def message_key(self) -> bytes | None:
        """The dead letter's Kafka key: the event's key, or its sha256 when the key is too long to carry."""
        if self.key is None:
            return None
        if self.key_truncated:
            return f"sha256:{hashlib.sha256(self.key.encode()).hexdigest()}".encode()
        return self.key.encode()


def _text(raw: bytes) -> tuple[str, bool]:
    """The value as UTF-8 text, or base64 when it is not UTF-8 (a cut can split a character: base64 then)."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode(), True


class StreamOutputs:
    """One producer for the dead-letter topic of a use case."""

    def __init__(self, bootstrap: str, usecase: str, dlq_topic: str, timeout_s: float):
        self.usecase = usecase
        self.dlq_topic = dlq_topic
        self.timeout_s = timeout_s
        ensure_topic(bootstrap, dlq_topic, timeout_s=timeout_s)
        self.producer = acknowledged_producer(
            bootstrap, f"migrate-stream-{usecase}", timeout_s, max_request_size=MAX_REQUEST_BYTES
        )
        self._futures: list[Any] = []
        self.dead_letters = 0

    def dead_letter(self, letter: DeadLetter) -> None:
        """Send one dead letter (acknowledged by `flush`).

        Raises:
            DeadLetterError: the producer refused it; its event must not be committed past.
        """
        try:
            future = self.producer.send(
                self.dlq_topic, key=letter.message_key(), value=letter.to_json(), headers=letter.headers()
            )
        except kafka_errors.KafkaError as exc:
            raise DeadLetterError(
                f"the dead letter of {letter.topic}[{letter.partition}]@{letter.offset} ({letter.reason}) could not "
                f"be sent to {self.dlq_topic!r}: {exc}",
                fix="the processor stopped without committing past that event; fix the dead-letter topic or broker "
                "and restart it: it resumes from its last checkpoint and sends the dead letter again",
            ) from exc
        self._futures.append(future)
        self.dead_letters += 1

    def flush(self) -> None:
        """Wait until every record sent so far is acknowledged.

        Raises:
            DeadLetterError: not all were acknowledged in time (the checkpoint must not be written).
        """
        if not self._futures:
            return
        try:
            self.producer.flush(timeout=self.timeout_s)
            for future in self._futures:
                future.get(timeout=self.timeout_s)
        except kafka_errors.KafkaError as exc:
            raise DeadLetterError(
                f"dead letters of {self.usecase!r} were not acknowledged by {self.dlq_topic!r}: {exc}",
                fix="the processor stops without checkpointing; restart it once the broker is healthy",
            ) from exc
        self._futures.clear()

    def close(self) -> None:
        self.producer.close(timeout=self.timeout_s)
