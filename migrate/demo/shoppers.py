"""The demo's traffic: shoppers who look a product up shortly before they scan it in the store.

Drawn from the day's own upcoming scan events, plus a share of products listed after last night's batch run,
which the lookup table cannot know; `Shoppers.requests` yields them as `Request`s for the rehearsal's driver.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from migrate.batch.offline_store import open_offline, utc_naive
from migrate.demo.rehearse import Request
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["Shoppers", "day_events", "new_entities"]


class Shoppers:
    """Shopper traffic: a few products per request, each one somebody scans within the next `lead`."""

    def __init__(
        self,
        usecase: UseCase,
        events: list[tuple[datetime, tuple[Any, ...]]],
        new: list[tuple[Any, ...]],
        *,
        seed: int,
        per_request: int = 4,
    ):
        self.usecase = usecase
        self.times = [t for t, _ in events]
        self.keys = [k for _, k in events]
        self.new = new
        self.rng = random.Random(seed)  # noqa: S311 - a repeatable demo, not a secret
        self.lead = timedelta(minutes=20)
        self.per_request = per_request

    def pick(self, now: datetime) -> list[dict[str, Any]]:
        lo = bisect.bisect_left(self.times, now)
        hi = bisect.bisect_left(self.times, now + self.lead)
        chosen: list[tuple[Any, ...]] = []
        for _ in range(self.rng.randint(1, self.per_request)):
            if self.new and self.rng.random() < 0.05:
                chosen.append(self.rng.choice(self.new))
            elif hi > lo:
                chosen.append(self.keys[self.rng.randrange(lo, hi)])
        names = self.usecase.entity.key_names
        return [dict(zip(names, key, strict=True)) for key in dict.fromkeys(chosen)]

    def requests(self, start: datetime, until: datetime, every: timedelta) -> Iterator[Request]:
        """A request every `every` of simulated time in [start, until), for the products `pick` draws then."""
        at = start
        while at < until:
            entities = self.pick(at)
            if entities:
                yield Request(at, {"entities": entities})
            at += every


def day_events(settings: Settings, usecase: UseCase, start: datetime, end: datetime) -> list[Any]:
    """The day's scan events as (time, key), in time order, for the shoppers to draw from."""

    assert usecase.realtime_features is not None
    keys = ", ".join(usecase.entity.key_names)
    column = usecase.realtime_features.event_time_column
    with open_offline(settings.offline_store_path) as con:
        rows = con.execute(
            f"SELECT {column}, {keys} FROM {usecase.realtime_features.event_table} "
            f"WHERE {column} >= ? AND {column} < ? ORDER BY {column}",
            [utc_naive(start), utc_naive(end)],
        ).fetchall()
    return [(row[0].replace(tzinfo=UTC), tuple(row[1:])) for row in rows]


def new_entities(settings: Settings, usecase: UseCase, cutoff: datetime) -> list[tuple[Any, ...]]:
    """Entities listed after the batch cutoff: the lookup table has no row for them."""

    source = usecase.entity.source
    keys = ", ".join(usecase.entity.key_names)
    with open_offline(settings.offline_store_path) as con:
        rows = con.execute(
            f"SELECT {keys} FROM {source.table} WHERE {source.created_at_column} > ? ORDER BY {keys}",
            [utc_naive(cutoff)],
        ).fetchall()
    return [tuple(row) for row in rows]
