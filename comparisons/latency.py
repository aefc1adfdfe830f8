"""Latency and errors per path, and how often serving fell back from the live path to the lookup table."""

from __future__ import annotations

from comparisons.shadow_rows import SERVED, Rows
from comparisons.stats import Distribution, Histogram, Result, quantile_sql, share

__all__ = ["LATENCY_EDGES_MS", "Latency", "PathLatency", "measure"]

# Log-spaced from 0.1 ms to 10 s, five bins per decade.
LATENCY_EDGES_MS = [10 ** (i / 5 - 1) for i in range(0, 26)]


class PathLatency(Result):
    """One path: latency distribution in ms where the serving worker measured it on the request, the shadow
    comparison's apart, and errors over the requests it was asked (wherever it was asked)."""

    latency_ms: Distribution
    background_ms: Distribution = Distribution(n=0)
    asked: int
    errors: int
    error_rate: float | None


class Latency(Result):
    """Both paths' latency and errors, the fallback rate, and requests by served source.

    ``latency_ms`` of a path is what requests waited for: the rows whose answer of that path the serving worker
    computed on the request (`Rows.served_latency`). The shadow comparison computes the other side of each row in a
    background process, at idle priority, in one call for the entities of several requests: that call's latency is
    ``background_ms``, reported so its cost is seen, and never read as a served latency (at stage shadow the live
    path serves nobody: its served latency is measured from canary on, where the serving guardrail judges it).
    The histogram counts served latencies under ``batch`` and ``live``, background ones under ``batch (background)``
    and ``live (background)``.
    """

    batch: PathLatency
    live: PathLatency
    fallbacks: int
    fallback_rate: float | None
    served: dict[str, int]
    histogram: Histogram


def _bucket(column: str) -> str:
    """The histogram bin of `column`'s latency; NULL without one (DuckDB's ``greatest`` skips a NULL argument: the
    bin of a missing latency would be the first, 0.1 ms)."""
    last = len(LATENCY_EDGES_MS) - 2
    return (
        f"CASE WHEN {column} IS NOT NULL THEN "
        f"least(greatest(CAST(floor((log10(greatest({column}, 0.1)) + 1) * 5) AS INTEGER), 0), {last}) END"
    )


def measure(rows: Rows) -> Latency:
    """Latency and errors over the window's requests."""
    con = rows.con
    paths = {}
    consulted = {"batch": "bp IS NOT NULL OR miss OR batch_err", "live": "op IS NOT NULL OR online_err"}
    measured = (("batch", "batch_ms", "batch_err"), ("live", "online_ms", "online_err"))
    where = {"batch": rows.served_latency("batch"), "live": rows.served_latency("live")}
    # Both paths in one pass over the rows: each path's served and background latency, the requests that asked it
    # and its errors.
    found = con.execute(
        "SELECT "
        + ", ".join(
            f"{quantile_sql(f'CASE WHEN {where[path]} THEN {ms} END')}, "
            f"{quantile_sql(f'CASE WHEN NOT ({where[path]}) THEN {ms} END')}, "
            f"count(*) FILTER (WHERE {consulted[path]}), count(*) FILTER (WHERE {err})"
            for path, ms, err in measured
        )
        + " FROM s"
    ).fetchall()[0]
    assert found is not None
    for index, (path, _, _) in enumerate(measured):
        row = found[8 * index : 8 * index + 8]
        asked, errors = int(row[6]), int(row[7])
        paths[path] = PathLatency(
            latency_ms=Distribution.from_row(row[:3]),
            background_ms=Distribution.from_row(row[3:6]),
            asked=asked,
            errors=errors,
            error_rate=share(errors, asked),
        )
    codes = con.execute("SELECT served, count(*) FROM s GROUP BY ALL").fetchall()
    served = {SERVED[code] if code < len(SERVED) else "other": int(count) for code, count in codes}
    fallbacks = served.get("batch_fallback", 0)
    bins = len(LATENCY_EDGES_MS) - 1
    series = ("batch", "live", "batch (background)", "live (background)")
    counts = {name: [0] * bins for name in series}
    # One pass: the count per pair of bins and where each was measured (a bin is NULL without a latency), each
    # series' counts summed from them.
    query = (
        f"SELECT {_bucket('batch_ms')} AS b, {where['batch']} AS bs, {_bucket('online_ms')} AS o, "
        f"{where['live']} AS os, count(*) FROM s GROUP BY ALL"
    )
    for batch_bin, batch_served, live_bin, live_served, count in con.execute(query).fetchall():
        if batch_bin is not None:
            counts["batch" if batch_served else "batch (background)"][int(batch_bin)] += int(count)
        if live_bin is not None:
            counts["live" if live_served else "live (background)"][int(live_bin)] += int(count)
    return Latency(
        batch=paths["batch"],
        live=paths["live"],
        fallbacks=fallbacks,
        fallback_rate=share(fallbacks, rows.rows),
        served=served,
        histogram=Histogram(
            edges=[float(e) for e in LATENCY_EDGES_MS], counts={k: v for k, v in counts.items() if k in paths or any(v)}
        ),
    )
