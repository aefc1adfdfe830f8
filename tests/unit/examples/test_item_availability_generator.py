"""The grocery simulator: deterministic, idempotent, realistic enough to need real-time features."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from migrate.batch.offline_store import open_offline, utc_naive
from migrate.examples.item_availability.generator import GenerationSummary, SimulationConfig, generate, iter_events

TABLES = {
    "stores": "store_id",
    "products": "product_id",
    "store_products": "store_id, product_id",
    "scan_events": "event_id",
    "item_features_daily": "as_of, store_id, product_id",
}


def _tables(path: Path) -> dict[str, pa.Table]:
    con = open_offline(path)
    try:
        return {
            name: con.sql(f"SELECT * FROM {name} ORDER BY {order}").to_arrow_table() for name, order in TABLES.items()
        }
    finally:
        con.close()


def test_schema_is_the_contract(small_store: GenerationSummary) -> None:
    con = open_offline(small_store.path)
    try:

        def columns(table: str) -> dict[str, str]:
            return {str(r[0]): str(r[1]) for r in con.sql(f"DESCRIBE {table}").fetchall()}

        assert columns("stores") == {"store_id": "BIGINT", "region": "VARCHAR", "size": "DOUBLE"}
        assert columns("products") == {
            "product_id": "BIGINT",
            "category": "VARCHAR",
            "popularity": "DOUBLE",
            "listed_at": "TIMESTAMP",
        }
        assert columns("store_products") == {"store_id": "BIGINT", "product_id": "BIGINT", "listed_at": "TIMESTAMP"}
        assert columns("scan_events") == {
            "event_id": "VARCHAR",
            "event_time": "TIMESTAMP",
            "store_id": "BIGINT",
            "product_id": "BIGINT",
            "found": "BOOLEAN",
        }
        features = columns("item_features_daily")
        assert list(features)[:3] == ["store_id", "product_id", "as_of"]
        assert features["as_of"] == "TIMESTAMP"
        assert all(features[n] == "DOUBLE" for n in list(features)[3:])
    finally:
        con.close()


def test_same_seed_same_tables_other_seed_other_events(
    small_store: GenerationSummary, small_config: SimulationConfig, tmp_path: Path
) -> None:
    again = generate(tmp_path / "again.duckdb", small_config)
    other = generate(tmp_path / "other.duckdb", small_config.model_copy(update={"seed": small_config.seed + 1}))
    first, second = _tables(small_store.path), _tables(tmp_path / "again.duckdb")
    third = _tables(tmp_path / "other.duckdb")
    for name in TABLES:
        assert first[name].num_rows > 0, name
        assert first[name].equals(second[name]), name
    assert not first["scan_events"].equals(third["scan_events"])
    assert again.rows == small_store.rows
    assert other.rows != small_store.rows


def test_rerun_overwrites_instead_of_appending(tmp_path: Path) -> None:
    path = tmp_path / "offline.duckdb"
    config = SimulationConfig(seed=3, stores=2, products=10, days=2)
    first = generate(path, config)
    second = generate(path, config)
    assert first.rows == second.rows
    con = open_offline(path)
    try:
        total, distinct = con.sql("SELECT count(*), count(DISTINCT event_id) FROM scan_events").fetchall()[0]
    finally:
        con.close()
    assert total == distinct == second.rows["scan_events"]


def test_availability_moves_during_the_day(small_store: GenerationSummary) -> None:
    con = open_offline(small_store.path)
    try:
        # Shelves are full after the 05:00 delivery and emptied by the evening peak.
        morning, evening = con.sql("""
            SELECT avg(found::INT) FILTER (WHERE hour(event_time) BETWEEN 7 AND 9),
                   avg(found::INT) FILTER (WHERE hour(event_time) BETWEEN 19 AND 21)
            FROM scan_events""").fetchall()[0]
        swings = con.sql("""
            SELECT count(*) FROM (
                SELECT store_id, product_id, date_trunc('day', event_time) AS day,
                       avg(found::INT) FILTER (WHERE hour(event_time) < 12) AS am,
                       avg(found::INT) FILTER (WHERE hour(event_time) >= 17) AS pm,
                       count(*) FILTER (WHERE hour(event_time) < 12) AS n_am,
                       count(*) FILTER (WHERE hour(event_time) >= 17) AS n_pm
                FROM scan_events GROUP BY ALL)
            WHERE n_am >= 3 AND n_pm >= 3 AND am - pm >= 0.5""").fetchall()[0][0]
    finally:
        con.close()
    assert morning - evening > 0.05
    assert swings >= 5  # some shelves go from mostly found to mostly empty within one day


def test_new_products_are_listed_after_the_last_batch_run_and_scanned(small_store: GenerationSummary) -> None:
    summary = small_store
    cutoff = utc_naive(summary.last_batch_cutoff)
    assert summary.last_batch_cutoff == datetime(2026, 11, 4, 2, tzinfo=UTC)
    con = open_offline(small_store.path)
    try:
        new = con.sql("SELECT count(*) FROM products WHERE listed_at > $c", params={"c": cutoff}).fetchall()[0][0]
        scanned = con.sql(
            """
            SELECT count(DISTINCT e.product_id) FROM scan_events e JOIN products p USING (product_id)
            WHERE p.listed_at > $c""",
            params={"c": cutoff},
        ).fetchall()[0][0]
        before_listing = con.sql("""
            SELECT count(*) FROM scan_events e JOIN store_products sp USING (store_id, product_id)
            WHERE e.event_time < sp.listed_at""").fetchall()[0][0]
    finally:
        con.close()
    assert new == summary.new_products >= 1
    assert scanned >= 1
    assert before_listing == 0


def test_iter_events_streams_one_range_in_order(small_store: GenerationSummary) -> None:
    start = small_store.start + timedelta(days=1, hours=12)
    end = start + timedelta(hours=6)
    events = list(iter_events(small_store.path, start, end, chunk_rows=50))
    con = open_offline(small_store.path)
    try:
        expected = con.sql(
            "SELECT count(*) FROM scan_events WHERE event_time >= $s AND event_time < $e",
            params={"s": utc_naive(start), "e": utc_naive(end)},
        ).fetchall()[0][0]
    finally:
        con.close()
    assert len(events) == expected > 50
    assert set(events[0]) == {"event_id", "event_time", "store_id", "product_id", "found"}
    times = [e["event_time"] for e in events]
    assert times == sorted(times)
    assert start <= times[0]
    assert times[-1] < end
    assert all(t.tzinfo is not None for t in times)


@pytest.mark.parametrize(
    "change", [{"start": datetime(2026, 11, 1, 3, tzinfo=UTC)}, {"step_minutes": 7}, {"days": 1}, {"unknown": 1}]
)
def test_config_rejects_inconsistent_values(small_config: SimulationConfig, change: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        SimulationConfig.model_validate({**small_config.model_dump(), **change})
