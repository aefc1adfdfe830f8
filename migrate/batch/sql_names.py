"""Identifier quoting for the SQL the offline store runs (DuckDB, standard double quotes)."""

from __future__ import annotations

__all__ = ["quote"]


def quote(name: str) -> str:
    """`name` as a quoted SQL identifier: any name a table or column may have, never a piece of SQL."""
    return '"' + name.replace('"', '""') + '"'
