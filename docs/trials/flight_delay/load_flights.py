"""Load a sample of the US DOT on-time flights (vega-datasets flights-3m) into the offline store.

python -m flight_delay.load_flights [PARQUET] [--origins SLC,PDX] [--until 0216]

Each flight gives two events: `scheduled` at its scheduled departure (the prediction: spine, id = flight_ref) and
`departed` at scheduled + delay, the instant its delay becomes known (carries `delay` and `late` = delay > 15,
and names the scheduled event in `flight_ref`: the label event). Times: the data's local scheduled times, read as
UTC (the source has no time zone), year 2001.
"""

from __future__ import annotations

import sys

import duckdb

from migrate.settings import get_settings


def load(parquet: str, origins: list[str], until: str, con: duckdb.DuckDBPyConnection) -> None:
    origin_list = ", ".join(f"'{o}'" for o in origins)
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE flights AS
        SELECT printf('f-%07d', row_number() OVER (ORDER BY date, origin, destination, delay)) AS flight_ref,
               strptime('2001' || date, '%Y%m%d%H%M') AS scheduled, delay::DOUBLE AS delay,
               distance::DOUBLE AS distance, origin, destination
        FROM read_parquet('{parquet}') WHERE origin IN ({origin_list}) AND date < '{until}'
    """)
    con.execute("""
        CREATE OR REPLACE TABLE flight_delay_events AS
        SELECT flight_ref AS event_id, scheduled AS event_time, origin, destination, 'scheduled' AS kind,
               NULL::DOUBLE AS delay, NULL::BOOLEAN AS late, hour(scheduled)::BIGINT AS hour, flight_ref
        FROM flights
        UNION ALL
        SELECT flight_ref || '-d', scheduled + to_minutes(delay::BIGINT), origin, destination, 'departed',
               delay, delay > 15, hour(scheduled)::BIGINT, flight_ref
        FROM flights
    """)
    con.execute("""
        CREATE OR REPLACE TABLE flight_delay_routes AS
        SELECT origin, destination, min(scheduled) AS created_at FROM flights GROUP BY ALL
    """)
    # One row per route per midnight, from the departures KNOWN strictly before it (departure = scheduled + delay).
    con.execute("""
        CREATE OR REPLACE TABLE flight_delay_features_daily AS
        WITH days AS (SELECT unnest(generate_series(date_trunc('day', min(scheduled)) + INTERVAL 1 DAY,
                                                    date_trunc('day', max(scheduled)) + INTERVAL 1 DAY,
                                                    INTERVAL 1 DAY)) AS as_of FROM flights),
             dep AS (SELECT origin, destination, scheduled + to_minutes(delay::BIGINT) AS known_at, delay, distance
                     FROM flights)
        SELECT r.origin, r.destination, d.as_of,
               avg((dep.delay > 15)::INT) FILTER (WHERE dep.known_at >= d.as_of - INTERVAL 7 DAY) AS late_rate_7d,
               avg((dep.delay > 15)::INT) AS late_rate_28d,
               avg(dep.delay) FILTER (WHERE dep.known_at >= d.as_of - INTERVAL 7 DAY) AS mean_delay_7d,
               count(dep.delay) FILTER (WHERE dep.known_at >= d.as_of - INTERVAL 7 DAY)::DOUBLE AS flights_7d,
               max(dep.distance) AS distance
        FROM flight_delay_routes r CROSS JOIN days d
        LEFT JOIN dep ON dep.origin = r.origin AND dep.destination = r.destination
             AND dep.known_at < d.as_of AND dep.known_at >= d.as_of - INTERVAL 28 DAY
        WHERE d.as_of > r.created_at
        GROUP BY ALL
    """)


def main(argv: list[str]) -> None:
    parquet = argv[0] if argv and not argv[0].startswith("--") else "/work/data/flights-3m.parquet"
    origins = ["SLC", "PDX"]
    until = "0216"
    if "--origins" in argv:
        origins = argv[argv.index("--origins") + 1].split(",")
    if "--until" in argv:
        until = argv[argv.index("--until") + 1]
    path = get_settings().offline_store_path
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        load(parquet, origins, until, con)
        for table in ("flight_delay_events", "flight_delay_routes", "flight_delay_features_daily"):
            print(table, con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0])
    finally:
        con.close()
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
