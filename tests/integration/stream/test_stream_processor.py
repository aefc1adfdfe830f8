"""The stream processor against the real broker and Redis: point-in-time equality, dead letters, lateness, replay."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import orjson
import pytest
from prometheus_client import CollectorRegistry
from stream_helpers import Stream, same

from migrate.label_progress import PROGRESS_DIR, progress_bound, read_progress
from online.kafka import KafkaConsumer, TopicPartition
from online.shadow.sink import run_sink
from online.stream.outputs import dead_letter_topic
from online.stream.processor import StreamProcessor, key_bytes
from online.stream.replay import replay

pytestmark = pytest.mark.integration


def run(stream: Stream, **settings: Any) -> Any:
    processor = StreamProcessor(
        stream.settings_with(**settings), stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url
    )
    return processor.run(until_caught_up=True, max_seconds=120)


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[dict[str, Any]]:
    """The values of `consume_raw`, decoded."""
    return [orjson.loads(message.value) for message in consume_raw(bootstrap, topic, expected, timeout_s)]


def consume_raw(bootstrap: str, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every message of `topic` (no group), as kafka-python gives them: partition, offset, value."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        request_timeout_ms=10000,
    )
    out: list[Any] = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    try:
        while len(out) < expected and datetime.now(UTC) < deadline:
            out.extend(consumer)
    finally:
        consumer.close()
    return out


def test_features_equal_point_in_time_training_features_at_the_same_instant(stream: Stream) -> None:
    times = [e["event_time"] for e in stream.events]
    instant = times[len(times) * 2 // 3] + timedelta(seconds=1)  # between events: nothing happens exactly then
    before = [e for e in stream.events if e["event_time"] < instant]
    assert stream.publish(before) == len(before)
    report = run(stream)
    assert report.events == len(before) and report.dead_letters == 0
    expected = stream.expected(before, instant)
    assert len(expected) > 100
    assert same(stream.observed(instant), expected) == []


def test_applied_events_are_counted_while_no_more_arrive(stream: Stream) -> None:
    """`migrate rehearse` waits for the stream's events counter to reach its warm-up's count before the day starts,
    and no event comes until it does. The counter used to move only when the next checkpoint settled the previous
    one: the flight trial's rehearsal read 0 of 170 applied (its windows were full) and warned of a slow start."""
    events = stream.events[:300]
    assert stream.publish(events) == len(events)
    registry = CollectorRegistry()
    processor = StreamProcessor(
        stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url, registry=registry
    )
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, kwargs={"stop": stop, "max_seconds": 60})
    worker.start()
    try:
        deadline, counted = time.monotonic() + 30, 0.0
        while time.monotonic() < deadline and counted < len(events):
            time.sleep(0.2)
            counted = registry.get_sample_value("migrate_stream_events_total", {"usecase": stream.usecase.name}) or 0
        assert counted == len(events)
    finally:
        stop.set()
        worker.join(30)


