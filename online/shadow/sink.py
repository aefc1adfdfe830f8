"""The shadow sink: a consumer group that writes shadow records (and labels) to hour-partitioned Parquet files.

Delivery is at-least-once with idempotent files, so a crash loses nothing and duplicates nothing:

* a batch of one topic-partition's records, offsets ``first..last``, is written to
  ``<root>/date=YYYY-MM-DD/hour=HH/part-<topic-id>-<partition>-<first>-<last>.parquet`` (one file per hour the
  batch touches), each through a temporary file, ``fsync`` and ``rename``;
* offsets are committed only after every file of the batch is durable;
* before the first write to a topic-partition after it is assigned, files of that partition starting at or after
  the committed offset are deleted: they come from a run that died between writing and committing, and their
  records are being delivered again;
* a label stream's progress (the newest event time of the valid events read, labels or not) is recorded beside its
  files before the commit (migrate/label_progress.py), so a rare outcome does not keep closed windows pending.

The topic id in the name keeps files apart when a topic is recreated (the embedded broker keeps topics in memory,
so its offsets restart at 0 after a restart).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
from pydantic import ValidationError

from migrate.errors import BrokerUnavailableError
from migrate.label_progress import mark_read_to_end, write_progress
from migrate.realtime_schema import MAIN_STREAM
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration
from online.kafka import (
    ConsumerRebalanceListener,
    KafkaConsumer,
    OffsetAndMetadata,
    TopicPartition,
    ensure_topic,
    kafka_errors,
    topic_id,
)
from online.shadow.parquet import label_table, shadow_table, write_durably
from online.shadow.record import ShadowRecord, shadow_topic
from online.stream.arrival import Arrival
from online.stream.label_topic import LabelRecord, labels_topic
from online.stream.labels_from_events import Labeler, NoLabel, event_labeler
from online.stream.topic import events_topic

__all__ = ["FlushInfo", "SinkReport", "run_sink"]

log = logging.getLogger(__name__)

_PART = re.compile(r"^part-(?P<tid>[0-9a-z]+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.parquet$")
GROUP_SESSION_TIMEOUT_MS = 6_000  # Tansu holds a group join for about half the session timeout; Kafka's minimum
JOIN_GRACE_S = 30.0  # how long a group join may take before idle_timeout_s starts to count anyway


@dataclass(frozen=True)
class FlushInfo:
    """One batch made durable, before its offsets are committed."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int
    files: tuple[Path, ...]


@dataclass
class SinkReport:
    """What one ``run_sink`` call consumed and wrote."""

    records: int = 0  # records read, valid or not (a message of the shadow log holds one or more)
    messages: int = 0
    shadow_rows: int = 0
    label_rows: int = 0
    invalid: int = 0
    not_labels: int = 0  # valid events of the event topic that label nothing (label.from_event's filter)
    label_progress: datetime | None = None  # the newest event time of the label stream read (labels or not)
    files: int = 0
    commits: int = 0
    topics: list[str] = field(default_factory=list)


class _Stream:
    """One consumed topic: where its files go and how its messages become rows."""

    def __init__(
        self,
        topic: str,
        kind: str,
        root: Path,
        tid: str,
        labeler: Labeler | None = None,
        *,
        arrival: Arrival | None = None,
    ) -> None:
        self.topic = topic
        self.kind = kind
        self.root = root
        self.tid = tid
        self.labeler = labeler  # events topic: an event → its label (None: invalid, already dead-lettered)
        self.arrival = arrival  # when an event reached the broker, as the stream processor trusts it

    def values(self, message: Any) -> list[Any]:
        """The records a message holds, still encoded: a shadow log message holds one record's JSON per line
        (online/shadow/log.py; JSON never holds a raw newline), any other one record. Blank lines separate records
        and hold none (a JSON Lines writer ends each record with a newline); a message of nothing but blank lines
        is one record, which `parse` then counts invalid."""
        value = message.value
        if self.kind != "shadow" or not isinstance(value, bytes):
            return [value]
        return [line for line in value.split(b"\n") if line.strip()] or [value]

    def parse(self, message: Any, value: Any) -> ShadowRecord | LabelRecord | NoLabel | None:
        if self.labeler is not None:
            return self.labeler(value, None if self.arrival is None else self.arrival.received_s(message))
        return ShadowRecord.from_json(value) if self.kind == "shadow" else LabelRecord.from_json(value)

    def time_of(self, record: ShadowRecord | LabelRecord) -> datetime:
        moment = record.request_time if isinstance(record, ShadowRecord) else record.event_time
        return moment.astimezone(UTC)

    def table(self, records: list[Any], partitions: list[int], offsets: list[int]) -> pa.Table:
        return (
            shadow_table(records, partitions, offsets)
            if self.kind == "shadow"
            else label_table(records, partitions, offsets)
        )

    def files_of(self, partition: int) -> Iterable[tuple[Path, int]]:
        prefix = f"part-{self.tid}-{partition}-"
        for path in self.root.glob(f"date=*/hour=*/{prefix}*.parquet"):
            match = _PART.match(path.name)
            if match is not None:
                yield path, int(match.group("first"))


