"""The daily batch features: recomputed by hand from scan events strictly before ``as_of``."""

from __future__ import annotations

import math
import shutil
from datetime import datetime, timedelta
from pathlib import Path

from migrate.batch.offline_store import open_offline
from migrate.examples.item_availability.features import build_daily_features
from migrate.examples.item_availability.generator import GenerationSummary

Key = tuple[int, int]


def _rate(found: int, scans: int) -> float | None:
    return found / scans if scans else None


def _close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and math.isclose(a, b, rel_tol=1e-12))


def test_features_match_a_hand_count_of_past_events(small_store: GenerationSummary) -> None:
    con = open_offline(small_store.path)
    try:
        events = con.sql("SELECT event_time, store_id, product_id, found FROM scan_events").fetchall()
        rows = con.sql("SELECT * FROM item_features_daily ORDER BY as_of, store_id, product_id").fetchall()
        columns = [str(r[0]) for r in con.sql("DESCRIBE item_features_daily").fetchall()]
        listed = {(s, p): t for s, p, t in con.sql("SELECT * FROM store_products").fetchall()}
    finally:
        con.close()

    def counts(as_of: datetime, days: int, match: object) -> tuple[int, int]:
        window = [f for t, s, p, f in events if as_of - timedelta(days=days) <= t < as_of and match in ((s, p), s, p)]
        return sum(window), len(window)

    checked = 0
    for values in rows[:: max(1, len(rows) // 60)]:  # a spread of days and entities
        row = dict(zip(columns, values, strict=True))
        key, as_of = (row["store_id"], row["product_id"]), row["as_of"]
        found_1d, scans_1d = counts(as_of, 1, key)
        found_7d, scans_7d = counts(as_of, 7, key)
        assert row["scans_1d"] == scans_1d, row
        assert _close(row["found_rate_1d"], _rate(found_1d, scans_1d)), row
        assert row["scans_7d"] == scans_7d, row
        assert _close(row["found_rate_7d"], _rate(found_7d, scans_7d)), row
        assert _close(row["store_found_rate_7d"], _rate(*counts(as_of, 7, row["store_id"])))
        assert _close(row["product_found_rate_7d"], _rate(*counts(as_of, 7, row["product_id"])))
        assert listed[key] < as_of
        checked += 1
    assert checked >= 30


def test_one_row_per_listed_entity_and_day_end(small_store: GenerationSummary) -> None:
    con = open_offline(small_store.path)
    try:
        per_day = con.sql("""
            SELECT f.as_of, count(*), count(DISTINCT (f.store_id, f.product_id)),
                   (SELECT count(*) FROM store_products sp WHERE sp.listed_at < f.as_of)
            FROM item_features_daily f GROUP BY f.as_of ORDER BY f.as_of""").fetchall()
        nulls = con.sql("""SELECT count(*) FILTER (WHERE scans_1d = 0 AND found_rate_1d IS NOT NULL),
                                  count(*) FILTER (WHERE scans_1d = 0)
                           FROM item_features_daily""").fetchall()[0]
    finally:
        con.close()
    ends = [small_store.start.replace(tzinfo=None) + timedelta(days=d + 1) for d in range(len(per_day))]
    assert [row[0] for row in per_day] == ends
    assert ends[-1] == small_store.end.replace(tzinfo=None)
    assert all(rows == distinct == listed for _, rows, distinct, listed in per_day)
    assert nulls[0] == 0
    assert nulls[1] > 0


def test_a_late_event_does_not_change_earlier_features(small_store: GenerationSummary, tmp_path: Path) -> None:
    # Point-in-time: the row at as_of is the same whatever happens at or after as_of.
    copy = tmp_path / "copy.duckdb"
    shutil.copy(small_store.path, copy)
    as_of = small_store.start.replace(tzinfo=None) + timedelta(days=2)
    con = open_offline(copy, read_only=False)
    try:
        store, product = con.sql(
            "SELECT store_id, product_id FROM store_products ORDER BY listed_at LIMIT 1"
        ).fetchall()[0]

        def day_rows() -> list[tuple[object, ...]]:
            return con.sql(
                "SELECT * FROM item_features_daily WHERE as_of = $a ORDER BY store_id, product_id", params={"a": as_of}
            ).fetchall()

        def scans_next_day() -> float:
            rows = con.sql(
                "SELECT scans_1d FROM item_features_daily WHERE as_of = $a AND store_id = $s AND product_id = $p",
                params={"a": as_of + timedelta(days=1), "s": store, "p": product},
            )
            return float(rows.fetchall()[0][0])

        before, next_before = day_rows(), scans_next_day()
        con.execute(
            "INSERT INTO scan_events VALUES ('late', $t, $s, $p, false)", {"t": as_of, "s": store, "p": product}
        )
        build_daily_features(con, small_store.start + timedelta(days=1), small_store.end)
        after, next_after = day_rows(), scans_next_day()
    finally:
        con.close()
    assert after == before
    assert next_after == next_before + 1  # the event counts in the next day's row instead
