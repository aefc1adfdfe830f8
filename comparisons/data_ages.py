"""The live path's data ages: the feature groups that share one age, the SQL of a shadow row's ages, and table
``ages`` of the comparison (see `comparisons.shadow_rows.load`).

A shadow row logs each feature's age as JSON (``online_feature_ages_s``) and, since the sink writes it, as a typed
struct (``online_feature_ages``), read instead of the JSON when every file of the window has it. Parsing the JSON
dominates a full read at scale, so beyond ``AGE_SAMPLE`` rows only the rows whose id ``h`` is 0 modulo ``every``
are parsed (or read from the struct): a hash-chosen subset, the same on every run.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass

import duckdb

from migrate.feature_windows import groups_of
from migrate.usecase import UseCase

__all__ = [
    "AGE_SAMPLE",
    "TYPED_AGES",
    "FeatureGroup",
    "age_columns",
    "age_columns_sql",
    "every_for",
    "feature_groups",
    "group_age_sql",
    "keep_once",
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


TYPED_AGES = "online_feature_ages"  # the sink's typed copy of ``online_feature_ages_s``: STRUCT(<feature> DOUBLE, …)


def _value(parsed: str, name: str, typed: Collection[str] | None) -> str:
    """One feature's age: a field of the parsed JSON, or of the typed struct (NULL when no file has the field, as
    a key missing from the JSON)."""
    if typed is None:
        return f"{parsed}.{name}"
    return f'{TYPED_AGES}."{name}"' if name in typed else "CAST(NULL AS DOUBLE)"


def _over(function: str, parsed: str, names: Sequence[str], typed: Collection[str] | None) -> str:
    """``least`` or ``greatest`` of the features' ages. A feature no file has is NULL, which both ignore: it is
    left out (evaluated per row, such NULLs cost CPU at ten million rows), NULL when none is left."""
    values = [_value(parsed, name, typed) for name in names if typed is None or name in typed]
    return f"{function}({', '.join(values)})" if values else "CAST(NULL AS DOUBLE)"


def newest_age_sql(
    usecase: UseCase,
    column: str = "online_feature_ages_s",
    *,
    parsed: str | None = None,
    typed: Collection[str] | None = None,
) -> str:
    """The live path's **data age** of a shadow row: the age of the newest data behind its answer, i.e. the youngest
    of its features' ages (``online_feature_ages_s``). One definition for the report, the JSON, `migrate gate` and
    the demo: an entity without a recent event is as old as its batch features, never older (docs/comparisons.md).
    `parsed`: a column already holding the ages parsed (`_parsed_ages`), instead of parsing `column` here; `typed`:
    the fields of the struct column `TYPED_AGES`, read instead of any JSON."""
    parsed = parsed or _parsed_ages(usecase, column)
    names = _names(usecase)
    return _over("least", parsed, names, typed) if names else "NULL"


def group_age_sql(
    usecase: UseCase,
    group: FeatureGroup,
    column: str = "online_feature_ages_s",
    *,
    parsed: str | None = None,
    typed: Collection[str] | None = None,
) -> str:
    """A feature group's age in a shadow row: the oldest of its features' ages (they share one in practice)."""
    parsed = parsed or _parsed_ages(usecase, column)
    return _over("greatest", parsed, group.features, typed) if group.features else "NULL"


def every_for(rows: int) -> int:
    """1 in how many rows the ages are parsed for, over `rows` rows: all of them up to ``AGE_SAMPLE``."""
    return max(1, -(-rows // AGE_SAMPLE))


def age_columns(usecase: UseCase) -> list[str]:
    """The columns of table ``ages`` after ``h``, ``hour`` and ``answered``: ``online_age``, ``g0``, ``g1``, …"""
    return ["online_age", *(f"g{i}" for i in range(len(feature_groups(usecase))))]


def age_columns_sql(usecase: UseCase, row_id: str, every: int, *, typed: Collection[str] | None = None) -> str:
    """The columns a shadow-log read carries for `parse_ages`: ``answered`` (the live path gave a prediction), the
    live path's data age ``online_age`` (`newest_age_sql`) and each feature group's age (``g0``, ``g1``, … in the
    order of `feature_groups`), parsed in the scan for the rows whose `row_id` is 0 modulo `every` (NULL for the
    others: their JSON is never parsed, nor copied out of the scan). `typed`: every file read has the struct column
    `TYPED_AGES`, with these fields: read instead of the JSON (decoding the JSON column alone cost ~1.5 s of CPU per
    10M rows, and reading a MAP instead ~2.3 s; the struct's fields are plain columns)."""
    if typed is not None:
        ages = [newest_age_sql(usecase, typed=typed)]
        ages += [group_age_sql(usecase, group, typed=typed) for group in feature_groups(usecase)]
        if every > 1:
            ages = [f"(CASE WHEN {row_id} % {every} = 0 THEN {sql} END)" for sql in ages]
    else:
        parsed = _parsed_ages(usecase, "online_feature_ages_s")
        if every > 1:
            parsed = f"(CASE WHEN {row_id} % {every} = 0 THEN {parsed} END)"
        # One parse per row: DuckDB evaluates the identical parse expressions of the columns once.
        ages = [newest_age_sql(usecase, parsed=parsed)]
        ages += [group_age_sql(usecase, group, parsed=parsed) for group in feature_groups(usecase)]
    columns = ", ".join(f"{sql} AS {name}" for sql, name in zip(ages, age_columns(usecase), strict=True))
    # A NaN or ±inf answer, or a binary use case's outside [0, 1], is no answer (`shadow_rows` drops it from table s
    # too): isfinite is null on null.
    return f"coalesce({score_sql(usecase, 'online_prediction')}, FALSE) AS answered, {columns}"


def score_sql(usecase: UseCase, column: str) -> str:
    """SQL true when `column` holds a score the use case's model can answer: finite, and for a binary label a
    probability (in [0, 1]); null on null."""
    if usecase.label.kind == "binary":
        return f"(isfinite({column}) AND {column} BETWEEN 0 AND 1)"
    return f"isfinite({column})"


def sampled(relation: str, every: int) -> str:
    """The rows of `relation` whose ``h`` is 0 modulo `every`, as a subquery `parse_ages` reads."""
    return relation if every == 1 else f"(SELECT * FROM {relation} WHERE h % {every} = 0)"


def parse_ages(con: duckdb.DuckDBPyConnection, usecase: UseCase, relation: str) -> None:
    """Table ``ages`` from `relation`: its ``h``, ``hour`` and `age_columns_sql`'s columns."""
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ages AS
        SELECT h, hour, answered, {", ".join(age_columns(usecase))} FROM {relation}
    """)


def keep_once(con: duckdb.DuckDBPyConnection, usecase: UseCase) -> None:
    """Table ``ages`` with each ``h`` once (a record delivered twice counts once, as in table ``s``)."""
    columns = "".join(f", any_value({name}) AS {name}" for name in age_columns(usecase))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE ages AS
        SELECT h, any_value(hour) AS hour, any_value(answered) AS answered{columns} FROM ages GROUP BY h
    """)
