"""Waste: batch predictions the lookup version holds that no request asked for in the window.

The nightly run scores every entity; this counts the rows of the active lookup version (table ``lookup_active``,
loaded by the caller) whose key no request of the window named. A short window overstates waste: compare it with
the window length shown beside it.
"""

from __future__ import annotations

from comparisons.shadow_rows import Rows
from comparisons.stats import Result, share

__all__ = ["Waste", "measure"]


class Waste(Result):
    """How many of the lookup version's predictions were read (by key) and how many were never asked for."""

    version: int | None
    rows: int
    requested: int
    never_requested: int
    share: float | None
    note: str = ""


def measure(rows: Rows, version: int | None, loaded: bool, note: str = "") -> Waste:
    """Waste of lookup version ``version`` (``loaded``: table ``lookup_active(<key>..., prediction)`` exists)."""
    if version is None or not loaded:
        return Waste(version=version, rows=0, requested=0, never_requested=0, share=None, note=note)
    on = " AND ".join(f"l.{k} = r.k_{k}" for k in rows.keys)
    row = rows.con.execute(f"""
        SELECT count(*), count(*) FILTER (WHERE r.k_{rows.keys[0]} IS NOT NULL)
        FROM lookup_active l LEFT JOIN (SELECT DISTINCT {rows.key_columns} FROM s) r ON {on}
    """).fetchall()[0]
    assert row is not None
    total, requested = int(row[0]), int(row[1])
    never = total - requested
    return Waste(
        version=version, rows=total, requested=requested, never_requested=never, share=share(never, total), note=note
    )
