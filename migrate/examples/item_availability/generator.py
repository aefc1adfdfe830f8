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
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from migrate.batch.offline_store import open_offline, utc_aware, utc_naive
from migrate.errors import OfflineStoreError
from migrate.examples.item_availability.features import FEATURES_TABLE, build_daily_features
from migrate.examples.item_availability.simulation import CATEGORIES, World, build_world, last_batch_cutoff, simulate

__all__ = ["GenerationSummary", "SimulationConfig", "generate", "iter_events"]

STORE_ID_BASE = 1
PRODUCT_ID_BASE = 1_000_001  # distinct ranges keep a swapped store/product id from silently matching

_SCHEMA = """
CREATE OR REPLACE TABLE stores (store_id BIGINT, region VARCHAR, size DOUBLE);
CREATE OR REPLACE TABLE products (product_id BIGINT, category VARCHAR, popularity DOUBLE, listed_at TIMESTAMP);
CREATE OR REPLACE TABLE store_products (store_id BIGINT, product_id BIGINT, listed_at TIMESTAMP);
CREATE OR REPLACE TABLE scan_events (
    event_id VARCHAR, event_time TIMESTAMP, store_id BIGINT, product_id BIGINT, found BOOLEAN
);
"""


class SimulationConfig(BaseModel):
    """How big a world to simulate, for how long, and how its shelves behave."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 42
    stores: int = Field(default=20, ge=1)
    products: int = Field(default=400, ge=1)
    days: int = Field(default=14, ge=2, description="At least two, so a batch run precedes the final day.")
    start: datetime = Field(default=datetime(2026, 11, 1, tzinfo=UTC), description="Midnight UTC.")
    step_minutes: int = Field(default=10, ge=1, le=60)
    new_product_share: float = Field(default=0.03, ge=0, le=0.5, description="Listed after the last batch run.")
    daily_demand: float = Field(default=12.0, gt=0, description="Units wanted per day at popularity 1, size 1.")
    scan_share: float = Field(default=0.35, gt=0, le=1, description="Shoppers who scan the item in the app.")
    restocks_per_day: float = Field(default=1.2, ge=0, description="Mid-day restock rounds per store and day.")
    sellout_found_probability: float = Field(default=0.07, ge=0, le=1, description="Found rate of an empty shelf.")
    phantom_share: float = Field(default=0.02, ge=0, le=1, description="Shelves empty although stock is counted.")

    @field_validator("start")
    @classmethod
    def _midnight_utc(cls, value: datetime) -> datetime:
        value = utc_aware(value)
        if value != value.replace(hour=0, minute=0, second=0, microsecond=0):
            raise ValueError("start must be midnight UTC, so that days and batch runs line up")
        return value

    @model_validator(mode="after")
    def _step_divides_day(self) -> SimulationConfig:
        if 1440 % self.step_minutes:
            raise ValueError(f"step_minutes={self.step_minutes} must divide a day (1440 minutes)")
        return self

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)


class GenerationSummary(BaseModel):
    """What one generator run wrote."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    rows: dict[str, int]
    start: datetime
    end: datetime
    first_event: datetime | None
    last_event: datetime | None
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
        con.register("_rows", table)
        con.execute(f"INSERT INTO {name} SELECT * FROM _rows")
        con.unregister("_rows")
    written = 0
    for day in simulate(config, config.start, world, rng):
        # One day at a time keeps memory bounded by a day of events, whatever the number of days.
        batch = pa.table(
            {
                "seq": np.arange(written, written + day.time.size, dtype=np.int64),
                "event_time": day.time.astype("datetime64[us]"),
                "store_id": world.entity_store[day.entity] + STORE_ID_BASE,
                "product_id": world.entity_product[day.entity] + PRODUCT_ID_BASE,
                "found": day.found,
            }
        )
        con.register("_events", batch)
        con.execute(
            "INSERT INTO scan_events SELECT printf('scan-%010d', seq), event_time, store_id, product_id, found "
            "FROM _events"
        )
        con.unregister("_events")
        written += day.time.size
    build_daily_features(con, config.start + timedelta(days=1), config.end)
    return int(world.product_is_new.sum())


def generate(path: Path, config: SimulationConfig) -> GenerationSummary:
    """Simulate `config` and (re)write the example tables into the DuckDB file at `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = open_offline(path, read_only=False)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            new_products = _write(con, config)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        rows = {
            name: _count(con, name) for name in ("stores", "products", "store_products", "scan_events", FEATURES_TABLE)
        }
        first, last = con.sql("SELECT min(event_time), max(event_time) FROM scan_events").fetchall()[0]
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return GenerationSummary(
        path=path,
        rows=rows,
        start=config.start,
        end=config.end,
        first_event=None if first is None else utc_aware(first),
        last_event=None if last is None else utc_aware(last),
        new_products=new_products,
        last_batch_cutoff=last_batch_cutoff(config.start, config.days),
    )


def _count(con: duckdb.DuckDBPyConnection, table: str) -> int:
    return int(con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])


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
