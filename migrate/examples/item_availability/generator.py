"""The seeded grocery simulator that fills the offline store of the item-availability example.

Tables written (timestamps are naive ``TIMESTAMP`` holding UTC, see `migrate.batch.offline_store`):

- ``stores(store_id, region, size)`` and ``products(product_id, category, popularity, listed_at)``
- ``store_products(store_id, product_id, listed_at)``: the entity source table
- ``scan_events(event_id, event_time, store_id, product_id, found)``: one shopper looking for one item
- ``item_features_daily``: the batch features, one row per listed store x product per day end

A run replaces these tables in one transaction (idempotent; other tables in the file are left alone) and the
same configuration always writes the same rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field

from migrate.batch.offline_store import open_offline, utc_naive
from migrate.errors import OfflineStoreError
from migrate.examples.item_availability.config import SimulationConfig
from migrate.examples.item_availability.features import FEATURES_TABLE, build_daily_features
from migrate.examples.item_availability.simulation import CATEGORIES, World, build_world, simulate
from migrate.examples.skeleton.generator import SummaryBase, append_events, insert_rows, write_tables

__all__ = ["EVENTS_TABLE", "TABLES", "GenerationSummary", "SimulationConfig", "generate", "iter_events"]

STORE_ID_BASE = 1
PRODUCT_ID_BASE = 1_000_001  # distinct ranges keep a swapped store/product id from silently matching
EVENTS_TABLE = "scan_events"
TABLES = ("stores", "products", "store_products", EVENTS_TABLE, FEATURES_TABLE)

_SCHEMA = """
CREATE OR REPLACE TABLE stores (store_id BIGINT, region VARCHAR, size DOUBLE);
CREATE OR REPLACE TABLE products (product_id BIGINT, category VARCHAR, popularity DOUBLE, listed_at TIMESTAMP);
CREATE OR REPLACE TABLE store_products (store_id BIGINT, product_id BIGINT, listed_at TIMESTAMP);
CREATE OR REPLACE TABLE scan_events (
    event_id VARCHAR, event_time TIMESTAMP, store_id BIGINT, product_id BIGINT, found BOOLEAN
);
"""


class GenerationSummary(SummaryBase):
    """What one generator run wrote."""

    new_products: int
    last_batch_cutoff: datetime = Field(description="02:00 UTC of the final day; new products appear after it.")


def _dimension_tables(world: World) -> tuple[pa.Table, pa.Table, pa.Table]:
    stores = pa.table(
        {
            "store_id": np.arange(world.store_size.size, dtype=np.int64) + STORE_ID_BASE,
            "region": world.store_region.astype(object),
            "size": world.store_size,
        }
    )
    products = pa.table(
        {
            "product_id": np.arange(world.product_popularity.size, dtype=np.int64) + PRODUCT_ID_BASE,
            "category": np.array(CATEGORIES, dtype=object)[world.product_category],
            "popularity": world.product_popularity,
            "listed_at": world.product_listed_at.astype("datetime64[us]"),
        }
    )
    store_products = pa.table(
        {
            "store_id": world.entity_store + STORE_ID_BASE,
            "product_id": world.entity_product + PRODUCT_ID_BASE,
            "listed_at": world.entity_listed_at.astype("datetime64[us]"),
        }
    )
    return stores, products, store_products


def _write(con: duckdb.DuckDBPyConnection, config: SimulationConfig) -> int:
    rng = np.random.default_rng(config.seed)
    world = build_world(config, config.start, rng)
    stores, products, store_products = _dimension_tables(world)
    con.execute(_SCHEMA)
    for name, table in (("stores", stores), ("products", products), ("store_products", store_products)):
        insert_rows(con, name, table)
    append_events(con, EVENTS_TABLE, "scan", _scans(config, world, rng))
    build_daily_features(con, config.start + timedelta(days=1), config.end)
    return int(world.product_is_new.sum())


def _scans(config: SimulationConfig, world: World, rng: np.random.Generator) -> Iterator[pa.Table]:
    """Each simulated day's scans as ``scan_events`` columns (all but the event id)."""
    for day in simulate(config, config.start, world, rng):
        yield pa.table(
            {
                "event_time": day.time.astype("datetime64[us]"),
                "store_id": world.entity_store[day.entity] + STORE_ID_BASE,
                "product_id": world.entity_product[day.entity] + PRODUCT_ID_BASE,
                "found": day.found,
            }
        )


def generate(path: Path, config: SimulationConfig) -> GenerationSummary:
    """Simulate `config` and (re)write the example tables into the DuckDB file at `path`."""
    written = write_tables(path, lambda con: _write(con, config), TABLES, EVENTS_TABLE)
    return GenerationSummary(
        **written.summary_fields(path, config),
        new_products=written.new_entities,
        last_batch_cutoff=config.last_batch_cutoff,
    )


def iter_events(path: Path, start: datetime, end: datetime, *, chunk_rows: int = 10_000) -> Iterator[dict[str, Any]]:
    """Yield the scan events with ``start <= event_time < end`` in event-time order, `chunk_rows` at a time.

    Each event is ``{"event_id", "event_time" (aware UTC), "store_id", "product_id", "found"}``.
    """
    con = open_offline(path)
    try:
        tables = {row[0] for row in con.sql("SELECT table_name FROM information_schema.tables").fetchall()}
        if "scan_events" not in tables:
            raise OfflineStoreError(
                f"offline store {path} has no table 'scan_events'",
                fix="run `migrate demo` or the generator to create it",
            )
        reader = con.sql(
            "SELECT event_id, event_time, store_id, product_id, found FROM scan_events "
            "WHERE event_time >= $start AND event_time < $end ORDER BY event_time, event_id",
            params={"start": utc_naive(start), "end": utc_naive(end)},
        ).to_arrow_reader(chunk_rows)
        for batch in reader:
            for event in batch.to_pylist():
                event["event_time"] = event["event_time"].replace(tzinfo=UTC)
                yield event
    finally:
        con.close()
