"""The seeded food-delivery simulator that fills the offline store of the delivery-ETA example.

Tables written (timestamps are naive ``TIMESTAMP`` holding UTC, see `migrate.batch.offline_store`):

- ``restaurants(restaurant_id, cuisine, zone, created_at)``: the entity source table
- ``delivery_events(event_id, event_time, restaurant_id, prep_minutes, distance_km, delivery_minutes)``: one
  delivered order, timed when it reached the customer (the moment its delivery time is known)
- ``eta_features_daily``: the batch features, one row per restaurant per day end

A run replaces only these three tables, in one transaction, so it shares a DuckDB file with the other examples;
the same configuration always writes the same rows.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from migrate.batch.offline_store import open_offline, utc_aware
from migrate.examples.delivery_eta.features import FEATURES_TABLE, build_daily_features
from migrate.examples.delivery_eta.simulation import CUISINES, ZONES, build_kitchens, last_batch_cutoff, simulate

__all__ = ["EVENTS_TABLE", "TABLES", "GenerationSummary", "SimulationConfig", "generate"]

RESTAURANT_ID_BASE = 70_001  # a range of its own: an id from another example never matches by accident
EVENTS_TABLE = "delivery_events"
TABLES = ("restaurants", EVENTS_TABLE, FEATURES_TABLE)

_SCHEMA = """
CREATE OR REPLACE TABLE restaurants (restaurant_id BIGINT, cuisine VARCHAR, zone VARCHAR, created_at TIMESTAMP);
CREATE OR REPLACE TABLE delivery_events (
    event_id VARCHAR, event_time TIMESTAMP, restaurant_id BIGINT,
    prep_minutes DOUBLE, distance_km DOUBLE, delivery_minutes DOUBLE
);
"""


class SimulationConfig(BaseModel):
    """How many restaurants to simulate, for how long, and how often kitchens and roads slow down."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 42
    restaurants: int = Field(default=40, ge=1)
    days: int = Field(default=14, ge=2, description="At least two, so a batch run precedes the final day.")
    start: datetime = Field(default=datetime(2026, 11, 1, tzinfo=UTC), description="Midnight UTC.")
    step_minutes: int = Field(default=5, ge=1, le=30)
    daily_orders: float = Field(default=60.0, gt=0, description="Mean orders per restaurant and day.")
    slowdowns_per_day: float = Field(default=0.6, ge=0, description="Kitchen slowdowns (1-2 h) per restaurant-day.")
    rain_per_day: float = Field(default=0.5, ge=0, description="City-wide rain spells (1-3 h, slower rides) per day.")
    new_restaurant_share: float = Field(default=0.05, ge=0, le=0.5, description="Opened after the last batch run.")

    @field_validator("start")
    @classmethod
    def _midnight_utc(cls, value: datetime) -> datetime:
        value = utc_aware(value)
        if value != value.replace(hour=0, minute=0, second=0, microsecond=0):
            raise ValueError("start must be midnight UTC, so that days and batch runs line up")
        return value

    @model_validator(mode="after")
    def _step_divides_load_window(self) -> SimulationConfig:
        if 30 % self.step_minutes:
            raise ValueError(f"step_minutes={self.step_minutes} must divide 30 (the kitchen's load window)")
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
    new_restaurants: int
    last_batch_cutoff: datetime = Field(description="02:00 UTC of the final day; new restaurants open after it.")


def _write(con: duckdb.DuckDBPyConnection, config: SimulationConfig) -> int:
    rng = np.random.default_rng(config.seed)
    cutoff = last_batch_cutoff(config.start, config.days)
    kitchens = build_kitchens(config, config.start, cutoff, rng)
    con.execute(_SCHEMA)
    restaurants = pa.table(
        {
            "restaurant_id": np.arange(kitchens.base_prep.size, dtype=np.int64) + RESTAURANT_ID_BASE,
            "cuisine": np.array(CUISINES, dtype=object)[kitchens.cuisine],
            "zone": np.array(ZONES, dtype=object)[kitchens.zone],
            "created_at": kitchens.created_at.astype("datetime64[us]"),
        }
    )
    con.register("_rows", restaurants)
    con.execute("INSERT INTO restaurants SELECT * FROM _rows")
    con.unregister("_rows")
    end = np.datetime64(config.end.replace(tzinfo=None), "us")
    written = 0
    for day in simulate(config, config.start, kitchens, rng):
        keep = day.delivered_at < end  # the final evening's late deliveries fall outside the simulated days
        batch = pa.table(
            {
                "seq": np.arange(written, written + int(keep.sum()), dtype=np.int64),
                "event_time": day.delivered_at[keep].astype("datetime64[us]"),
                "restaurant_id": day.restaurant[keep] + RESTAURANT_ID_BASE,
                "prep_minutes": day.prep_minutes[keep],
                "distance_km": day.distance_km[keep],
                "delivery_minutes": day.delivery_minutes[keep],
            }
        )
        con.register("_events", batch)
        con.execute(
            "INSERT INTO delivery_events SELECT printf('dlv-%010d', seq), event_time, restaurant_id, prep_minutes, "
            "distance_km, delivery_minutes FROM _events"
        )
        con.unregister("_events")
        written += batch.num_rows
    build_daily_features(con, config.start + timedelta(days=1), config.end)
    return int(kitchens.is_new.sum())


def generate(path: Path, config: SimulationConfig) -> GenerationSummary:
    """Simulate `config` and (re)write the example's three tables in the DuckDB file at `path` (others stay)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = open_offline(path, read_only=False)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            new_restaurants = _write(con, config)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        rows = {name: int(con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]) for name in TABLES}
        first, last = con.sql(f"SELECT min(event_time), max(event_time) FROM {EVENTS_TABLE}").fetchall()[0]
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
        new_restaurants=new_restaurants,
        last_batch_cutoff=last_batch_cutoff(config.start, config.days),
    )
