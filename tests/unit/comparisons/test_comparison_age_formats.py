"""Shadow logs written before the sink added the typed ages struct (JSON ages only) are still read, and give the same
live data ages as the struct, alone or in a window that mixes both kinds of file; each against the rule by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from comparison_fixtures import USECASE, label, record, write_shadow

from comparisons import data_ages, staleness
from comparisons.data_ages import TYPED_AGES, feature_groups
from comparisons.shadow_rows import Window, load
from migrate.settings import Settings
from migrate.usecase import UseCase
from online.shadow.record import ShadowRecord

pytestmark = pytest.mark.unit


def _records(usecase: UseCase) -> list[ShadowRecord]:
    """Requests over three hours, each logging the ages of a random subset of the features (none: no answer). No
    request logs the last real-time feature, and none of the first hour any real-time one: the typed struct of
    that hour's file lacks their fields, and every file lacks the last one's."""
    rng = np.random.default_rng(3)
    realtime = usecase.realtime_feature_names
    assert len(realtime) >= 2
    records = []
    for n in range(360):
        names = [*usecase.feature_names, *(realtime[:-1] if n >= 120 else [])]
        chosen = [name for name in names if rng.random() < 0.6]
        ages = {name: round(float(rng.uniform(1, 90_000)), 3) for name in chosen}
        op = None if not ages else 0.5
        records.append(record(n, n / 2, product=n % 40, op=op, ages=ages, online_error=None if ages else "timeout"))
    return records


def _old(files: list[Path]) -> None:
    """Rewrite `files` as the sink wrote them before the struct column: JSON ages only."""
    for path in files:
        pq.write_table(pq.read_table(path).drop_columns([TYPED_AGES]), path)


def _by_hand(usecase: UseCase, records: list[ShadowRecord]) -> list[tuple[object, ...]]:
    names = [*usecase.feature_names, *usecase.realtime_feature_names]
    out = []
    for r in records:
        ages = r.online_feature_ages_s
        newest = min((ages[n] for n in names if n in ages), default=None)
        groups = [max((ages[n] for n in g.features if n in ages), default=None) for g in feature_groups(usecase)]
        out.append((r.request_id, r.online_prediction is not None, newest, *groups))
    return sorted(out)


@pytest.mark.parametrize("cap", [1_000_000, 100], ids=["every-row", "sampled"])
@pytest.mark.parametrize("written", ["struct", "json-only", "mixed"])
def test_old_json_only_logs_and_mixed_windows_give_the_ages_of_the_rule(
    settings: Settings, usecase: UseCase, written: str, cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(data_ages, "AGE_SAMPLE", cap)
    records = _records(usecase)
    write_shadow(settings, records, [label(900, 1.0, store=99, product=99)])
    files = sorted((settings.shadow_dir / USECASE).glob("date=*/hour=*/*.parquet"))
    assert len(files) == 3
    assert all(TYPED_AGES in pq.read_schema(path).names for path in files)  # the sink writes the struct
    if written != "struct":
        _old(files if written == "json-only" else files[:1])
    rows = load(usecase, settings.shadow_dir / USECASE, settings.labels_dir / USECASE, Window())
    try:
        groups = ", ".join(f"g{i}" for i in range(len(feature_groups(usecase))))
        got = rows.con.execute(f"""
            SELECT request_id, answered, online_age, {groups}
            FROM ages JOIN (SELECT DISTINCT h, request_id FROM (
                SELECT hash(request_id, CAST(key_store_id AS BIGINT), CAST(key_product_id AS BIGINT)) AS h,
                       request_id FROM {rows.source})) USING (h)
            ORDER BY request_id
        """).fetchall()
        measured = staleness.measure(rows)
        every = rows.age_every
    finally:
        rows.con.close()
    assert every == (1 if cap > len(records) else -(-len(records) // cap))
    sampled = {row[0] for row in got}
    expected = [row for row in _by_hand(usecase, records) if row[0] in sampled]
    assert got == expected
    assert len(got) == (len(records) if every == 1 else pytest.approx(len(records) / every, rel=0.5))
    answered = [row[2] for row in expected if row[1]]
    assert measured.live.n == len(answered) > 0
    assert measured.live.max == max(answered)
