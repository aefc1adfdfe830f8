"""The five costs of batch, measured on the demo's own traffic: before (shadow, served from the lookup table) and
after (online, served live), from the shadow log and the labels in Parquet.

- **staleness**: median age of the newest data behind the served prediction;
- **waste**: share of last night's lookup rows nobody asked for all day (online scores only what is asked);
- **coverage**: share of requested entities that got a model prediction;
- **response lag**: share of answers that reflect the entity's events of the last 30 minutes;
- **accuracy**: AUC and Brier score of the served predictions on labeled requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.metrics import roc_auc_score

from comparisons.data_ages import newest_age_sql
from migrate.settings import Settings
from migrate.usecase import UseCase, parse_duration

__all__ = ["Costs", "measure_costs", "print_costs"]


@dataclass(frozen=True)
class Costs:
    """One phase's five costs (None: nothing to measure)."""

    label: str
    requests: int
    staleness_s: float | None
    waste: float | None
    coverage: float | None
    fresh_share: float | None
    auc: float | None
    brier: float | None
    labeled: int


def _auc(scores: Any, labels: Any) -> float | None:

    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None


def measure_costs(
    settings: Settings,
    usecase: UseCase,
    label: str,
    window: tuple[datetime, datetime],
    *,
    served: str,
    lookup_rows: int,
) -> Costs:
    """The costs of the requests in the window [since, until) as served by `served` ("batch" or "online")."""
    since, until = window

    shadow = str(settings.shadow_dir / usecase.name / "**" / "*.parquet")
    labels = str(settings.labels_dir / usecase.name / "**" / "*.parquet")
    keys = usecase.entity.key_names
    newest = newest_age_sql(usecase)  # the comparator's definition of the live path's data age
    delay = int(parse_duration(usecase.label.available_after).total_seconds())
    on = " AND ".join(f"r.key_{k} = l.key_{k}" for k in keys)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(
            f"""CREATE TEMP TABLE r AS SELECT DISTINCT ON (request_id, entity_key) *
            FROM read_parquet('{shadow}', hive_partitioning = true, union_by_name = true)
            WHERE request_time >= $since AND request_time < $until""",
            {"since": since, "until": until},
        )
        total = con.execute("SELECT count(*) FROM r").fetchall()[0][0]
        if not total:
            return Costs(label, 0, None, None, None, None, None, None, 0)
        prediction = "batch_prediction" if served == "batch" else "online_prediction"
        age = "batch_data_age_s" if served == "batch" else newest
        staleness, coverage, fresh, asked = con.execute(f"""
            SELECT median({age}),
                   avg(CASE WHEN {prediction} IS NOT NULL THEN 1 ELSE 0 END),
                   avg(CASE WHEN coalesce({age}, 1e18) <= 1800 THEN 1 ELSE 0 END),
                   count(DISTINCT ({", ".join(f"key_{k}" for k in keys)})) FILTER (WHERE NOT coalesce(batch_miss, TRUE))
            FROM r""").fetchall()[0]
        scored = con.execute(f"""
            SELECT r.{prediction}, l.label FROM r
            ASOF JOIN (SELECT * FROM read_parquet('{labels}', hive_partitioning = true, union_by_name = true)) l
            ON {on} AND r.request_time < l.event_time
            WHERE l.event_time <= r.request_time + to_seconds({delay}) AND r.{prediction} IS NOT NULL
        """).fetchall()
    waste = (1 - asked / lookup_rows) if served == "batch" and lookup_rows else (0.0 if served == "online" else None)
    if scored:
        p = np.array([s[0] for s in scored], dtype=float)
        y = np.array([s[1] for s in scored], dtype=float)
        auc, brier = _auc(p, y), float(np.mean((p - y) ** 2))
    else:
        auc = brier = None
    return Costs(label, int(total), staleness, waste, coverage, fresh, auc, brier, len(scored))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def print_costs(console: Console, before: Costs, after: Costs) -> None:
    """The five costs side by side."""
    table = Table(title="the five costs of batch, measured on today's requests", title_justify="left")
    table.add_column("cost")
    table.add_column(f"before: {before.label}", justify="right")
    table.add_column(f"after: {after.label}", justify="right")
    table.add_column("what it means")
    table.add_row(
        "staleness",
        _age(before.staleness_s),
        _age(after.staleness_s),
        "median age of the newest data behind the answer",
    )
    table.add_row(
        "waste", _share(before.waste), _share(after.waste), "last night's rows nobody asked for today (compute spent)"
    )
    table.add_row(
        "coverage", _share(before.coverage), _share(after.coverage), "requested entities that got a model prediction"
    )
    table.add_row(
        "response lag",
        _share(before.fresh_share),
        _share(after.fresh_share),
        "answers reflecting the entity's last 30 minutes of events",
    )
    table.add_row(
        "accuracy (AUC)",
        _num(before.auc),
        _num(after.auc),
        f"on labeled requests ({before.labeled:,} / {after.labeled:,}); "
        f"Brier {_num(before.brier)} → {_num(after.brier)}",
    )
    console.print(table)
