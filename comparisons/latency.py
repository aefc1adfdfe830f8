"""Latency and errors per path, and how often serving fell back from the live path to the lookup table."""

from __future__ import annotations

from comparisons.shadow_rows import SERVED, Rows
from comparisons.stats import Distribution, Histogram, Result, quantile_sql, share

__all__ = ["LATENCY_EDGES_MS", "Latency", "PathLatency", "measure"]

# Log-spaced from 0.1 ms to 10 s, five bins per decade.
LATENCY_EDGES_MS = [10 ** (i / 5 - 1) for i in range(0, 26)]


class PathLatency(Result):
    """One path: latency distribution in ms, and errors over the requests it was asked."""

    latency_ms: Distribution
    asked: int
    errors: int
    error_rate: float | None


class Latency(Result):
    """Both paths' latency and errors, the fallback rate, and requests by served source."""

    batch: PathLatency
    live: PathLatency
    fallbacks: int
    fallback_rate: float | None
    served: dict[str, int]
    histogram: Histogram


def _bucket(column: str) -> str:
    last = len(LATENCY_EDGES_MS) - 2
    return f"least(greatest(CAST(floor((log10(greatest({column}, 0.1)) + 1) * 5) AS INTEGER), 0), {last})"


def measure(rows: Rows) -> Latency:
    """Latency and errors over the window's requests."""
    con = rows.con
    paths = {}
    consulted = {"batch": "bp IS NOT NULL OR miss OR batch_err", "live": "op IS NOT NULL OR online_err"}
    measured = (("batch", "batch_ms", "batch_err"), ("live", "online_ms", "online_err"))
    # Both paths in one pass over the rows: five columns each.
    found = con.execute(
        "SELECT "
        + ", ".join(
            f"{quantile_sql(ms)}, count(*) FILTER (WHERE {consulted[path]}), count(*) FILTER (WHERE {err})"
            for path, ms, err in measured
        )
        + " FROM s"
    ).fetchall()[0]
    assert found is not None
    for index, (path, _, _) in enumerate(measured):
        row = found[5 * index : 5 * index + 5]
        asked, errors = int(row[3]), int(row[4])
        paths[path] = PathLatency(
            latency_ms=Distribution.from_row(row[:3]), asked=asked, errors=errors, error_rate=share(errors, asked)
        )
    codes = con.execute("SELECT served, count(*) FROM s GROUP BY ALL").fetchall()
    served = {SERVED[code] if code < len(SERVED) else "other": int(count) for code, count in codes}
    fallbacks = served.get("batch_fallback", 0)
    bins = len(LATENCY_EDGES_MS) - 1
    counts = {"batch": [0] * bins, "live": [0] * bins}
    # One pass: the count per pair of bins (a bin is NULL without a latency), each path's counts summed from them.
    query = f"SELECT {_bucket('batch_ms')} AS b, {_bucket('online_ms')} AS o, count(*) FROM s GROUP BY ALL"
    for batch_bin, live_bin, count in con.execute(query).fetchall():
        if batch_bin is not None:
            counts["batch"][int(batch_bin)] += int(count)
        if live_bin is not None:
            counts["live"][int(live_bin)] += int(count)
    return Latency(
        batch=paths["batch"],
        live=paths["live"],
        fallbacks=fallbacks,
        fallback_rate=share(fallbacks, rows.rows),
        served=served,
        histogram=Histogram(edges=[float(e) for e in LATENCY_EDGES_MS], counts=counts),
    )
