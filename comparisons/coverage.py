"""Coverage: which requests each path could answer, and why the lookup table missed the others.

A batch **miss** is a request whose entity had no row in the lookup table. A miss is **new** when the entity was
created after the cutoff (``data_interval_end``) of the lookup version that served that request (recorded in the
shadow log), or is not listed in the use case's entity source at all: the batch run could not have scored it. It
is **known** when the entity was listed by then: the batch run should have scored it and did not (no features
yet, a dropped row). The split needs the entity source (the offline store's ``entity.source`` table, loaded as
table ``entities``) and the versions' cutoffs; without them it is left out and the report says why.
"""

from __future__ import annotations

from pydantic import Field

from comparisons.shadow_rows import Rows
from comparisons.stats import Result, share

__all__ = ["Coverage", "measure"]


class Coverage(Result):
    """Shares of requests with a batch prediction, a live prediction, and the misses split new vs known."""

    requests: int
    batch_answered: int
    batch_share: float | None
    misses: int
    miss_share: float | None
    misses_new: int | None = None
    misses_known: int | None = None
    miss_split: str = ""
    batch_errors: int
    live_answered: int
    live_share: float | None
    live_answered_on_misses: int
    entities: int
    missed_entities: int
    non_finite: dict[str, int] = Field(
        default_factory=dict,
        description="Per path, answers logged as NaN or ±inf: counted as that path's errors, in no metric.",
    )
    out_of_range: dict[str, int] = Field(
        default_factory=dict,
        description="Per path, a binary use case's answers outside [0, 1] (not a probability): counted as that path's "
        "errors, in no metric.",
    )


def measure(rows: Rows, versions_loaded: bool, entities_loaded: bool) -> Coverage:
    """Coverage over the window. ``versions_loaded``: table ``versions(version, cutoff)`` exists and ``s.lv`` names
    the version that served each request; ``entities_loaded``: table ``entities(k_<key>..., created_at)`` exists."""
    con = rows.con
    keys = rows.key_columns
    row = con.execute(f"""
        SELECT count(*), count(bp), count(*) FILTER (WHERE miss), count(*) FILTER (WHERE batch_err),
               count(op), count(op) FILTER (WHERE miss),
               (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM s)),
               (SELECT count(*) FROM (SELECT DISTINCT {keys} FROM s WHERE miss))
        FROM s
    """).fetchall()[0]
    assert row is not None
    requests, answered, misses, errors, live, live_on_misses, entities, missed_entities = (int(v) for v in row)
    new = known = None
    if not versions_loaded:
        note = "no published lookup version: the cutoff of the batch run is unknown"
    elif not entities_loaded:
        note = "the entity source (offline store) could not be read"
    else:
        on = " AND ".join(f"s.k_{k} = e.k_{k}" for k in rows.keys)
        # Each miss against the cutoff of the version that served its request; before any version, every entity
        # is new to the lookup table.
        split = con.execute(f"""
            SELECT count(*) FILTER (WHERE e.created_at IS NOT NULL AND v.cutoff IS NOT NULL
                                    AND e.created_at <= CAST(v.cutoff AS TIMESTAMP)),
                   count(*)
            FROM s LEFT JOIN (SELECT {keys}, min(created_at) AS created_at FROM entities GROUP BY ALL) e ON {on}
                   LEFT JOIN versions v ON v.version = s.lv
            WHERE s.miss
        """).fetchall()[0]
        assert split is not None
        known = int(split[0])
        new = int(split[1]) - known
        note = "new: created after the cutoff of the lookup version that served the request, or not listed"
    return Coverage(
        requests=requests,
        batch_answered=answered,
        batch_share=share(answered, requests),
        misses=misses,
        miss_share=share(misses, requests),
        misses_new=new,
        misses_known=known,
        miss_split=note,
        batch_errors=errors,
        live_answered=live,
        live_share=share(live, requests),
        live_answered_on_misses=live_on_misses,
        entities=entities,
        missed_entities=missed_entities,
        non_finite=dict(rows.non_finite),
        out_of_range=dict(rows.out_of_range),
    )
