"""A label value that cannot be the use case's label (NaN, ±infinity; for a binary label, anything but 0 and 1), or a
label without an event time, is left out of the label join and counted: a NaN crashed the report's JSON, and a
binary label of 2 skewed every accuracy metric (a Brier score above 1). The sink writes none; a label file another
tool wrote may (comparisons/shadow_rows.py, `_labels_table`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from comparison_fixtures import T0, USECASE, label, record, write_shadow

from comparisons.accuracy import Accuracy
from comparisons.comparison import compare
from comparisons.report import write_report
from comparisons.shadow_rows import Window, logged_requests
from migrate.settings import Settings, get_settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

GOOD = [1.0, 0.0, 0.0, 1.0, 1.0]  # what each entity's first label is, in every world below
BAD = [math.nan, math.inf, -math.inf, 2.0, -1.0, 0.5]


def _world(state: Path, extra: list[float | None]) -> Settings:
    """60 requests of 5 entities over 3 hours; each request's entity has a valid label 10 minutes after it and, 5
    minutes after it, the label ``extra[i % len(extra)]`` (none for None), which labels it first when it is one."""
    settings = get_settings(state_dir=state)
    records = [
        record(i, i * 3, product=10 + i % 5, bp=0.3 + 0.01 * (i % 20), op=0.35 + 0.01 * (i % 17)) for i in range(60)
    ]
    labels = [label(i * 3 + 10, GOOD[i % 5], product=10 + i % 5) for i in range(60)]
    for i in range(60):
        value = extra[i % len(extra)]
        if value is not None:
            labels.append(label(i * 3 + 5, value, product=10 + i % 5))
    write_shadow(settings, records, labels)
    return settings


def _scores(accuracy: Accuracy) -> dict[str, float | None]:
    scores: dict[str, float | None] = {}
    for score in accuracy.scores:
        scores[f"{score.metric} batch"], scores[f"{score.metric} live"] = score.batch, score.live
    return scores


def _as_regression(usecase: UseCase) -> UseCase:
    return usecase.model_copy(update={"label": usecase.label.model_copy(update={"kind": "regression"})})


def _invalid(value: float, kind: str) -> bool:
    return not math.isfinite(value) or (kind == "binary" and value not in (0.0, 1.0))


@pytest.mark.parametrize("kind", ["binary", "regression"])
def test_labels_that_cannot_be_labels_are_left_out_and_counted(tmp_path: Path, usecase: UseCase, kind: str) -> None:
    usecase = usecase if kind == "binary" else _as_regression(usecase)
    # Binary: every BAD value is invalid. Regression: the non-finite ones; 2.0, -1.0 and 0.5 are labels. The world
    # by hand holds only the extra labels that are valid.
    dirty = _world(tmp_path / "dirty", list(BAD))
    by_hand = _world(tmp_path / "by-hand", [None if _invalid(v, kind) else v for v in BAD])
    got = compare(usecase, dirty).accuracy
    expected = compare(usecase, by_hand).accuracy
    count_by_hand = sum(1 for i in range(60) if _invalid(BAD[i % len(BAD)], kind))
    assert got.invalid_labels == count_by_hand > 0
    assert expected.invalid_labels == 0
    assert (got.pairs, got.unlabeled, got.pending) == (expected.pairs, expected.unlabeled, expected.pending)
    assert _scores(got) == pytest.approx(_scores(expected), rel=1e-12)  # sums in another order: the last bits

    spine = logged_requests(usecase, dirty.shadow_dir / USECASE, dirty.labels_dir / USECASE, Window())
    spine_by_hand = logged_requests(usecase, by_hand.shadow_dir / USECASE, by_hand.labels_dir / USECASE, Window())
    assert spine.invalid_labels == count_by_hand
    assert spine.table.to_pylist() == spine_by_hand.table.to_pylist()


def test_the_report_is_written_and_says_how_many_were_left_out(tmp_path: Path, usecase: UseCase) -> None:
    settings = _world(tmp_path / "state", list(BAD))
    files = write_report(usecase, settings, out_dir=tmp_path / "report")
    numbers = json.loads(files.json.read_text())
    assert numbers["accuracy"]["invalid_labels"] == 60
    text = files.html.read_text()
    assert "cannot be a binary label" in text and "left out of the join" in text


def test_labels_without_an_event_time_are_left_out_and_counted(tmp_path: Path, usecase: UseCase) -> None:
    # Another writer's labels with no event time cannot be placed after any request.
    dirty = _world(tmp_path / "dirty", [0.0])
    extra = 0
    for path in (dirty.labels_dir / USECASE).glob("date=*/hour=*/*.parquet"):
        table = pq.read_table(path)
        times = table.column("event_time").to_pylist()
        # The extra labels are 5 minutes after a request at a multiple of 3 minutes: 2 past a multiple of 3.
        placed = [None if round((t - T0).total_seconds() / 60) % 3 == 2 else t for t in times]
        extra += placed.count(None)
        column = table.schema.get_field_index("event_time")
        pq.write_table(table.set_column(column, "event_time", pa.array(placed, table.schema.field(column).type)), path)
    by_hand = _world(tmp_path / "by-hand", [None])
    got, expected = compare(usecase, dirty).accuracy, compare(usecase, by_hand).accuracy
    assert got.invalid_labels == extra == 60
    assert _scores(got) == pytest.approx(_scores(expected), rel=1e-12)  # sums in another order: the last bits
