"""Shadow log end to end on the embedded Tansu broker: logger → Kafka → sink → Parquet → DuckDB.

Consumer-group joins on Tansu take about half the session timeout (~3 s here); every wait below is bounded.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest
from kafka_stubs import library_partition
from prometheus_client import CollectorRegistry

from migrate.devservices.broker import Broker, EmbeddedBroker, resolve_bootstrap, start_broker
from migrate.errors import BrokerError
from migrate.settings import Settings, get_settings
from online.kafka import (
    KafkaConsumer,
    KafkaProducer,
    TopicPartition,
    ensure_topic,
    partitions_for_topic,
)
from online.shadow.log import ShadowLogger
from online.shadow.record import ShadowRecord, wire_record
from online.shadow.sink import FlushInfo, run_sink
from online.stream.label_topic import LabelRecord, publish_labels

pytestmark = pytest.mark.integration

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return get_settings(state_dir=tmp_path / "state", kafka_timeout_s=5.0)


@pytest.fixture
def broker(settings: Settings) -> Iterator[Broker]:
    with EmbeddedBroker(settings) as running:
        yield running


def record(i: int, usecase: str = "uc", *, at: datetime = T0) -> ShadowRecord:
    return ShadowRecord(
        request_id=f"req-{i:06d}",
        usecase=usecase,
        key={"store_id": i % 7, "product_id": f"p{i}"},
        request_time=at + timedelta(minutes=i),  # spans several hour partitions
        served_source="batch" if i % 2 else "online",
        stage="shadow",
        batch_prediction=i / 1000,
        batch_data_age_s=60.0,
        batch_model_version="v1",
        online_prediction=None if i % 10 == 0 else 1 - i / 1000,
        online_feature_ages_s={"sales_30m": float(i)},
        online_model_version="v2",
        batch_latency_ms=0.5,
        online_latency_ms=4.0,
        online_error="timeout" if i % 10 == 0 else None,
    )


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def shadow_rows(settings: Settings, usecase: str, columns: str = "*") -> list[tuple[object, ...]]:
    pattern = settings.shadow_dir / usecase / "**" / "*.parquet"
    return duckdb.sql(
        f"SELECT {columns} FROM read_parquet('{pattern}', hive_partitioning = true) ORDER BY request_id"
    ).fetchall()


def test_embedded_broker_starts_under_the_state_dir_and_stops(settings: Settings) -> None:
    bootstrap, broker = resolve_bootstrap(settings)
    assert broker is not None
    try:
        assert bootstrap == broker.bootstrap
        assert broker.running
        assert broker.log_path.parent == settings.kafka_dir
        assert (settings.state_dir / "bin").is_dir()
        assert ensure_topic(bootstrap, "t", 2) is True
        assert ensure_topic(bootstrap, "t", 2) is False  # idempotent
    finally:
        broker.stop()
    assert not broker.running
    configured = get_settings(state_dir=settings.state_dir, kafka_bootstrap="kafka.example:9092")
    assert resolve_bootstrap(configured) == ("kafka.example:9092", None)


def test_logged_records_reach_parquet_exactly_once(settings: Settings, broker: Broker) -> None:
    n = 500
    logger = ShadowLogger(broker.bootstrap, "uc", registry=CollectorRegistry())
    assert all(logger.log(record(i)) for i in range(n))
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n

    report = run_sink(settings, "uc", stop_after=n, idle_timeout_s=30, bootstrap=broker.bootstrap, flush_records=200)
    assert report.shadow_rows == n
    assert report.commits >= 3

    rows = shadow_rows(settings, "uc", "request_id, key_store_id, key_product_id, batch_prediction, online_prediction")
    assert len(rows) == n
    assert rows[0] == ("req-000000", 0, "p0", 0.0, None)
    assert rows[123] == ("req-000123", 123 % 7, "p123", 0.123, pytest.approx(1 - 0.123))
    hours = duckdb.sql(
        f"SELECT count(DISTINCT hour), min(date) FROM read_parquet('{settings.shadow_dir / 'uc'}/**/*.parquet', "
        "hive_partitioning = true)"
    ).fetchall()[0]
    assert hours[0] > 1
    assert str(hours[1]) == "2026-11-25"

    # Everything is committed: a second run finds nothing new and writes nothing.
    again = run_sink(settings, "uc", idle_timeout_s=6, bootstrap=broker.bootstrap)
    assert again.records == 0
    assert len(shadow_rows(settings, "uc", "request_id")) == n


def test_wire_records_reach_parquet_as_the_models_and_one_json_cannot_carry_is_counted(
    settings: Settings, broker: Broker
) -> None:
    """The comparison logs `wire_record`s: the sink reads them as the records the model would have sent. A value
    JSON cannot carry (an integer beyond 64 bits, which request validation refuses before it gets here) fails in
    the logger's thread, is counted as a failed send, and the records after it are sent."""
    n = 50
    models = [record(i) for i in range(n)]
    wired = [wire_record(**m.model_dump(exclude={"schema_version"})) for m in models]
    bad = wire_record(**(models[0].model_dump(exclude={"schema_version"}) | {"context": {"big": 2**70}}))
    logger = ShadowLogger(broker.bootstrap, "uc", registry=CollectorRegistry())
    assert all(logger.log(w) for w in wired[:25])
    assert logger.log(bad)
    assert all(logger.log(w) for w in wired[25:])
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n
    assert logger.stats()["send_failed"] == 1

    report = run_sink(settings, "uc", stop_after=n, idle_timeout_s=30, bootstrap=broker.bootstrap)
    assert report.shadow_rows == n
    columns = (
        "request_id, key_store_id, key_product_id, served_source, batch_prediction, online_prediction, online_error"
    )
    expected = [
        (
            m.request_id,
            m.key["store_id"],
            m.key["product_id"],
            m.served_source,
            m.batch_prediction,
            m.online_prediction,
            m.online_error,
        )
        for m in models
    ]
    assert shadow_rows(settings, "uc", columns) == expected


