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

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import Field

from migrate.examples.delivery_eta.config import SimulationConfig
from migrate.examples.delivery_eta.features import FEATURES_TABLE, build_daily_features
from migrate.examples.delivery_eta.simulation import CUISINES, ZONES, Kitchens, build_kitchens, simulate
from migrate.examples.skeleton.generator import SummaryBase, append_events, insert_rows, write_tables

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


class GenerationSummary(SummaryBase):
    """What one generator run wrote."""

    new_restaurants: int
    last_batch_cutoff: datetime = Field(description="02:00 UTC of the final day; new restaurants open after it.")


def _write(con: duckdb.DuckDBPyConnection, config: SimulationConfig) -> int:
    rng = np.random.default_rng(config.seed)
    kitchens = build_kitchens(config, config.start, config.last_batch_cutoff, rng)
    con.execute(_SCHEMA)
    restaurants = pa.table(
        {
            "restaurant_id": np.arange(kitchens.base_prep.size, dtype=np.int64) + RESTAURANT_ID_BASE,
            "cuisine": np.array(CUISINES, dtype=object)[kitchens.cuisine],
            "zone": np.array(ZONES, dtype=object)[kitchens.zone],
            "created_at": kitchens.created_at.astype("datetime64[us]"),
        }
    )
    insert_rows(con, "restaurants", restaurants)
    append_events(con, EVENTS_TABLE, "dlv", _deliveries(config, kitchens, rng))
    build_daily_features(con, config.start + timedelta(days=1), config.end)
    return int(kitchens.is_new.sum())


def _deliveries(config: SimulationConfig, kitchens: Kitchens, rng: np.random.Generator) -> Iterator[pa.Table]:
    """Each simulated day's deliveries as ``delivery_events`` columns (all but the event id)."""
    end = np.datetime64(config.end.replace(tzinfo=None), "us")
    for day in simulate(config, config.start, kitchens, rng):
        keep = day.delivered_at < end  # the final evening's late deliveries fall outside the simulated days
        yield pa.table(
            {
                "event_time": day.delivered_at[keep].astype("datetime64[us]"),
                "restaurant_id": day.restaurant[keep] + RESTAURANT_ID_BASE,
                "prep_minutes": day.prep_minutes[keep],
                "distance_km": day.distance_km[keep],
                "delivery_minutes": day.delivery_minutes[keep],
            }
        )


def generate(path: Path, config: SimulationConfig) -> GenerationSummary:
    """Simulate `config` and (re)write the example's three tables in the DuckDB file at `path` (others stay)."""
    written = write_tables(path, lambda con: _write(con, config), TABLES, EVENTS_TABLE)
    return GenerationSummary(
        **written.summary_fields(path, config),
        new_restaurants=written.new_entities,
        last_batch_cutoff=config.last_batch_cutoff,
    )
