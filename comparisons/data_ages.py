"""The live path's data ages: the feature groups that share one age, the SQL of a shadow row's ages, and table
``ages`` of the comparison (see `comparisons.shadow_rows.load`).

A shadow row logs each feature's age as JSON (``online_feature_ages_s``). Parsing it dominates a full read at
scale, so beyond ``AGE_SAMPLE`` rows only the rows whose id ``h`` is 0 modulo ``every`` are parsed: a hash-chosen
subset, the same on every run.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb

from migrate.feature_windows import groups_of
from migrate.usecase import UseCase

__all__ = [
    "AGE_SAMPLE",
    "FeatureGroup",
    "age_columns_sql",
    "every_for",
    "feature_groups",
    "group_age_sql",
    "newest_age_sql",
    "parse_ages",
    "sampled",
]

AGE_SAMPLE = 1_000_000  # live data ages are parsed for at most about this many rows


@dataclass(frozen=True)
class FeatureGroup:
    """Features whose data share one age: the batch features (one nightly row), or one real-time group (the
    newest event of its key); `window_s` is the group's longest window (None: only minutes_since features)."""

    name: str
    kind: str  # "batch features" or "real-time"
    features: tuple[str, ...]
    window_s: float | None


def feature_groups(usecase: UseCase) -> list[FeatureGroup]:
    """The live path's feature groups: the batch features, then each real-time group that has features."""
    groups = [FeatureGroup("batch features", "batch features", tuple(usecase.feature_names), None)]
    for group in groups_of(usecase):
        if not group.spec.features:
            continue
        windows = [f.buckets for f in group.spec.features if f.aggregation != "minutes_since"]
        window_s = max(windows) * group.spec.resolution_s if windows else None
        groups.append(FeatureGroup(group.name, "real-time", tuple(group.spec.names), window_s))
    return groups


def _names(usecase: UseCase) -> list[str]:
    return [*usecase.feature_names, *usecase.realtime_feature_names]


def _parsed_ages(usecase: UseCase, column: str) -> str:
    struct = "{" + ", ".join(f'"{name}": "DOUBLE"' for name in _names(usecase)) + "}"
    return f"from_json({column}, '{struct}')"


def newest_age_sql(usecase: UseCase, column: str = "online_feature_ages_s", *, parsed: str | None = None) -> str:
    """The live path's **data age** of a shadow row: the age of the newest data behind its answer, i.e. the youngest
    of its features' ages (``online_feature_ages_s``). One definition for the report, the JSON, `migrate gate` and
    the demo: an entity without a recent event is as old as its batch features, never older (docs/comparisons.md).
    `parsed`: a column already holding the ages parsed (`_parsed_ages`), instead of parsing `column` here."""
    parsed = parsed or _parsed_ages(usecase, column)
    names = _names(usecase)
    return f"least({', '.join(f'{parsed}.{name}' for name in names)})" if names else "NULL"


def group_age_sql(
    usecase: UseCase, group: FeatureGroup, column: str = "online_feature_ages_s", *, parsed: str | None = None
) -> str:
    """A feature group's age in a shadow row: the oldest of its features' ages (they share one in practice)."""
    parsed = parsed or _parsed_ages(usecase, column)
    return f"greatest({', '.join(f'{parsed}.{name}' for name in group.features)})" if group.features else "NULL"


def every_for(rows: int) -> int:
    """1 in how many rows the ages are parsed for, over `rows` rows: all of them up to ``AGE_SAMPLE``."""
    return max(1, -(-rows // AGE_SAMPLE))


def age_columns_sql(usecase: UseCase, row_id: str, every: int) -> str:
    """The two columns a shadow-log read carries for `parse_ages`: ``answered`` (the live path gave a prediction)
    and ``ages_json``, the logged ages of the rows whose `row_id` is 0 modulo `every` (NULL for the others, whose
    JSON is never copied out of the scan)."""
    if not _names(usecase):
        json = "CAST(NULL AS VARCHAR)"
    elif every > 1:
        json = f"CASE WHEN {row_id} % {every} = 0 THEN online_feature_ages_s END"
    else:
        json = "online_feature_ages_s"
    return f"online_prediction IS NOT NULL AS answered, {json} AS ages_json"


def sampled(relation: str, every: int) -> str:
    """The rows of `relation` (columns ``h``, ``hour``, ``answered``, ``ages_json``) whose ``h`` is 0 modulo
    `every`, as a subquery `parse_ages` reads."""
    where = "" if every == 1 else f" WHERE h % {every} = 0"
    return f"(SELECT h, hour, answered, ages_json FROM {relation}{where})"


def parse_ages(con: duckdb.DuckDBPyConnection, usecase: UseCase, relation: str) -> None:
    """Table ``ages`` from `relation` (rows of ``h``, ``hour``, ``answered``, ``ages_json``, each ``h`` once): the
    live path's data age (`newest_age_sql`) and each feature group's age (``g0``, ``g1``, … in the order of
    `feature_groups`)."""
    groups = feature_groups(usecase)
    columns = "".join(f", {group_age_sql(usecase, g, parsed='j')} AS g{i}" for i, g in enumerate(groups))
    parsed = _parsed_ages(usecase, "ages_json") if _names(usecase) else "NULL"
    # Each row's JSON is parsed once, into j, which every age reads (OFFSET 0 keeps the optimizer from inlining
    # the parse back into each of them).
    con.execute(f"""
        CREATE TEMP TABLE ages AS
        SELECT h, hour, answered, {newest_age_sql(usecase, parsed="j")} AS online_age{columns}
        FROM (SELECT h, hour, answered, {parsed} AS j FROM {relation} OFFSET 0)
    """)