class _Sink:
    def __init__(
        self,
        consumer: Any,
        streams: dict[str, _Stream],
        on_flush: Callable[[FlushInfo], None] | None,
        timeout_ms: int,
    ) -> None:
        self.consumer = consumer
        self.streams = streams
        self.on_flush = on_flush
        self.timeout_ms = timeout_ms
        self.pending: dict[tuple[str, int], list[tuple[int, Any]]] = {}
        self.progress: dict[tuple[str, int], datetime] = {}  # label streams: the newest event time pending
        self.recovered: set[tuple[str, int]] = set()
        self.report = SinkReport(topics=sorted(streams))
        self.first_pending_at: float | None = None
        self.assigned_at: float | None = None  # idle time counts from the (latest) partition assignment

    @property
    def pending_count(self) -> int:
        return sum(len(rows) for rows in self.pending.values())

    def add(self, message: Any) -> None:
        """Read one message's records into the pending batch. All of a message's records join the same batch, so a
        file never holds part of a message, and the recovery by offsets holds."""
        self.report.messages += 1
        stream = self.streams[message.topic]
        pending = self.pending.setdefault((message.topic, message.partition), [])
        for value in stream.values(message):
            self.report.records += 1
            pending.append((message.offset, self._parse(stream, message, value)))
        if self.first_pending_at is None:
            self.first_pending_at = time.monotonic()

    def _parse(self, stream: _Stream, message: Any, value: Any) -> ShadowRecord | LabelRecord | None:
        try:
            record = stream.parse(message, value)
            if record is None:
                raise ValueError("not a valid event (the stream processor dead-letters it)")
            if stream.kind == "labels":
                moment = stream.time_of(record) if isinstance(record, LabelRecord) else None
                if isinstance(record, NoLabel):  # a valid event that labels nothing: counted, committed past
                    self.report.not_labels += 1
                    moment, record = record.event_time, None
                where = (message.topic, message.partition)
                if moment is not None and (where not in self.progress or moment > self.progress[where]):
                    self.progress[where] = moment
        except (ValidationError, orjson.JSONDecodeError, ValueError) as exc:
            # A poison record must not stall the sink: count it, log it, and commit past it with its batch.
            self.report.invalid += 1
            log.warning(
                "skipping invalid %s record in message %s@%s: %s",
                message.topic,
                message.partition,
                message.offset,
                str(exc),
            )
            return None
        return None if isinstance(record, NoLabel) else record

    def recover(self, topic: str, partition: int, first_offset: int) -> None:
        """Delete files a crashed run wrote for offsets that are being delivered again (see module docstring)."""
        if (topic, partition) in self.recovered:
            return
        for path, first in self.streams[topic].files_of(partition):
            if first >= first_offset:
                log.info("removing uncommitted %s (offsets from %d are delivered again)", path, first_offset)
                path.unlink(missing_ok=True)
        self.recovered.add((topic, partition))

    def flush(self) -> None:
        if not self.pending:
            return
        offsets: dict[Any, Any] = {}
        for (topic, partition), rows in sorted(self.pending.items()):
            stream = self.streams[topic]
            first, last = rows[0][0], rows[-1][0]
            self.recover(topic, partition, first)
            by_hour: dict[str, list[tuple[int, Any]]] = {}
            for offset, record in rows:
                if record is not None:
                    moment = stream.time_of(record)
                    by_hour.setdefault(f"date={moment:%Y-%m-%d}/hour={moment:%H}", []).append((offset, record))
            files = []
            for hour, items in sorted(by_hour.items()):
                path = stream.root / hour / f"part-{stream.tid}-{partition}-{first:012d}-{last:012d}.parquet"
                table = stream.table([r for _, r in items], [partition] * len(items), [o for o, _ in items])
                write_durably(table, path)
                files.append(path)
                if stream.kind == "shadow":
                    self.report.shadow_rows += len(items)
                else:
                    self.report.label_rows += len(items)
            self.report.files += len(files)
            if (read_to := self.progress.get((topic, partition))) is not None:
                recorded = write_progress(
                    stream.root,
                    f"{stream.tid}-{partition}",
                    read_to,
                    behind=self.behind(topic, partition, last),
                    topic=topic,
                    topic_id=stream.tid,
                )
                if self.report.label_progress is None or recorded > self.report.label_progress:
                    self.report.label_progress = recorded
            elif stream.kind == "labels" and not self.behind(topic, partition, last):
                mark_read_to_end(stream.root, f"{stream.tid}-{partition}")  # only invalid events read to its end
            if self.on_flush is not None:
                self.on_flush(FlushInfo(topic, partition, first, last, tuple(files)))
            offsets[TopicPartition(topic, partition)] = OffsetAndMetadata(last + 1, "", -1)
        self.consumer.commit(offsets, timeout_ms=self.timeout_ms)
        self.report.commits += 1
        self.pending.clear()
        self.progress.clear()
        self.first_pending_at = None

    def behind(self, topic: str, partition: int, last: int) -> bool:
        """Whether the partition holds events past offset `last` (the broker's high watermark, as of the latest
        fetch, is beyond it): its label progress then holds the comparator's watermark (migrate/label_progress.py).
        Unknown (no fetch answered for it yet, or no longer assigned) counts as read to its end, the rule before."""
        try:
            end = self.consumer.highwater(TopicPartition(topic, partition))
        except kafka_errors.IllegalStateError:
            return False
        return end is not None and int(end) > last + 1

    def forget(self, partitions: Iterable[Any]) -> None:
        for tp in partitions:
            self.recovered.discard((tp.topic, tp.partition))


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Flush and commit before partitions move away; re-run recovery for partitions that come back."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.sink.flush()
        self.sink.forget(revoked)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.sink.forget(assigned)
        self.sink.assigned_at = time.monotonic()


