"""Staleness: how old the data behind each answer was, per path and per feature group, on the same requests.

**Data age** (the headline, one definition for the report, the JSON, `migrate gate` and the demo):

* batch path: the lookup row's age, ``batch_data_age_s`` (request time − the row's ``features_as_of``), over the
  requests the lookup table answered;
* live path: the age of the **newest** data behind the answer, the youngest of its features' ages
  (`comparisons.data_ages.newest_age_sql`), over the requests the live path answered with a stored feature. The
  online model reads last night's batch features too, so an entity without a recent event is as old as its batch
  features, never older; a recent event makes it minutes old.

**Per feature group** (`comparisons.data_ages.feature_groups`): the batch features' age, and for each real-time
group the age of its key's newest event — counted only when that event lies within the group's longest window;
"no event within the window" (or none ever) is its own share, not old data: a quiet card is not a stale one.

Beyond ``data_ages.AGE_SAMPLE`` requests the live ages come from a hash-chosen 1-in-``live_sampled_every``
subset (parsing their JSON dominates the load otherwise).
"""

from __future__ import annotations

from comparisons.data_ages import feature_groups
from comparisons.shadow_rows import Rows
from comparisons.stats import Distribution, Histogram, Result, quantile_sql, share

__all__ = ["AGE_EDGES_S", "GroupAge", "Staleness", "measure"]

# Log-spaced bins from 1 s to ~32 days, four per decade; ages below 1 s fall in the first, above in the last.
AGE_EDGES_S = [10 ** (i / 4) for i in range(0, 26)]


class GroupAge(Result):
    """One feature group's data age on the live path's answers."""

    group: str
    kind: str  # "batch features" or "real-time"
    window_s: float | None  # the group's longest window (real-time groups with windows)
    answers: int  # live answers looked at
    age: Distribution  # over the answers whose group had data (within the window, for real-time groups)
    no_event_in_window: int | None = None  # real-time: answers whose key had no event within the window, or none
    no_event_share: float | None = None


class Staleness(Result):
    """Data age in seconds per path (the headline), per feature group, and the histogram (for the report)."""

    definition: str
    batch: Distribution
    live: Distribution
    groups: list[GroupAge]
    live_sampled_every: int = 1
    histogram: Histogram


DEFINITION = (
    "data age = request time − the time of the newest data behind the answer: the lookup row's features for the "
    "batch path; the youngest feature the online model used for the live path"
)


def _bucket(column: str) -> str:
    last = len(AGE_EDGES_S) - 2
    return f"least(greatest(CAST(floor(log10(greatest({column}, 1.0)) * 4) AS INTEGER), 0), {last})"


def _groups(rows: Rows) -> list[GroupAge]:
    con, out = rows.con, []
    answers = int(con.execute("SELECT count(*) FROM ages WHERE answered").fetchall()[0][0])  # the same for every group
    for index, group in enumerate(feature_groups(rows.usecase)):
        column = f"g{index}"
        if group.kind == "real-time" and group.window_s is not None:
            inside = f"{column} IS NOT NULL AND {column} <= {group.window_s!r}"
            age = con.execute(f"SELECT {quantile_sql(column)} FROM ages WHERE answered AND {inside}").fetchall()[0]
            quiet = int(con.execute(f"SELECT count(*) FROM ages WHERE answered AND NOT ({inside})").fetchall()[0][0])
            out.append(
                GroupAge(
                    group=group.name,
                    kind=group.kind,
                    window_s=group.window_s,
                    answers=answers,
                    age=Distribution.from_row(age),
                    no_event_in_window=quiet,
                    no_event_share=share(quiet, answers),
                )
            )
        else:
            age = con.execute(f"SELECT {quantile_sql(column)} FROM ages WHERE answered").fetchall()[0]
            out.append(
                GroupAge(
                    group=group.name,
                    kind=group.kind,
                    window_s=group.window_s,
                    answers=answers,
                    age=Distribution.from_row(age),
                )
            )
    return out


def measure(rows: Rows) -> Staleness:
    """Staleness of both paths and of each feature group over the window's requests."""
    con = rows.con
    batch = con.execute(f"SELECT {quantile_sql('batch_age')} FROM s WHERE bp IS NOT NULL").fetchall()[0]
    live = con.execute(f"SELECT {quantile_sql('online_age')} FROM ages WHERE answered").fetchall()[0]
    bins = len(AGE_EDGES_S) - 1
    counts = {"batch": [0] * bins, "live": [0] * bins}
    query = f"""
        SELECT 'batch', {_bucket("batch_age")} AS b, count(*) FROM s WHERE bp IS NOT NULL AND batch_age IS NOT NULL
        GROUP BY b
        UNION ALL
        SELECT 'live', {_bucket("online_age")} AS b, count(*) FROM ages WHERE answered AND online_age IS NOT NULL
        GROUP BY b
    """
    for path, bucket, count in con.execute(query).fetchall():
        counts[path][int(bucket)] = int(count)
    edges = [float(e) for e in AGE_EDGES_S]
    return Staleness(
        definition=DEFINITION,
        batch=Distribution.from_row(batch),
        live=Distribution.from_row(live),
        groups=_groups(rows),
        live_sampled_every=rows.age_every,
        histogram=Histogram(edges=edges, counts=counts),
    )