SINK_SCRIPT = textwrap.dedent(
    """
    import os, sys
    from migrate.settings import get_settings
    from online.shadow.sink import run_sink

    flushes = []

    def die_on_second_flush(info):
        flushes.append(info)
        if len(flushes) == 2:  # files written and fsynced, offsets not committed
            os.kill(os.getpid(), 9)

    run_sink(get_settings(), "crash", bootstrap=sys.argv[1], flush_records=100, idle_timeout_s=60,
             on_flush=die_on_second_flush)
    """
)


def _read_topic(bootstrap: str, topic: str, partitions: int) -> dict[int, list[Any]]:
    """Every message of the topic, by partition, read from the beginning until the broker has no more."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        consumer.seek_to_beginning(*assigned)
        found: dict[int, list[Any]] = {p: [] for p in range(partitions)}
        while polled := consumer.poll(timeout_ms=2_000):
            for tp, messages in polled.items():
                found[tp.partition] += messages
        return found
    finally:
        consumer.close()


def test_records_of_many_entities_go_to_their_keys_partitions_in_messages_and_reach_parquet(
    settings: Settings, broker: Broker
) -> None:
    """Up to 100 records a message, each in the partition kafka-python's DefaultPartitioner picks for its key (as
    when every record was a message), one entity's records in the order logged; the sink writes each once."""
    n, partitions = 600, 3
    logger = ShadowLogger(broker.bootstrap, "uc", partitions=partitions, registry=CollectorRegistry())
    # 40 entities, 15 records each: one entity's records must stay in the order logged
    logged = [record(i).model_copy(update={"key": {"store_id": i % 4, "product_id": f"p{i % 40}"}}) for i in range(n)]
    for r in logged:
        assert logger.log(r)
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n

    found = _read_topic(broker.bootstrap, "migrate.shadow.uc", partitions)
    seen: dict[str, list[str]] = {}  # entity key → request ids, in the topic's order
    sizes = []
    for partition, messages in found.items():
        for message in messages:
            lines = message.value.split(b"\n")
            sizes.append(len(lines))
            assert message.key == (ShadowRecord.from_json(lines[0]).key_bytes() if len(lines) == 1 else None)
            for line in lines:
                sent = ShadowRecord.from_json(line)
                key = sent.key_bytes()
                assert library_partition(key, set(range(partitions))) == partition
                seen.setdefault(key.decode(), []).append(sent.request_id)
    assert sum(sizes) == n
    assert max(sizes) > 1  # records were grouped
    assert max(sizes) <= 100
    expected: dict[str, list[str]] = {}
    for r in logged:
        expected.setdefault(r.key_bytes().decode(), []).append(r.request_id)
    assert seen == expected
    assert len(expected) == 40
    assert sum(bool(found[p]) for p in range(partitions)) > 1  # the entities spread over the partitions

    report = run_sink(settings, "uc", stop_after=n, idle_timeout_s=30, bootstrap=broker.bootstrap, flush_records=250)
    assert (report.records, report.shadow_rows, report.invalid) == (n, n, 0)
    assert report.messages == len(sizes)
    rows = shadow_rows(settings, "uc", "request_id, batch_prediction, online_feature_ages_s")
    assert rows == [(r.request_id, r.batch_prediction, orjson.dumps(r.online_feature_ages_s).decode()) for r in logged]


