"""Waste: batch predictions that no request asked for while their lookup version was serving.

The nightly run scores every entity; for each lookup version that served requests of the window (``s.lv``, its
rows registered as ``lookup_v<n>`` by the caller), this counts its rows whose key no request it served named, and
sums over those versions. A short window overstates waste: compare it with the window length shown beside it. A
version no longer kept (retired by later runs) cannot be counted: the note says so.

A shadow log that samples entities (``shadow.sample_percent``, per row ``s.sp``) names only the sampled ones; each
requested entity then stands for 100 / (its sample percent) entities of the version (its largest, when the sample
changed in the window), so ``requested`` is an estimate and the note says so.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import Field

from comparisons.shadow_rows import Rows
from comparisons.stats import Result, share

__all__ = ["Waste", "measure"]


class Waste(Result):
    """How many of the serving versions' predictions were read (by key) and how many were never asked for."""

    version: int | None  # the version counted, when only one served the window
    versions: list[int] = Field(default_factory=list)  # the versions counted
    rows: int
    requested: int
    never_requested: int
    share: float | None
    note: str = ""


def measure(rows: Rows, loaded: Sequence[int], gone: Sequence[int] = (), note: str = "") -> Waste:
    """Waste of the served versions in `loaded` (tables ``lookup_v<n>`` exist); `gone`: served but not kept."""
    if gone:
        note = (note + " " if note else "") + f"version(s) {list(gone)} served the window but are no longer kept."
    if not loaded:
        return Waste(version=None, rows=0, requested=0, never_requested=0, share=None, note=note.strip())
    total, requested = 0, 0.0
    for number in loaded:
        on = " AND ".join(f"l.{k} = r.k_{k}" for k in rows.keys)
        row = rows.con.execute(f"""
            SELECT count(*), coalesce(sum(100.0 / r.sp), 0)
            FROM lookup_v{number} l
            LEFT JOIN (SELECT {rows.key_columns}, max(sp) AS sp FROM s WHERE lv = {int(number)} GROUP BY ALL) r
                ON {on}
        """).fetchall()[0]
        assert row is not None
        total += int(row[0])
        requested += float(row[1])
    lowest = rows.con.execute("SELECT min(sp) FROM s").fetchall()[0][0]
    if lowest is not None and lowest < 100:
        note = (
            f"{note} estimated: the shadow log samples entities (down to {lowest:g} %), each requested one standing "
            "for 100 / its sample percent."
        ).strip()
    # An estimate cannot exceed what the versions hold (a sampled entity weighs more than one row).
    requested_rows = min(total, round(requested))
    never = total - requested_rows
    return Waste(
        version=loaded[0] if len(loaded) == 1 else None,
        versions=list(loaded),
        rows=total,
        requested=requested_rows,
        never_requested=never,
        share=share(never, total),
        note=note.strip(),
    )
