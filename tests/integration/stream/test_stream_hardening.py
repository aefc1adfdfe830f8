"""The stream processor against bad producers and bad surroundings: a forged future timestamp, an oversized event,
a failing DLQ, a poisoned watermark, a topic recreated under its checkpoints."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import redis
from stream_helpers import Stream, same

import online.stream.processor as processor_module
from migrate.devservices.broker import start_broker
from migrate.errors import DeadLetterError, TopicRecreatedError
from migrate.feature_windows import warm_up
from online.kafka import KafkaConsumer, TopicPartition
from online.stream.checkpoint import Checkpoint, CheckpointStore
from online.stream.event_schema import encode_event
from online.stream.outputs import MAX_DEAD_LETTER_BYTES, DeadLetter, StreamOutputs, dead_letter_topic
from online.stream.processor import StreamProcessor, default_group, key_bytes
from online.stream.replay import replay

pytestmark = pytest.mark.integration


def run(stream: Stream) -> Any:
    processor = StreamProcessor(stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url)
    return processor.run(until_caught_up=True, max_seconds=120)


def dead_letters(stream: Stream, expected: int, timeout_s: float = 30) -> list[tuple[dict[str, Any], dict[str, bytes]]]:
    """The dead-letter topic's records with their headers."""
    consumer = KafkaConsumer(
        dead_letter_topic(stream.usecase.name),
        bootstrap_servers=stream.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
        request_timeout_ms=10000,
        fetch_max_bytes=4 * 1024 * 1024,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    out: list[tuple[dict[str, Any], dict[str, bytes]]] = []
    deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
    try:
        while len(out) < expected and datetime.now(UTC) < deadline:
            out += [(orjson.loads(m.value), dict(m.headers or [])) for m in consumer]
    finally:
        consumer.close()
    return out


def entity_key(event: dict[str, Any]) -> bytes:
    return key_bytes({"store_id": event["store_id"], "product_id": event["product_id"]})


def test_an_event_a_year_ahead_with_a_forged_record_timestamp_is_dead_lettered_and_blocks_nothing(
    stream: Stream,
) -> None:
    good = stream.events[:300]
    ahead = datetime.now(UTC) + timedelta(days=365)
    publisher = stream.publisher()
    try:
        for i, event in enumerate(good):
            publisher.send(event)
            if i == 100:  # its partition's later events would all be `too_late` behind a watermark a year ahead
                forged = {**event, "event_id": "from-the-future", "event_time": ahead}
                publisher.producer.send(
                    stream.topic,
                    key=entity_key(event),
                    value=encode_event(forged),
                    timestamp_ms=int(ahead.timestamp() * 1000),  # the producer claims it sent it a year from now
                )
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()
    report = run(stream)
    assert (report.events, report.dead_letters) == (len(good), 1)
    letters = dead_letters(stream, 1)
    assert [(letter["reason"], orjson.loads(letter["value"])["event_id"]) for letter, _ in letters] == [
        ("in_future", "from-the-future")
    ]
    end = good[-1]["event_time"] + timedelta(minutes=1)
    assert same(stream.observed(end, good), stream.expected(good, end)) == []


def test_an_oversized_invalid_event_reaches_the_dead_letter_topic_truncated_with_its_size_and_sha256(
    stream: Stream,
) -> None:
    good = stream.events[:200]
    huge = b"\xff\xfe" * 400_000  # 800 KB, not UTF-8: base64 in the dead letter would pass the producer's limit
    publisher = stream.publisher()
    try:
        for i, event in enumerate(good):
            publisher.send(event)
            if i == 50:
                publisher.send(event, value=huge)
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()
    report = run(stream)
    assert (report.events, report.dead_letters) == (len(good), 1)
    [(letter, headers)] = dead_letters(stream, 1)
    assert letter["reason"] == "bad_json"
    assert letter["value_truncated"] is True and letter["value_base64"] is True
    assert letter["value_size"] == len(huge)
    assert letter["value_sha256"] == hashlib.sha256(huge).hexdigest()
    assert len(letter["value"]) > 0 and len(orjson.dumps(letter)) <= MAX_DEAD_LETTER_BYTES
    assert headers["migrate-value-size"] == str(len(huge)).encode()
    assert headers["migrate-value-sha256"] == hashlib.sha256(huge).hexdigest().encode()
    assert headers["migrate-value-truncated"] == b"1"
    end = good[-1]["event_time"] + timedelta(minutes=1)
    assert same(stream.observed(end, good), stream.expected(good, end)) == []


class _RefusingOutputs(StreamOutputs):
    """The dead-letter producer refuses everything, as it refused a record over its size limit."""

    def dead_letter(self, letter: DeadLetter) -> None:
        raise DeadLetterError(f"refused {letter.topic}@{letter.offset}", fix="test")


def test_a_dead_letter_that_cannot_be_sent_stops_the_processor_without_committing_past_its_event(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = stream.events[:200]
    publisher = stream.publisher()
    try:
        for event in good[:100]:
            publisher.send(event)
        bad = publisher.send(good[100], value=b"{broken").get(timeout=10)
        for event in good[100:]:
            publisher.send(event)
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()

    with monkeypatch.context() as patched:
        patched.setattr(processor_module, "StreamOutputs", _RefusingOutputs)
        with pytest.raises(DeadLetterError):
            run(stream)
    client = redis.Redis.from_url(stream.redis_url)
    try:
        positions = CheckpointStore(client, stream.usecase.name, default_group(stream.usecase.name)).positions()
    finally:
        client.close()
    assert positions.get(bad.partition, 0) <= bad.offset  # nothing committed past the event

    report = run(stream)  # the producer works again: the event is dead-lettered, none is lost
    assert report.dead_letters == 1
    assert [letter["offset"] for letter, _ in dead_letters(stream, 1)] == [bad.offset]
    end = good[-1]["event_time"] + timedelta(minutes=1)
    assert same(stream.observed(end, good), stream.expected(good, end)) == []


def test_a_watermark_checkpointed_a_year_ahead_is_lowered_on_resume_and_blocks_nothing(stream: Stream) -> None:
    # What a future-dated event let in by an earlier version left in Redis: every partition's watermark a year ahead.
    ahead = (datetime.now(UTC) + timedelta(days=365)).timestamp()
    partitions = stream.usecase.realtime_features.events.partitions  # type: ignore[union-attr]
    client = redis.Redis.from_url(stream.redis_url)
    try:
        store = CheckpointStore(client, stream.usecase.name, default_group(stream.usecase.name))
        for number in range(partitions):
            store.claim(number, "earlier-version")
            store.commit(Checkpoint(number, 0, ahead), "earlier-version")
    finally:
        client.close()
    # Live events of the last minutes: within the allowed lateness of the clock, not of a year from now.
    start = datetime.now(UTC) - timedelta(minutes=3)
    good = [{**event, "event_time": start + timedelta(seconds=i / 2)} for i, event in enumerate(stream.events[:200])]
    assert stream.publish(good) == len(good)
    report = run(stream)
    assert (report.events, report.dead_letters) == (len(good), 0)
    end = good[-1]["event_time"] + timedelta(minutes=1)
    assert same(stream.observed(end, good), stream.expected(good, end)) == []


def test_checkpoints_of_a_recreated_topic_are_refused_not_resumed_past_its_events(
    stream: Stream, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a CI run met: the same Redis, a new broker (an embedded one keeps its topics in memory), the topic of the
    # same name recreated at offset 0. Resuming at the old offsets skipped every event the new topic was sent.
    first = stream.events[:150]
    assert stream.publish(first) == len(first)
    assert run(stream).events == len(first)
    other = start_broker(stream.settings)
    try:
        again = Stream(stream.settings, stream.usecase, other.bootstrap, stream.redis_url, stream.events)
        assert again.publish(first) == len(first)
        refusing = StreamProcessor(again.settings, again.usecase, bootstrap=again.bootstrap, redis_url=again.redis_url)
        closed: list[bool] = []
        close = refusing.client.close

        def closing() -> None:
            closed.append(True)
            close()

        monkeypatch.setattr(refusing.client, "close", closing)
        with pytest.raises(TopicRecreatedError, match="recreated") as refused:
            refusing.run(until_caught_up=True, max_seconds=120)
        assert "migrate replay" in (refused.value.fix or "")
        assert closed == [True]  # the refusal still closes the processor's Redis client
        # The operator's fix: a replay clears the checkpoints and rebuilds the windows from the new topic, each event
        # once (a resume past them would have applied none; a resume of the old windows would count them twice).
        report = replay(again.settings, again.usecase, bootstrap=again.bootstrap, redis_url=again.redis_url)
        assert (report.events, report.dead_letters) == (len(first), 0)
        end = first[-1]["event_time"] + timedelta(minutes=1)
        assert same(again.observed(end, first), again.expected(first, end)) == []
        # And the processor resumes on the new topic from then on.
        more = stream.events[150:230]
        assert again.publish(more) == len(more)
        assert run(again).events == len(more)
    finally:
        other.stop()


def _publish_in_one_batch(stream: Stream, prefix: str, n: int = 30) -> None:
    """`n` events of the first event's entity, a second apart, sent within the producer's linger: one produce
    batch on one partition."""
    first = stream.events[0]
    publisher = stream.publisher()
    try:
        for i in range(n):
            at = first["event_time"] + timedelta(seconds=i)
            publisher.send({**first, "event_id": f"{prefix}-{i}", "event_time": at})
        publisher.producer.flush(timeout=10)
    finally:
        publisher.close()


def test_a_run_resumed_inside_the_last_produce_batch_reads_that_batch_to_its_end(stream: Stream) -> None:
    """The embedded broker's end offset of a partition is the first offset of its last produce batch plus one;
    a fetch's high watermark is the end, which the processor now waits for. One entity's 30 events in one produce
    batch; a run stopped after its first fetch (10 events, checkpointed inside the batch), then a run until caught
    up: it reads the other 20. The fault needed the resumed run's first poll to come back before the first fetch,
    a race this test does not force (it passed on the code before, three runs of three); the decision itself is
    reproduced by hand in tests/unit/stream/test_caught_up.py. This one holds what that fix relies on, the fetched
    high watermark, and the resumed run end to end."""
    _publish_in_one_batch(stream, "one-batch")

    consumer = KafkaConsumer(bootstrap_servers=stream.bootstrap, enable_auto_commit=False)
    try:
        tps = [TopicPartition(stream.topic, p) for p in consumer.partitions_for_topic(stream.topic)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        read: dict[Any, int] = {}
        while polled := consumer.poll(timeout_ms=2_000):
            for tp, messages in polled.items():
                read[tp] = read.get(tp, 0) + len(messages)
        (tp,) = read  # one entity: one partition
        ends = consumer.end_offsets([tp])
        assert consumer.highwater(tp) == 30, f"the fetched end; the broker's ListOffsets answered {ends[tp]}"
    finally:
        consumer.close()

    settings = stream.settings_with(stream_checkpoint_events=10)
    stop = threading.Event()
    stopped = StreamProcessor(settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url)
    handle = stopped.handle_fetch

    def handle_then_stop(messages: list[Any]) -> None:
        handle(messages)
        stop.set()

    stopped.handle_fetch = handle_then_stop  # type: ignore[method-assign]
    assert stopped.run(stop=stop, max_seconds=60).events == 10
    assert stopped.checkpoints.positions()[tp.partition] == 10

    resumed = StreamProcessor(settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url)
    assert resumed.run(until_caught_up=True, max_seconds=120).events == 20
    assert resumed.checkpoints.positions()[tp.partition] == 30


def test_replay_from_after_a_partitions_last_event_starts_it_at_its_fetched_end(stream: Stream) -> None:
    """`migrate replay --from T` starts a partition with no event since `T - warm-up` at its end. Two faults of the
    embedded broker read events sent before that start: its `offsets_for_times` answers offset 0 with timestamp -1
    for a time past the last event (Kafka answers none), read as offset 0: all 30 replayed; and its `end_offsets`
    is the first offset of the last produce batch plus one: 29 replayed with the first fault fixed alone."""
    first = stream.events[0]
    _publish_in_one_batch(stream, "old")
    # after every record's timestamp (when it was sent: now), which is what the replay's offsets_for_times compares
    since = datetime.now(UTC) + warm_up(stream.usecase) + timedelta(hours=1)
    report = replay(
        stream.settings, stream.usecase, bootstrap=stream.bootstrap, redis_url=stream.redis_url, since=since
    )
    assert report.events == 0
    earlier = replay(
        stream.settings,
        stream.usecase,
        bootstrap=stream.bootstrap,
        redis_url=stream.redis_url,
        since=first["event_time"],
    )
    assert earlier.events == 30  # the same replay from before them reads them all