def test_messages_go_lz4_compressed_and_the_sink_reads_them_back(settings: Settings, broker: Broker) -> None:
    """The shadow log's messages are compressed (each record names its features: they shrink ~6x): kafka-python's
    own measure of the batches it sent, compressed bytes over raw, is well below 1; the sink reads every record."""
    n = 400
    logger = ShadowLogger(broker.bootstrap, "uc", registry=CollectorRegistry())
    logged = [record(i) for i in range(n)]
    for r in logged:
        assert logger.log(r)
    deadline = time.monotonic() + 30
    while logger.stats()["sent"] < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert logger.stats()["sent"] == n
    producer = logger._producer
    assert producer is not None
    rate = producer.metrics()["producer-metrics"]["compression-rate-avg"]
    assert 0 < rate < 0.5, rate  # lz4 on these records; 1.0 (or no batch measured) when sent uncompressed
    logger.close(timeout_s=10)

    report = run_sink(settings, "uc", stop_after=n, idle_timeout_s=30, bootstrap=broker.bootstrap, flush_records=250)
    assert (report.records, report.shadow_rows, report.invalid) == (n, n, 0)
    rows = shadow_rows(settings, "uc", "request_id, online_feature_ages_s")
    assert rows == [(r.request_id, orjson.dumps(r.online_feature_ages_s).decode()) for r in logged]


@pytest.mark.parametrize("gather_s", [0.0, 0.05])
def test_records_logged_at_a_trickle_are_gathered_into_few_messages(
    settings: Settings, broker: Broker, gather_s: float
) -> None:
    """A record logged every ~2 ms: without a gathering interval each take of the queue finds one or two records
    and sends them as a message; with the default 50 ms, the thread sleeps and sends ~25 records a message."""
    n = 150
    logger = ShadowLogger(
        broker.bootstrap, f"uc{int(gather_s * 1000)}", gather_s=gather_s, registry=CollectorRegistry()
    )
    logger.log(record(0))
    wait_until(lambda: logger.stats()["sent"] == 1, 15, "the first record (connected, topic made)")
    for i in range(1, n):
        assert logger.log(record(i))
        time.sleep(0.002)
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n
    messages = _read_topic(broker.bootstrap, f"migrate.shadow.uc{int(gather_s * 1000)}", 1)[0]
    assert sum(len(m.value.split(b"\n")) for m in messages) == n
    if gather_s:
        assert len(messages) <= n // 5  # ~7 at 2 ms a record; a slowed machine gathers more, not fewer
    else:
        assert len(messages) > n // 5  # what the interval saves: one message per take


