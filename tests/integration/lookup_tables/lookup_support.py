"""Helpers shared by the lookup-store tests: batches of known predictions and a table to load them into."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa

from lookup_tables import KeyColumn, LookupStore, PublishResult, TableSpec, VersionInfo

T0 = datetime(2024, 1, 1, tzinfo=UTC)
AS_OF = datetime(2024, 1, 1, 23, 59, 59, 123456, tzinfo=UTC)


def keys_for(n: int, start: int = 0) -> list[tuple[int, str]]:
    """The keys ``make_batch`` writes, as ``get_many`` takes them."""
    return [(i, f"s{i % 5}") for i in range(start, start + n)]


def make_batch(n: int, value: float, start: int = 0, as_of: datetime = AS_OF) -> pa.Table:
    """``n`` rows with keys ``(i, 's<i % 5>')`` and every prediction equal to ``value``."""
    ids = np.arange(start, start + n, dtype=np.int64)
    return pa.table(
        {
            "item_id": ids,
            "store": pa.array([f"s{i % 5}" for i in range(start, start + n)]),
            "prediction": np.full(n, value, dtype=np.float64),
            "features_as_of": pa.array([as_of] * n, pa.timestamp("us", tz="UTC")),
        }
    )


@dataclass
class Table:
    """A store and one use case's lookup table, with shortcuts to load and publish versions."""

    store: LookupStore
    spec: TableSpec
    url: str

    def load(
        self,
        value: float,
        *,
        n: int = 1_000,
        day: int = 1,
        run_id: str | None = None,
        model: str = "m1",
        chunks: int = 2,
    ) -> VersionInfo:
        """A loading version of ``n`` rows all predicting ``value``, for the day ``day`` after T0."""
        info = self.store.begin_version(
            self.spec,
            run_id=run_id or f"run-{uuid.uuid4().hex[:8]}",
            model_version=model,
            data_interval_start=T0 + timedelta(days=day - 1),
            data_interval_end=T0 + timedelta(days=day),
        )
        per = -(-n // chunks)
        for chunk, start in enumerate(range(0, n, per)):
            self.store.write_chunk(self.spec, info.version, chunk, make_batch(min(per, n - start), value, start))
        return info

    def publish(self, info: VersionInfo, checksum: str | None = None) -> PublishResult:
        return self.store.publish(
            self.spec, info.version, checksum=checksum or f"sum-{info.version}", scored_at=T0 + timedelta(hours=3)
        )

    def release(self, value: float, *, day: int = 1, n: int = 1_000, model: str = "m1") -> PublishResult:
        """Load and publish; the checksum is derived from the data, so equal values mean an equal checksum."""
        return self.publish(self.load(value, n=n, day=day, model=model), checksum=f"sum-{value}-{n}")


def spec_for(keep_versions: int = 2) -> TableSpec:
    return TableSpec(
        usecase="item_availability",
        name="lt_item_availability",
        keys=(KeyColumn("item_id", "int"), KeyColumn("store", "str")),
        keep_versions=keep_versions,
    )
