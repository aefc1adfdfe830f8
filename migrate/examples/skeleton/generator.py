"""What the examples' generators share: the config's days and checks, and writing the tables in one transaction.

Each example declares its own tables and draws its own world; this module replaces those tables, numbers the
events it appends day by day, and summarises what a run wrote, so that two examples can share one DuckDB file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import duckdb
import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from migrate.batch.offline_store import open_offline, utc_aware
from migrate.examples.skeleton.simulation import last_batch_cutoff

__all__ = ["SimulatedDays", "SummaryBase", "Written", "append_events", "insert_rows", "write_tables"]


class SimulatedDays(BaseModel):
    """The seed and the days every simulation config has; an example adds the size and the pace of its world."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What step_minutes must divide, and how the error names it (the day, or a window of the simulator).
    STEP_DIVIDES: ClassVar[tuple[int, str]] = (1440, "a day (1440 minutes)")

    seed: int = 42
    days: int = Field(default=14, ge=2, description="At least two, so a batch run precedes the final day.")
    start: datetime = Field(default=datetime(2026, 11, 1, tzinfo=UTC), description="Midnight UTC.")
    step_minutes: int = Field(default=10, ge=1, le=60)

    @field_validator("start")
    @classmethod
    def _midnight_utc(cls, value: datetime) -> datetime:
        value = utc_aware(value)
        if value != value.replace(hour=0, minute=0, second=0, microsecond=0):
            raise ValueError("start must be midnight UTC, so that days and batch runs line up")
        return value

    @model_validator(mode="after")
    def _step_divides(self) -> SimulatedDays:
        whole, what = self.STEP_DIVIDES
        if whole % self.step_minutes:
            raise ValueError(f"step_minutes={self.step_minutes} must divide {what}")
        return self

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    @property
    def last_batch_cutoff(self) -> datetime:
        return last_batch_cutoff(self.start, self.days)


class SummaryBase(BaseModel):
    """What one generator run wrote; an example adds how many entities appear after the cutoff, and the cutoff."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: Path
    rows: dict[str, int]
    start: datetime
    end: datetime
    first_event: datetime | None
    last_event: datetime | None


@dataclass(frozen=True)
class Written:
    """What `write_tables` counted after its transaction."""

    rows: dict[str, int]
    first_event: datetime | None
    last_event: datetime | None
    new_entities: int  # what the example's writer returned

    def summary_fields(self, path: Path, config: SimulatedDays) -> dict[str, Any]:
        """The `SummaryBase` fields of this run, for the example's summary type."""
        return {
            "path": path,
            "rows": self.rows,
            "start": config.start,
            "end": config.end,
            "first_event": self.first_event,
            "last_event": self.last_event,
        }


def insert_rows(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table) -> None:
    """Append `rows` to `table`, column by column in order."""
    con.register("_rows", rows)
    con.execute(f"INSERT INTO {table} SELECT * FROM _rows")
    con.unregister("_rows")


def append_events(con: duckdb.DuckDBPyConnection, table: str, id_prefix: str, days: Iterable[pa.Table]) -> None:
    """Append each day's events to `table`, its first column an event id ``<id_prefix>-0000000000`` counted on
    across days, then the day's columns in order."""
    written = 0
    for day in days:
        # One day at a time keeps memory bounded by a day of events, whatever the number of days.
        batch = day.add_column(0, "seq", pa.array(np.arange(written, written + day.num_rows, dtype=np.int64)))
        con.register("_events", batch)
        con.execute(
            f"INSERT INTO {table} SELECT printf('{id_prefix}-%010d', seq), {', '.join(day.column_names)} FROM _events"
        )
        con.unregister("_events")
        written += day.num_rows


def write_tables(
    path: Path, write: Callable[[duckdb.DuckDBPyConnection], int], tables: Sequence[str], events_table: str
) -> Written:
    """Run `write` in one transaction on the DuckDB file at `path` (created if missing), then count `tables`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = open_offline(path, read_only=False)
    try:
        con.execute("BEGIN TRANSACTION")
        try:
            new_entities = write(con)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
        rows = {name: int(con.sql(f"SELECT count(*) FROM {name}").fetchall()[0][0]) for name in tables}
        first, last = con.sql(f"SELECT min(event_time), max(event_time) FROM {events_table}").fetchall()[0]
        con.execute("CHECKPOINT")
    finally:
        con.close()
    return Written(
        rows=rows,
        first_event=None if first is None else utc_aware(first),
        last_event=None if last is None else utc_aware(last),
        new_entities=new_entities,
    )