def test_a_record_too_large_for_kafka_is_counted_alone_and_its_neighbours_are_sent(
    settings: Settings, broker: Broker
) -> None:
    """A record over the producer's 1 MiB request limit is a message of its own: it alone is a counted failed
    send, the records logged around it (grouped in messages before and after it) all arrive."""
    n = 40
    big = record(0).model_copy(update={"request_id": "req-big", "context": {"blob": "x" * 1_200_000}})
    logger = ShadowLogger(broker.bootstrap, "uc", registry=CollectorRegistry())
    for i in range(n):
        assert logger.log(record(i))
        if i == n // 2:
            assert logger.log(big)
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n
    assert logger.stats()["send_failed"] == 1

    report = run_sink(settings, "uc", stop_after=n, idle_timeout_s=30, bootstrap=broker.bootstrap)
    assert report.shadow_rows == n
    assert [row[0] for row in shadow_rows(settings, "uc", "request_id")] == [f"req-{i:06d}" for i in range(n)]


def test_an_invalid_record_in_a_message_is_counted_and_the_others_of_it_are_written(
    settings: Settings, broker: Broker
) -> None:
    """A message's records are read one by one: a line that is not a record is counted invalid and skipped, the
    valid lines beside it in the same message are written, and the sink commits past the message. Blank lines hold
    no record (a JSON Lines writer ends each record with a newline, CRLF included); a message of nothing but blank
    lines is one invalid record, not nothing."""
    ensure_topic(broker.bootstrap, "migrate.shadow.uc", 1)
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    try:
        lines = [record(1).to_json(), b'{"not": "a record"}', b"", b"  ", record(2).to_json()]
        producer.send("migrate.shadow.uc", value=b"\n".join(lines)).get(timeout=10)
        producer.send("migrate.shadow.uc", value=record(3).to_json()).get(timeout=10)  # one record, as before
        producer.send("migrate.shadow.uc", value=record(4).to_json() + b"\r\n").get(timeout=10)  # JSON Lines
        producer.send("migrate.shadow.uc", value=b"\n\n").get(timeout=10)
    finally:
        producer.close()
    report = run_sink(settings, "uc", stop_after=6, idle_timeout_s=30, bootstrap=broker.bootstrap)
    assert (report.messages, report.records, report.invalid, report.shadow_rows) == (4, 6, 2, 4)
    assert [row[0] for row in shadow_rows(settings, "uc", "request_id")] == [f"req-{i:06d}" for i in range(1, 5)]
    again = run_sink(settings, "uc", idle_timeout_s=6, bootstrap=broker.bootstrap)
    assert again.records == 0  # committed past every message