def run_sink(
    settings: Settings,
    usecase: str,
    *,
    stop_after: int | None = None,
    idle_timeout_s: float | None = None,
    group_id: str | None = None,
    bootstrap: str | None = None,
    flush_records: int | None = None,
    flush_interval_s: float | None = None,
    on_flush: Callable[[FlushInfo], None] | None = None,
    events_of: UseCase | None = None,
    stop: threading.Event | None = None,
) -> SinkReport:
    """Consume ``<shadow prefix><usecase>`` (and the labels topic if it exists) into Parquet until told to stop.

    With `events_of` (a use case whose ``label.event_field`` names a field of its events), its event topic is
    consumed too and each valid event becomes a label row: outcomes flow through Kafka once, as events.

    Args:
        stop_after: stop once this many records were consumed and written (None: no limit); a shadow log message
            holds one or more, all read.
        idle_timeout_s: stop after this long without a message once partitions are assigned (the group join does
            not count, up to ``JOIN_GRACE_S``); None: run until interrupted.
        on_flush: called after a batch's files are durable and before its offsets are committed.
        stop: set it (from a SIGTERM handler, say) to stop cleanly: what was consumed is written and committed.

    Returns:
        What was consumed and written.
    """
    address = bootstrap or settings.kafka_bootstrap
    if address is None:
        raise BrokerUnavailableError(
            f"no Kafka bootstrap address for the sink of {usecase!r}",
            fix="set MIGRATE_KAFKA_BOOTSTRAP, or run `migrate sink <usecase>`: it starts the embedded broker",
        )
    group_id = group_id or f"migrate-sink-{usecase}"  # one group per use case: no cross-use-case rebalances
    timeout_s = settings.kafka_timeout_s
    max_records = flush_records or settings.sink_flush_records
    interval = flush_interval_s if flush_interval_s is not None else settings.sink_flush_interval_s
    shadow = shadow_topic(usecase, settings.shadow_topic_prefix)
    labels = labels_topic(usecase, settings.labels_topic_prefix)
    ensure_topic(address, shadow, timeout_s=timeout_s)
    streams = {}
    for topic, kind, root in ((shadow, "shadow", settings.shadow_dir), (labels, "labels", settings.labels_dir)):
        tid = topic_id(address, topic, timeout_s=timeout_s)
        if tid is not None:
            streams[topic] = _Stream(topic, kind, root / usecase, tid.replace("-", "")[:12])
    if events_of is not None and (events_of.label.event_field is not None or events_of.label.from_event is not None):
        by_reference = events_of.label.from_event
        stream = by_reference.stream if by_reference is not None else MAIN_STREAM
        topic = events_topic(events_of, settings.events_topic_prefix, stream)
        declared = events_of.realtime_features.source(stream)[2] if events_of.realtime_features else None
        # Created here if no producer or processor has yet: a sink started first must still read the labels.
        ensure_topic(address, topic, declared.partitions if declared else 1, timeout_s=timeout_s)
        tid = topic_id(address, topic, timeout_s=timeout_s)
        if tid is not None:
            # Each event's arrival as the stream processor trusts it (its clock: the wall's, or a rehearsal's), so an
            # event it dead-letters as in the future labels nothing here and moves no label progress.
            future_s = parse_duration(declared.max_future).total_seconds() if declared is not None else 0.0
            streams[topic] = _Stream(
                topic,
                "labels",
                settings.labels_dir / usecase,
                tid.replace("-", "")[:12],
                event_labeler(events_of),
                arrival=Arrival(settings, future_s),
            )
    timeout_ms = int(timeout_s * 1000)
    try:
        consumer = KafkaConsumer(
            bootstrap_servers=address,
            group_id=group_id,
            client_id=f"migrate-sink-{usecase}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=GROUP_SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=1_000,
            max_poll_interval_ms=max(60_000, int(interval * 2000)),
            max_poll_records=max_records,
            fetch_max_wait_ms=200,
            request_timeout_ms=max(timeout_ms, 1_000),
            bootstrap_timeout_ms=timeout_ms,
        )
    except kafka_errors.KafkaError as exc:
        raise BrokerUnavailableError(
            f"the sink of {usecase!r} cannot reach Kafka at {address}: {exc}", fix="start the broker"
        ) from exc
    sink = _Sink(consumer, streams, on_flush, timeout_ms)
    try:
        consumer.subscribe(sorted(streams), listener=_Listener(sink))
        _consume(sink, stop_after, idle_timeout_s, max_records, interval, stop)
        sink.flush()
    except kafka_errors.KafkaError as exc:
        raise BrokerUnavailableError(
            f"the sink of {usecase!r} lost Kafka at {address}: {exc}", fix="restart it once the broker is back"
        ) from exc
    finally:
        consumer.close(autocommit=False, timeout_ms=timeout_ms)
    return sink.report