def test_replay_rebuilds_identical_features_idempotently(stream: Stream) -> None:
    stream.publish()
    run(stream)
    end = stream.events[-1]["event_time"] + timedelta(minutes=1)
    live = stream.observed(end)
    assert same(live, stream.expected(stream.events, end)) == []
    for _ in range(2):  # twice: a replay over a replay changes nothing
        report = replay(stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url)
        assert report.events == len(stream.events)
        assert same(stream.observed(end), live) == []
    # From a later time: windows still open full (warm-up); only minutes_since may know less of the past.
    since = stream.events[len(stream.events) // 2]["event_time"]
    replay(stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url, since=since)
    partial = stream.observed(end)
    windowed = [i for i, f in enumerate(stream.usecase.realtime_features.features) if f.window]  # type: ignore[union-attr]
    recent = {k: v for k, v in live.items() if k in partial}
    assert (
        recent
        and same(
            {k: [v[i] for i in windowed] for k, v in partial.items()},
            {k: [v[i] for i in windowed] for k, v in recent.items()},
        )
        == []
    )


def test_malformed_events_all_reach_the_dead_letter_topic_with_their_reason(stream: Stream) -> None:
    good = stream.events[:400]
    first = good[0]
    key = key_bytes({"store_id": first["store_id"], "product_id": first["product_id"]})
    future = first["event_time"] + timedelta(days=365 * 30)  # the broker stamps arrival now; this is decades later
    bad: list[tuple[bytes, bytes, str]] = [
        (key, b"{not json", "bad_json"),
        (key, b"[1, 2]", "not_an_object"),
        (key, orjson.dumps({**_wire(first), "event_id": None}), "missing_field"),
        (key, orjson.dumps({k: v for k, v in _wire(first).items() if k != "product_id"}), "missing_field"),
        (key, orjson.dumps({**_wire(first), "store_id": "seven"}), "wrong_type"),
        (key, orjson.dumps({**_wire(first), "found": "yes"}), "wrong_type"),
        (key, orjson.dumps({**_wire(first), "event_time": "yesterday"}), "wrong_type"),
        (key, orjson.dumps({**_wire(first), "event_time": "2026-11-14T10:00:00"}), "wrong_type"),  # naive
        (key, orjson.dumps({**_wire(first), "event_time": future.isoformat()}), "in_future"),
        (b'{"product_id":1,"store_id":1}', orjson.dumps(_wire(first)), "wrong_key"),
    ]
    publisher = stream.publisher()
    try:
        for i, event in enumerate(good):
            publisher.send(event)
            if i % 40 == 20 and bad:  # bad events in between good ones
                raw_key, value, _ = bad[(i // 40) % len(bad)]
                publisher.send(event, value=value, key=raw_key)
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()
    sent_bad = [bad[(i // 40) % len(bad)] for i in range(len(good)) if i % 40 == 20]
    report = run(stream)
    assert report.events == len(good)
    assert report.dead_letters == len(sent_bad)
    letters = consume(stream.bootstrap, dead_letter_topic(stream.usecase.name), len(sent_bad))
    assert sorted(letter["reason"] for letter in letters) == sorted(reason for _, _, reason in sent_bad)
    assert all(letter["detail"] and letter["value"] is not None for letter in letters)
    end = good[-1]["event_time"] + timedelta(minutes=1)
    assert same(stream.observed(end), stream.expected(good, end)) == []


def _wire(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "event_time": event["event_time"].isoformat()}


def test_late_events_within_the_allowed_lateness_count_and_later_ones_are_dead_lettered(stream: Stream) -> None:
    base = datetime(2026, 11, 14, 10, 0, tzinfo=UTC)
    entity = {"store_id": 9001, "product_id": 9001}

    def event(n: int, minutes: float, found: bool) -> dict[str, Any]:
        return {"event_id": f"late-{n}", "event_time": base + timedelta(minutes=minutes), **entity, "found": found}

    events = [
        event(1, 0, True),
        event(2, 30, True),  # watermark 10:30
        event(3, 26, False),  # 4 min late: within the 5 min allowed → counted
        event(4, 20, False),  # 10 min late: beyond → dead letter, not counted
        event(5, 31, True),
    ]
    publisher = stream.publisher()
    try:
        for e in events:
            publisher.send(e)
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()
    report = run(stream)
    assert (report.events, report.dead_letters) == (4, 1)
    letters = consume(stream.bootstrap, dead_letter_topic(stream.usecase.name), 1)
    assert [(letter["reason"], orjson.loads(letter["value"])["event_id"]) for letter in letters] == [
        ("too_late", "late-4")
    ]
    at = base + timedelta(minutes=32)
    observed = stream.observed(at, events)[(9001, 9001)]
    names = stream.usecase.realtime_feature_names
    values = dict(zip(names, observed, strict=True))
    assert values["scans_30m"] == 3  # 10:26, 10:30, 10:31 (10:00 is outside (10:01, 10:31])
    assert values["found_rate_30m"] == pytest.approx(2 / 3)
    assert values["scans_120m"] == 4
    assert values["minutes_since_not_found"] == pytest.approx(6.0)  # the 10:26 miss, read at 10:32
    assert same({(9001, 9001): observed}, stream.expected([events[i] for i in (0, 1, 2, 4)], at)) == []


def test_a_label_partition_the_sink_left_behind_its_end_holds_the_label_watermark(stream: Stream) -> None:
    """The sink stops after a few events of a four-partition event topic: each partition it read says whether it
    held more, checked here against the broker's end offsets and the group's committed offsets, and the comparator's
    bound is the oldest progress of a partition behind (by hand, from the events each read partition held below its
    committed offset). Read to the end, nothing holds it."""
    good = stream.events[:300]
    assert stream.publish(good) == len(good)
    report = run_sink(
        stream.settings,
        stream.usecase.name,
        bootstrap=stream.bootstrap,
        stop_after=12,
        flush_records=12,
        idle_timeout_s=3,
        events_of=stream.usecase,
    )
    assert report.records == 12
    labels_root = stream.settings.labels_dir / stream.usecase.name
    topic = stream.topic
    reader = KafkaConsumer(
        bootstrap_servers=stream.bootstrap,
        group_id=f"migrate-sink-{stream.usecase.name}",
        enable_auto_commit=False,
        request_timeout_ms=10000,
    )
    try:
        partitions = sorted(reader.partitions_for_topic(topic))
        committed = {p: reader.committed(TopicPartition(topic, p)) or 0 for p in partitions}
    finally:
        reader.close()
    # Each partition's end and what the sink read of it, from every message of the topic.
    messages = consume_raw(stream.bootstrap, topic, len(good))
    assert len(messages) == len(good)
    ends = {p: 1 + max((m.offset for m in messages if m.partition == p), default=-1) for p in partitions}
    held: dict[int, list[datetime]] = {}
    for message in messages:
        if message.offset < committed[message.partition]:
            moment = datetime.fromisoformat(orjson.loads(message.value)["event_time"])
            held.setdefault(message.partition, []).append(moment)
    files = {
        int(path.stem.rsplit("-", 1)[1]): orjson.loads(path.read_bytes())
        for path in (labels_root / PROGRESS_DIR).glob("*.json")
    }
    assert sorted(files) == sorted(held)  # one file per partition read, none for a partition not read yet
    behind = {p for p in partitions if committed[p] < ends[p]}
    assert behind & set(held), "the sink read part of some partition (else this test shows nothing)"
    for partition, record in files.items():
        assert record["behind"] == (partition in behind)
        assert datetime.fromisoformat(record["event_time"]) == max(held[partition])
        assert record["topic"] == topic
    assert progress_bound(labels_root) == min(max(held[p]) for p in behind & set(held))
    # Read on to every partition's end: no partition is behind, and the watermark is the newest event read.
    run_sink(
        stream.settings, stream.usecase.name, bootstrap=stream.bootstrap, idle_timeout_s=3, events_of=stream.usecase
    )
    assert progress_bound(labels_root) is None
    assert read_progress(labels_root) == max(e["event_time"] for e in good)


def test_a_partition_read_to_its_end_through_invalid_events_no_longer_holds_the_watermark(stream: Stream) -> None:
    """One entity's partition: four valid scans, then four that are not valid events (counted, not labels). A sink
    stopped after the valid ones records its partition behind; the next run reads only the invalid ones, which move
    no time, and records it at its end: before, the "behind" stayed and held the label watermark for good."""
    first = stream.events[0]
    valid = [
        {**first, "event_id": f"same-{n}", "event_time": first["event_time"] + timedelta(minutes=n)} for n in range(4)
    ]
    publisher = stream.publisher()
    try:
        for event in valid:
            publisher.send(event)
        for n in range(4):
            publisher.send({**first, "event_id": f"broken-{n}"}, value=b"{broken")  # same key, same partition
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()
    labels_root = stream.settings.labels_dir / stream.usecase.name
    sink = {"bootstrap": stream.bootstrap, "idle_timeout_s": 3, "events_of": stream.usecase}
    stopped = run_sink(stream.settings, stream.usecase.name, stop_after=4, flush_records=4, **sink)
    assert (stopped.records, stopped.invalid) == (4, 0)
    newest = max(e["event_time"] for e in valid)
    assert progress_bound(labels_root) == newest == read_progress(labels_root)  # four invalid events still unread
    rest = run_sink(stream.settings, stream.usecase.name, **sink)
    assert (rest.records, rest.invalid) == (4, 4)
    assert progress_bound(labels_root) is None  # read to its end: it holds nothing
    assert read_progress(labels_root) == newest  # and no invalid event moved its time
    [record] = [orjson.loads(p.read_bytes()) for p in (labels_root / PROGRESS_DIR).glob("*.json")]
    assert record["behind"] is False


def test_labels_flow_from_the_event_topic_into_the_label_store(stream: Stream) -> None:

    good = stream.events[:300]
    newest = max(e["event_time"] for e in good)
    # Two later scans whose outcome is not known (found null): valid events that label nothing, read all the same.
    unknown = [
        {**good[n], "event_id": f"unknown-{n}", "found": None, "event_time": newest + timedelta(hours=n + 1)}
        for n in range(2)
    ]
    publisher = stream.publisher()
    try:
        for i, event in enumerate(good):
            publisher.send(event)
            if i == 150:
                publisher.send(event, value=b"{broken")  # not a label: the processor dead-letters it
        for event in unknown:
            publisher.send(event)
        # A year ahead of when it reached the broker: the processor dead-letters it (in_future), and here it must
        # neither label nor move the label progress (it would close every label window at once).
        ahead = datetime.now(UTC) + timedelta(days=365)
        publisher.send({**good[0], "event_id": "from-the-future", "found": None, "event_time": ahead})
        publisher.send({**good[1], "event_id": "future-label", "found": True, "event_time": ahead})
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()
    report = run_sink(
        stream.settings, stream.usecase.name, bootstrap=stream.bootstrap, idle_timeout_s=3, events_of=stream.usecase
    )
    assert report.invalid == 3 and report.not_labels == 2
    # How far the label stream was read: the later of the unlabelled scans, two hours past the newest label.
    labels_root = stream.settings.labels_dir / stream.usecase.name
    assert read_progress(labels_root) == report.label_progress == newest + timedelta(hours=2)
    files = stream.settings.labels_dir / stream.usecase.name / "**" / "*.parquet"
    rows = duckdb.sql(
        f"SELECT source_event_id, key_store_id, key_product_id, label, event_time "
        f"FROM read_parquet('{files}', hive_partitioning = true) ORDER BY source_event_id"
    ).fetchall()
    expected = sorted((e["event_id"], e["store_id"], e["product_id"], float(e["found"]), e["event_time"]) for e in good)
    assert [(r[0], r[1], r[2], r[3]) for r in rows] == [e[:4] for e in expected]
    assert [r[4] for r in rows] == [e[4] for e in expected]


def test_a_backlog_is_checkpointed_in_few_large_checkpoints_and_freshness_returns_once_caught_up(
    stream: Stream,
) -> None:
    """A checkpoint serializes each changed state whole: at 0.1 s a backlog's states were written again and again,
    most of the processor's time in the stream bench. Behind, it now checkpoints at the catch-up cadence; caught up,
    at the normal one again (the interval that bounds freshness). The windows equal the point-in-time computation."""
    times = [e["event_time"] for e in stream.events]
    split = len(times) * 2 // 3
    backlog, later = stream.events[:split], stream.events[split : split + 20]
    assert stream.publish(backlog) == len(backlog)
    settings = stream.settings_with(
        stream_checkpoint_events=50,
        stream_checkpoint_interval_s=0.05,
        stream_catch_up_checkpoint_events=len(backlog),
        stream_catch_up_checkpoint_interval_s=60,
    )
    processor = StreamProcessor(settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url)
    stop = threading.Event()
    worker = threading.Thread(target=processor.run, kwargs={"stop": stop, "max_seconds": 120})
    worker.start()
    try:
        instant = later[0]["event_time"]  # after every backlog event, at the first later one (not yet counted)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and same(
            stream.observed(instant, backlog), stream.expected(backlog, instant)
        ):
            time.sleep(0.2)
        assert same(stream.observed(instant, backlog), stream.expected(backlog, instant)) == []
        # At the normal cadence every 50 events would have been a checkpoint (57 or more); behind, a few: the start's,
        # the first poll's (before any fetch told the processor how far behind it was), the last once nothing waited.
        assert len(backlog) > 1_000 and processor.report.checkpoints < len(backlog) // 50 // 5
        # Caught up: new events are checkpointed within the normal interval, not the catch-up one (60 s).
        assert stream.publish(later) == len(later)
        after = later[-1]["event_time"] + timedelta(seconds=1)
        events = backlog + later
        published = time.monotonic()
        while time.monotonic() < published + 20 and same(
            stream.observed(after, events), stream.expected(events, after)
        ):
            time.sleep(0.05)
        assert same(stream.observed(after, events), stream.expected(events, after)) == []
        assert time.monotonic() - published < 20
    finally:
        stop.set()
        worker.join(30)
