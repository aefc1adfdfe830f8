"""Training leaves out the rows whose context serving refuses, and counts them.

Found reading training against serving: a request whose context is outside what the use case declares (an
amount above its ``max``, a NaN, a required value missing) gets a 422 online and no prediction, but its event
still made a training row: the online model learned from requests it is never asked. `servable_rows` applies
serving's own rule (`migrate.request_rules.context_errors`, which online/serving/validation.py uses) to the
training rows; the expectations below are written by hand from the use case's declaration.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pyarrow as pa
import pytest

from migrate.batch.event_history import refused_request_metrics, servable_rows
from migrate.usecase import UseCase
from tests.unit.origin_flights import origin_flights

pytestmark = pytest.mark.unit

FIELDS = {"event_id": "str", "event_time": "datetime", "origin": "str", "kind": "str", "delay": "float"}


def usecase() -> UseCase:
    return origin_flights(
        FIELDS,
        [{"name": "events_60m", "aggregation": "count", "window": "60m"}],
        context=[
            {"name": "delay", "type": "float", "min": 0, "max": 60},
            {"name": "gate", "type": "int", "required": False},
            {"name": "kind", "type": "str"},
        ],
    )


def test_rows_serving_refuses_are_left_out_and_counted() -> None:
    rows = [  # (delay, gate, kind, kept?) by hand from the declaration above
        (5.0, 3, "departed", True),
        (0.0, None, "departed", True),  # gate is optional
        (60.0, 12, "scheduled", True),  # the bounds are inclusive
        (-1.0, 3, "departed", False),  # below min
        (61.0, 3, "departed", False),  # above max
        (math.nan, 3, "departed", False),  # not a finite number
        (math.inf, 3, "departed", False),
        (None, 3, "departed", False),  # a required value missing
        (5.0, 3, None, False),  # a required string missing
        (5.0, 2.0**64, "departed", False),  # beyond the signed 64-bit range
    ]
    frame = pa.table(
        {
            "row": list(range(len(rows))),
            "delay": pa.array([r[0] for r in rows], pa.float64()),
            "gate": pa.array([r[1] for r in rows], pa.float64()),  # as DOUBLE: 2**64 fits no BIGINT
            "kind": [r[2] for r in rows],
        }
    )
    kept, refused = servable_rows(usecase(), frame)
    assert kept.column("row").to_pylist() == [i for i, r in enumerate(rows) if r[3]]
    assert refused == sum(1 for r in rows if not r[3]) == 7
    assert refused_request_metrics(kept) == {"refused_requests": 7.0}


def test_a_whole_number_is_an_integer_and_a_fraction_is_not() -> None:
    frame = pa.table({"delay": [1.0, 1.0, 1.0], "gate": [4.0, 4.5, None], "kind": ["a", "b", "c"]})
    kept, refused = servable_rows(usecase(), frame)
    assert kept.column("gate").to_pylist() == [4.0, None] and refused == 1


def test_a_decimal_or_integer_column_is_read_as_the_number_a_request_carries() -> None:
    frame = pa.table(
        {
            "delay": pa.array([Decimal("12.50"), Decimal("75.00")], pa.decimal128(5, 2)),
            "gate": pa.array([7, 8], pa.int64()),
            "kind": ["a", "b"],
        }
    )
    kept, refused = servable_rows(usecase(), frame)
    assert kept.column("delay").to_pylist() == [Decimal("12.50")] and refused == 1


def test_no_context_declared_keeps_every_row() -> None:
    plain = origin_flights(FIELDS, [{"name": "events_60m", "aggregation": "count", "window": "60m"}])
    frame = pa.table({"delay": [math.nan, -5.0]})
    kept, refused = servable_rows(plain, frame)
    assert kept.num_rows == 2 and refused == 0 and refused_request_metrics(kept) == {"refused_requests": 0.0}


def test_a_column_of_another_type_is_refused_as_serving_refuses_that_type() -> None:
    """A number stored as text (``"12.5"``) is a string in a request's JSON: serving answers 422, so no row."""
    frame = pa.table({"delay": ["12.5", "7"], "gate": [1, 2], "kind": pa.array([10, 11], pa.int64())})
    kept, refused = servable_rows(usecase(), frame)
    assert kept.num_rows == 0 and refused == 2
    ids = pa.table({"delay": [12.5], "gate": [1], "kind": pa.array([10], pa.int64())})  # an id stored as a number
    assert servable_rows(usecase(), ids)[1] == 0


def test_an_integer_column_is_checked_exactly_as_the_json_integer_a_request_carries() -> None:
    """Serving compares a JSON integer with its bounds exactly; read as a float, 2**53 + 1 became 2**53."""
    edge = origin_flights(
        FIELDS,
        [{"name": "events_60m", "aggregation": "count", "window": "60m"}],
        context=[{"name": "gate", "type": "int", "max": 2**53}],
    )
    frame = pa.table({"gate": pa.array([2**53, 2**53 + 1, 2**63 - 1], pa.int64())})
    kept, refused = servable_rows(edge, frame)
    assert kept.column("gate").to_pylist() == [2**53] and refused == 2
    unsigned = pa.table({"gate": pa.array([7, 2**63], pa.uint64())})  # beyond the signed 64-bit range: refused
    assert servable_rows(edge, unsigned)[0].column("gate").to_pylist() == [7]
