"""An offline store whose timestamps are local wall-clock times (TIMESTAMP, no zone), declared by the use case's
``offline_time_zone``: every read gives what the same data stored in UTC gives, computed independently (the local
copy is written with Python's zoneinfo), across a daylight-saving change. Undeclared, the same local data is read an
hour wrong in winter and two in summer: the frames differ, so the comparison can fail."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
import pyarrow as pa
import pytest
from test_no_leakage import leaky_usecase

from comparisons.comparison import _entities
from migrate.batch.event_history import iter_events, online_training_frame, realtime_features_at
from migrate.batch.offline_store import (
    batch_features_at,
    open_offline,
    prediction_requests,
    snapshot_features,
    training_frame,
)
from migrate.batch.offline_zone import localize
from migrate.usecase import UseCase

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")
START = datetime(2026, 3, 25, tzinfo=UTC)  # the clocks go forward on 2026-03-29 at 02:00 in Paris
DAYS = 8
CUSTOMERS = 60
REGIONS = ("north", "south")


def _local(moment: datetime) -> datetime:
    """A UTC instant as the naive wall-clock time a Paris system would have written."""
    return moment.astimezone(PARIS).replace(tzinfo=None)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _write(path: Path, wall: Any) -> None:
    rng = random.Random(7)
    events = []
    for n in range(CUSTOMERS * 8):
        customer = rng.randrange(CUSTOMERS)
        when = START + timedelta(days=1, seconds=rng.uniform(0, (DAYS - 1) * 86_400))
        events.append(
            (f"e{n:05d}", wall(when), customer, REGIONS[customer % 2], int(rng.random() < 0.3), rng.random(), when.hour)
        )
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE customers (customer_id BIGINT, created_at TIMESTAMP)")
        con.executemany("INSERT INTO customers VALUES (?, ?)", [(c, wall(START)) for c in range(CUSTOMERS)])
        con.execute("CREATE TABLE customer_daily (customer_id BIGINT, as_of TIMESTAMP, tenure_days DOUBLE)")
        con.executemany(
            "INSERT INTO customer_daily VALUES (?, ?, ?)",
            [
                (c, wall(START + timedelta(days=d, hours=1)), float(d + c % 7))
                for c in range(CUSTOMERS)
                for d in range(DAYS + 1)
            ],
        )
        con.execute(
            "CREATE TABLE events (event_id VARCHAR, event_time TIMESTAMP, customer_id BIGINT, region VARCHAR, "
            "outcome INTEGER, leak DOUBLE, hour INTEGER)"
        )
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", events)
        # The past requests carry the use case's required context value (region), as serving requires it.
        con.execute("CREATE TABLE requests (customer_id BIGINT, request_time TIMESTAMP, region VARCHAR)")
        con.executemany(
            "INSERT INTO requests VALUES (?, ?, ?)",
            [(c, wall(START + timedelta(days=2, hours=c)), REGIONS[c % 2]) for c in range(CUSTOMERS)],
        )


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("zones")
    utc, paris = folder / "utc.duckdb", folder / "paris.duckdb"
    _write(utc, _utc)
    _write(paris, _local)
    return utc, paris


def _in(zone: str) -> UseCase:
    return leaky_usecase("10m").model_copy(update={"offline_time_zone": zone})


def _same(value: Any) -> Any:
    """`value` with NaN as None (NaN is unequal to itself), for comparing reads."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _same(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_same(v) for v in value]
    return value


def _reads(path: Path, usecase: UseCase) -> dict[str, Any]:
    end = START + timedelta(days=DAYS + 1)
    spine = pa.table(
        {
            "customer_id": pa.array(list(range(CUSTOMERS)), pa.int64()),
            "region": [REGIONS[c % 2] for c in range(CUSTOMERS)],
            "prediction_time": pa.array(
                [START + timedelta(days=3, hours=c, minutes=7) for c in range(CUSTOMERS)], pa.timestamp("us", tz="UTC")
            ),
        }
    )
    with open_offline(path) as con:
        return _same(
            {
                "training": training_frame(con, usecase, START, end).to_pylist(),
                "online training": online_training_frame(con, usecase, START, end).to_pylist(),
                "events": list(iter_events(con, usecase, START, end)),
                "snapshot": snapshot_features(con, usecase, START + timedelta(days=4, hours=12)).to_pylist(),
                "batch as of": batch_features_at(con, usecase, spine).to_pylist(),
                "windows as of": realtime_features_at(con, usecase, spine, end).tolist(),
                "requests": prediction_requests(con, usecase, START, end, table="requests").to_pylist(),
            }
        )


def test_local_wall_clock_times_read_in_their_zone_give_what_utc_gives(stores: tuple[Path, Path]) -> None:
    utc, paris = stores
    expected = _reads(utc, _in("UTC"))
    assert all(expected.values()), {k: len(v) for k, v in expected.items()}  # every read holds rows
    got = _reads(paris, _in("Europe/Paris"))
    for name, rows in expected.items():
        assert got[name] == rows, name
    # Undeclared, the local store is read as if it were UTC: an hour or two off, and the frames differ.
    wrong = _reads(paris, _in("UTC"))
    assert wrong["events"] != expected["events"] and wrong["training"] != expected["training"]
    first = wrong["events"][0]["event_time"] - expected["events"][0]["event_time"]
    assert first == timedelta(hours=1)  # winter: Paris is UTC+1


def test_the_comparator_reads_the_entity_source_in_the_same_zone(stores: tuple[Path, Path]) -> None:
    _, paris = stores

    class Rows:
        con = duckdb.connect()

    class Settings:
        offline_store_path = paris

    Rows.con.execute("SET TimeZone = 'UTC'")
    assert _entities(Rows(), _in("Europe/Paris"), Settings())  # type: ignore[arg-type]
    created = {t for (t,) in Rows.con.execute("SELECT DISTINCT created_at FROM entities").fetchall()}
    assert created == {START.replace(tzinfo=None)}


def test_an_unknown_zone_is_refused_naming_it_and_the_fix() -> None:
    with pytest.raises(ValueError, match=r"'Mars/Olympus' is not a time zone .* IANA name such as"):
        _in("UTC").model_validate({**_in("UTC").model_dump(), "offline_time_zone": "Mars/Olympus"})


def test_localize_is_idempotent_and_leaves_utc_alone(stores: tuple[Path, Path]) -> None:
    utc, paris = stores
    with open_offline(utc) as con:
        localize(con, _in("UTC"))
        assert con.execute("SELECT count(*) FROM duckdb_views() WHERE temporary AND NOT internal").fetchall()[0][0] == 0
    with open_offline(paris) as con:
        localize(con, _in("Europe/Paris"))
        localize(con, _in("Europe/Paris"))
        views = {
            v
            for (v,) in con.execute("SELECT view_name FROM duckdb_views() WHERE temporary AND NOT internal").fetchall()
        }
        assert views == {"customers", "customer_daily", "events"}