def _consume(  # noqa: PLR0917 - the loop's knobs, passed through from run_sink
    sink: _Sink,
    stop_after: int | None,
    idle_timeout_s: float | None,
    max_records: int,
    interval: float,
    stop: threading.Event | None,
) -> None:
    started = last_message = time.monotonic()
    while stop is None or not stop.is_set():
        if stop_after is not None:
            wanted = stop_after - sink.report.records
            if wanted <= 0:
                return
            budget = min(max_records - sink.pending_count, wanted)
        else:
            budget = max_records - sink.pending_count
        # The budget is in records, a poll's in messages: a shadow log message holds one or more records.
        per_message = max(1, sink.report.records // max(1, sink.report.messages))
        polled = sink.consumer.poll(timeout_ms=200, max_records=max(1, budget // per_message))
        now = time.monotonic()
        for messages in polled.values():
            for message in messages:
                sink.add(message)
                if sink.pending_count >= max_records:  # within a poll too: its messages may hold many records
                    sink.flush()
        if polled:
            last_message = now
        due = sink.first_pending_at is not None and now - sink.first_pending_at >= interval
        if sink.pending_count >= max_records or due:
            sink.flush()
        if idle_timeout_s is not None:
            if sink.assigned_at is None:
                # The group join (seconds on Tansu, up to a session timeout after a crash) is not idleness.
                if now - started >= idle_timeout_s + JOIN_GRACE_S:
                    return
            elif now - max(last_message, sink.assigned_at) >= idle_timeout_s:
                return
