"""A use case of flights keyed by their route, each predicted at its scheduled time (the spine) and labelled late by
the `departed` event naming it (``label.from_event``), and its offline tables, for the unit tests of training on a
label that is a later event (the flights trial's `scheduled` and `departed` events)."""

from __future__ import annotations

import duckdb

from migrate.usecase import UseCase


def route_flights(
    available_after: str = "12h",
    *,
    predict_before: str = "0s",
    allow: bool = False,
    trainer: str = "tests.none:train",
) -> UseCase:
    """Flights by route: a `scheduled` event is a prediction, a `departed` event with ``late`` naming it in
    ``flight_ref`` labels it late within `available_after`; `allow` is ``allow_own_outcome_known``."""
    return UseCase.model_validate(
        {
            "name": "flights",
            "description": "Will the flight leave late.",
            "owner": "tests",
            "entity": {
                "keys": [{"name": "route_id", "type": "int"}],
                "source": {"table": "routes", "created_at_column": "created_at"},
            },
            "model": {"trainer": trainer},
            "batch_features": {"table": "route_daily", "timestamp_column": "as_of", "features": [{"name": "late_7d"}]},
            "realtime_features": {
                "event_table": "flight_events",
                "event_time_column": "event_time",
                "events": {
                    "id_field": "event_id",
                    "fields": {
                        "event_id": "str",
                        "event_time": "datetime",
                        "route_id": "int",
                        "kind": "str",
                        "late": "bool",
                        "flight_ref": "str",
                    },
                },
                "features": [{"name": "departed_60m", "aggregation": "count", "window": "60m"}],
            },
            "training": {"predict_before": predict_before, "spine": {"where": {"kind": "scheduled"}}},
            "label": {
                "name": "late",
                "description": "Left late.",
                "kind": "binary",
                "available_after": available_after,
                "from_event": {
                    "where": {"kind": "departed", "late": True},
                    "ref_field": "flight_ref",
                    "allow_own_outcome_known": allow,
                },
            },
            "lookup_table": {"name": "lt_flights"},
            "batch": {"schedule": "0 0 * * *"},
        }
    )


def create_route_tables(con: duckdb.DuckDBPyConnection) -> None:
    """The offline tables of `route_flights`, empty: ``route_daily`` (its batch feature) and ``flight_events``."""
    con.execute("CREATE TABLE route_daily (route_id BIGINT, as_of TIMESTAMP, late_7d DOUBLE)")
    con.execute(
        "CREATE TABLE flight_events (event_id VARCHAR, event_time TIMESTAMP, route_id BIGINT, kind VARCHAR, "
        "late BOOLEAN, flight_ref VARCHAR)"
    )
