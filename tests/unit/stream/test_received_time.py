"""When an event reached the broker, as the stream processor trusts it: never after its own (simulated) clock;
a resumed watermark never past that clock plus max_future."""

from __future__ import annotations

from collections import namedtuple
from datetime import UTC, datetime

import pytest

from migrate.settings import get_settings
from online.stream.arrival import LOG_APPEND_TIME, Arrival

Message = namedtuple("Message", "timestamp timestamp_type")
CREATE_TIME = 0
pytestmark = pytest.mark.unit


def arrival_of(**settings: object) -> Arrival:
    return Arrival(get_settings(**settings), max_future_s=300.0)


def test_a_producer_timestamp_ahead_of_the_processors_clock_is_capped_at_the_clock() -> None:
    simulated = datetime(2020, 3, 1, tzinfo=UTC)
    arrival = arrival_of(clock_start=simulated, clock_speed=1.0)
    a_year_later = datetime(2021, 3, 1, tzinfo=UTC).timestamp() * 1000
    received = arrival.received_s(Message(a_year_later, CREATE_TIME))
    assert abs(received - simulated.timestamp()) < 3600  # the simulated clock, not the producer's claim
    earlier = datetime(2020, 2, 1, tzinfo=UTC).timestamp()
    assert arrival.received_s(Message(earlier * 1000, CREATE_TIME)) == earlier


def test_the_brokers_log_append_time_is_trusted_as_it_is() -> None:
    arrival = arrival_of(clock_start=datetime(2020, 3, 1, tzinfo=UTC))
    appended = datetime(2021, 3, 1, tzinfo=UTC).timestamp()
    assert arrival.received_s(Message(appended * 1000, LOG_APPEND_TIME)) == appended


def test_a_missing_timestamp_reads_as_the_processors_clock() -> None:
    arrival = arrival_of()
    assert abs(arrival.received_s(Message(-1, CREATE_TIME)) - datetime.now(UTC).timestamp()) < 3600


def test_a_resumed_watermark_past_the_clock_plus_max_future_is_lowered_to_the_clock() -> None:
    simulated = datetime(2020, 3, 1, tzinfo=UTC)
    arrival = arrival_of(clock_start=simulated)
    now = simulated.timestamp()
    assert abs(arrival.bounded(0, now + 365 * 86400) - now) < 3600
    assert arrival.bounded(0, now - 60) == now - 60  # a watermark behind the clock is kept as it is
    assert arrival.bounded(0, None) == float("-inf")
