"""A use case of flights keyed by their origin airport, and its event table, for the unit tests of events that
carry a value not known yet (the flights trial's `scheduled` and `departed` events)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from migrate.usecase import UseCase


def origin_flights(
    fields: dict[str, str],
    features: list[dict[str, Any]],
    *,
    groups: Sequence[dict[str, Any]] = (),
    context: Sequence[dict[str, Any]] = (),
    **events: Any,
) -> UseCase:
    """Flights by origin: events with `fields` (and `events`' settings, e.g. ``allowed_lateness``), `features` over
    them and feature `groups` (keyed by `context` values), a daily batch feature and a label a day later."""
    return UseCase.model_validate(
        {
            "name": "flights",
            "description": "Flights that leave late.",
            "owner": "tests",
            "entity": {
                "keys": [{"name": "origin", "type": "str"}],
                "source": {"table": "airports", "created_at_column": "created_at"},
            },
            "model": {"trainer": "tests.none:train"},
            "batch_features": {"table": "daily", "timestamp_column": "as_of", "features": [{"name": "late_7d"}]},
            "realtime_features": {
                "event_table": "flight_events",
                "event_time_column": "event_time",
                "events": {"id_field": "event_id", "fields": fields, **events},
                "features": features,
                "groups": list(groups),
            },
            "context": list(context),
            "label": {"name": "late", "description": "Left late.", "kind": "binary", "available_after": "1d"},
            "lookup_table": {"name": "lt_flights"},
            "batch": {"schedule": "0 2 * * *"},
        }
    )


def flight_events(path: Path, last_column: str, rows: list[tuple[Any, ...]]) -> duckdb.DuckDBPyConnection:
    """An offline store at `path` whose ``flight_events`` holds `rows` (id, time, origin, kind, then the column
    declared by `last_column`, e.g. ``"delay DOUBLE"``)."""
    con = duckdb.connect(str(path))
    columns = f"event_id VARCHAR, event_time TIMESTAMP, origin VARCHAR, kind VARCHAR, {last_column}"
    con.execute(f"CREATE TABLE flight_events ({columns})")
    con.executemany("INSERT INTO flight_events VALUES (?, ?, ?, ?, ?)", [list(row) for row in rows])
    return con
