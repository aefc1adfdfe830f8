"""When an event reached the broker, as the stream processor trusts it: never after its own (simulated) clock."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime

import pytest

from migrate.registry import Registry
from migrate.settings import get_settings
from online.stream.processor import LOG_APPEND_TIME, StreamProcessor

Message = namedtuple("Message", "timestamp timestamp_type")
CREATE_TIME = 0
pytestmark = pytest.mark.unit


def processor(**settings: object) -> StreamProcessor:
    chosen = get_settings(**settings)
    usecase = Registry(chosen.usecases_dir).get("item_availability")
    # No connection is made until run(): the addresses are never dialled here.
    return StreamProcessor(chosen, usecase, bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")


def test_a_producer_timestamp_ahead_of_the_processors_clock_is_capped_at_the_clock() -> None:
    simulated = datetime(2020, 3, 1, tzinfo=UTC)
    stream = processor(clock_start=simulated, clock_speed=1.0)
    a_year_later = datetime(2021, 3, 1, tzinfo=UTC).timestamp() * 1000
    received = stream.received_s(Message(a_year_later, CREATE_TIME))
    assert abs(received - simulated.timestamp()) < 3600  # the simulated clock, not the producer's claim
    earlier = datetime(2020, 2, 1, tzinfo=UTC).timestamp()
    assert stream.received_s(Message(earlier * 1000, CREATE_TIME)) == earlier


def test_the_brokers_log_append_time_is_trusted_as_it_is() -> None:
    stream = processor(clock_start=datetime(2020, 3, 1, tzinfo=UTC))
    appended = datetime(2021, 3, 1, tzinfo=UTC).timestamp()
    assert stream.received_s(Message(appended * 1000, LOG_APPEND_TIME)) == appended


def test_a_missing_timestamp_reads_as_the_processors_clock() -> None:
    stream = processor()
    assert abs(stream.received_s(Message(-1, CREATE_TIME)) - datetime.now(UTC).timestamp()) < 3600