@pytest.mark.parametrize("records_per_message", [1, 100], ids=["one-record-messages", "grouped-messages"])
def test_sink_killed_between_write_and_commit_loses_and_duplicates_nothing(
    settings: Settings, broker: Broker, records_per_message: int
) -> None:
    """One record a message (the wire format before grouping, still read) and up to 100 a message (the logger's
    default): the sink never splits a message across batches, so its recovery by offsets holds for both."""
    n = 600
    logger = ShadowLogger(
        broker.bootstrap, "crash", records_per_message=records_per_message, registry=CollectorRegistry()
    )
    for i in range(n):
        assert logger.log(record(i, "crash"))
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n

    env = {**os.environ, "MIGRATE_STATE_DIR": str(settings.state_dir), "MIGRATE_PROJECT_DIR": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", SINK_SCRIPT, broker.bootstrap],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    written = shadow_rows(settings, "crash", "request_id")
    # The committed batch and the uncommitted one are both on disk: two ranges of offsets, each of ≥ 100 records.
    ranges = sorted(
        {tuple(map(int, p.stem.split("-")[-2:])) for p in (settings.shadow_dir / "crash").rglob("*.parquet")}
    )
    assert len(ranges) == 2
    committed_to = ranges[0][1] + 1
    assert ranges[1][0] == committed_to
    assert 200 <= len(written) < n
    if records_per_message == 1:
        assert len(written) == 200
        assert committed_to == 100

    flushed: list[FlushInfo] = []
    report = run_sink(
        settings,
        "crash",
        stop_after=n - len(written) // 2 if records_per_message == 1 else None,
        idle_timeout_s=10,
        bootstrap=broker.bootstrap,
        flush_records=150,
        on_flush=flushed.append,
    )
    assert flushed[0].first_offset == committed_to  # redelivered from the last commit, not after the second batch
    if records_per_message == 1:
        assert report.records == n - 100
    else:
        assert report.messages < report.records  # messages held several records
    rows = shadow_rows(settings, "crash", "request_id")
    ids = [row[0] for row in rows]
    assert len(ids) == n
    assert len(set(ids)) == n
    assert set(ids) == {f"req-{i:06d}" for i in range(n)}


def test_labels_land_beside_the_shadow_log(settings: Settings, broker: Broker) -> None:
    labels = [
        LabelRecord(
            usecase="uc",
            key={"store_id": 1, "product_id": f"p{i}"},
            event_time=T0 + timedelta(hours=i),
            label=float(i % 2),
            source_event_id=f"ev-{i}",
        )
        for i in range(5)
    ]
    assert publish_labels(broker.bootstrap, "uc", labels) == 5
    report = run_sink(settings, "uc", stop_after=5, idle_timeout_s=30, bootstrap=broker.bootstrap)
    assert report.label_rows == 5
    assert "migrate.labels.uc" in report.topics
    rows = duckdb.sql(
        f"SELECT source_event_id, label, key_product_id FROM read_parquet('{settings.labels_dir / 'uc'}/**/*.parquet',"
        " hive_partitioning = true) ORDER BY source_event_id"
    ).fetchall()
    assert rows == [(f"ev-{i}", float(i % 2), f"p{i}") for i in range(5)]


# kafka-python 3.0.12 drops the socket of a refused connection unclosed (kafka/net/inet.py); while the broker is
# down that happens on every reconnect. The same filter must be in pyproject's filterwarnings, because pytest also
# reports the sockets that are only collected after this test.
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_broker_outage_drops_without_blocking_then_resumes(settings: Settings, broker: Broker) -> None:
    registry = CollectorRegistry()
    logger = ShadowLogger(broker.bootstrap, "uc", queue_size=200, max_in_flight=500, timeout_s=1.0, registry=registry)
    try:
        for i in range(50):
            assert logger.log(record(i))
        wait_until(lambda: logger.stats()["sent"] == 50, 15, "the first 50 records to be acknowledged")

        broker.stop()
        accepted = 0
        deepest = 0
        for i in range(50, 3_050):
            accepted += logger.log(record(i))
            stats = logger.stats()
            deepest = max(deepest, stats["queued"])
            assert stats["in_flight"] <= 500
        assert deepest <= 200
        dropped = lambda: sum(logger.stats()[r] for r in ("queue_full", "send_failed", "broker_unavailable"))  # noqa: E731
        wait_until(lambda: dropped() > 0, 15, "records to be dropped while the broker is down")
        assert logger.stats()["sent"] == 50
        assert registry.get_sample_value("migrate_shadow_records_sent_total", {"usecase": "uc"}) == 50

        restarted = start_broker(settings, port=broker.port)  # memory storage: a new, empty broker
        try:
            sent_before = logger.stats()["sent"]
            i = 10_000
            restarted_at = time.monotonic()
            deadline = restarted_at + 45
            # Tansu acknowledges records for a topic it lost in the restart; the logger notices within topic_check_s
            # (1 s here) and reconnects. Keep logging past that, until records arrive again.
            while time.monotonic() < deadline:
                logger.log(record(i))
                i += 1
                time.sleep(0.01)
                settled = time.monotonic() - restarted_at > 3
                if settled and logger.connected and logger.stats()["sent"] > sent_before + 20:
                    break
            assert logger.stats()["sent"] > sent_before + 20, logger.stats()
            last = i - 1
            logger.close(timeout_s=10)

            report = run_sink(settings, "uc", idle_timeout_s=8, bootstrap=restarted.bootstrap)
            ids = {row[0] for row in shadow_rows(settings, "uc", "request_id")}
            assert report.shadow_rows == len(ids)
            assert f"req-{last:06d}" in ids  # logged after the restart, and it arrived
        finally:
            restarted.stop()
    finally:
        logger.close(timeout_s=1)


def test_sink_command_stops_cleanly_on_sigterm_with_everything_consumed_written_and_committed(
    settings: Settings, broker: Broker
) -> None:
    usecase, n = "item_availability", 1_000  # a registered use case: the command looks it up
    logger = ShadowLogger(broker.bootstrap, usecase, registry=CollectorRegistry())
    for i in range(n):
        assert logger.log(record(i, usecase))
    logger.close(timeout_s=10)
    assert logger.stats()["sent"] == n

    env = {
        **os.environ,
        "MIGRATE_STATE_DIR": str(settings.state_dir),
        "MIGRATE_PROJECT_DIR": str(ROOT),
        "MIGRATE_KAFKA_BOOTSTRAP": broker.bootstrap,
        "MIGRATE_SINK_FLUSH_RECORDS": "300",
        "MIGRATE_SINK_FLUSH_INTERVAL_S": "3600",  # the last records are written only when it stops
    }
    command = [sys.executable, "-c", "from migrate.cli.main import main; main()", "sink", usecase]
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as sink:
        try:
            wait_until(lambda: len(rows_or_none(settings, usecase)) >= 900, 120, "three flushes of 300 records")
            sink.send_signal(signal.SIGTERM)
            _, stderr = sink.communicate(timeout=60)
        finally:
            if sink.poll() is None:
                sink.kill()
    assert sink.returncode == 0, stderr[-3000:]
    assert len(rows_or_none(settings, usecase)) == n  # the pending 100 were written on the way out
    consumer = KafkaConsumer(
        bootstrap_servers=broker.bootstrap, group_id=f"migrate-sink-{usecase}", enable_auto_commit=False
    )
    try:
        partition = TopicPartition(f"migrate.shadow.{usecase}", 0)
        committed = consumer.committed(partition, timeout_ms=10_000)
        consumer.assign([partition])
        consumer.seek_to_beginning(partition)
        # Read the topic itself (Tansu's end offset undercounts a partition of multi-record batches): the logger sent
        # up to 100 records a message, and the commit is past the last message.
        offsets: list[int] = []
        for messages in iter(lambda: consumer.poll(timeout_ms=2_000).get(partition), None):
            offsets += [message.offset for message in messages]
        assert 10 <= len(offsets) < n
        assert committed == offsets[-1] + 1
    finally:
        consumer.close()


def rows_or_none(settings: Settings, usecase: str) -> list[tuple[object, ...]]:
    if not any((settings.shadow_dir / usecase).glob("**/*.parquet")):
        return []
    return shadow_rows(settings, usecase, "request_id")


@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_partitions_of_a_topic_are_read_within_the_timeout_even_with_the_broker_gone(
    settings: Settings, broker: Broker
) -> None:
    ensure_topic(broker.bootstrap, "three", 3)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, request_timeout_ms=2_000)
    try:
        assert partitions_for_topic(consumer, "three", broker.bootstrap, timeout_s=5) == {0, 1, 2}
        broker.stop()
        # kafka-python's own consumer.partitions_for_topic("unknown") would wait for metadata forever here.
        with pytest.raises(BrokerError):
            partitions_for_topic(consumer, "unknown", broker.bootstrap, timeout_s=1)
    finally:
        consumer.close(timeout_ms=1_000)
