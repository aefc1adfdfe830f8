"""A shadow log written by something other than the sink, holding NaN and ±inf scores on either side: the report
counts them, makes them errors of their path, leaves them out of every metric (checked against the finite rows by
hand) and still writes strict JSON."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from comparison_fixtures import USECASE, label, record, write_shadow

from comparisons.report import write_report
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit

N = 400
BAD = (math.nan, math.inf, -math.inf)
BATCH_BAD = {3: math.nan, 50: math.inf, 120: -math.inf, 7: math.nan}  # row → the score logged by the batch side
LIVE_BAD = {9: math.nan, 77: math.inf, 200: -math.inf, 7: math.inf}  # and by the live side (row 7: both sides)


def _strict(text: str) -> object:
    def refuse(constant: str) -> object:
        raise AssertionError(f"report.json holds {constant}")

    return json.loads(text, parse_constant=refuse)


def _world(settings: Settings, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """N requests of N entities over two hours, each labeled 5 minutes later; their batch and live scores and labels."""
    rng = np.random.default_rng(seed)
    bp = np.round(rng.uniform(0.05, 0.95, N), 4)
    op = np.round(rng.uniform(0.05, 0.95, N), 4)
    y = (rng.random(N) < 0.5).astype(float)
    minutes = np.sort(rng.uniform(0, 120, N))
    records = [record(i, float(minutes[i]), product=i, bp=float(bp[i]), op=float(op[i])) for i in range(N)]
    labels = [label(float(minutes[i] + 5), float(y[i]), product=i) for i in range(N)]
    labels.append(label(600, 0.0, store=99, product=99))  # the watermark: every window has closed
    write_shadow(settings, records, labels)
    return bp, op, y


def _rewritten(settings: Settings, batch: dict[int, float], live: dict[int, float]) -> None:
    """The shadow files' scores of the rows `batch` and `live` name rewritten by hand, as another writer would."""
    for path in (settings.shadow_dir / USECASE).glob("date=*/hour=*/*.parquet"):
        table = pq.read_table(path)
        rows = [int(r[1:]) for r in table.column("request_id").to_pylist()]
        for column, bad in (("batch_prediction", batch), ("online_prediction", live)):
            values = pa.array([bad.get(i, v) for i, v in zip(rows, table.column(column).to_pylist(), strict=True)])
            table = table.set_column(table.schema.get_field_index(column), column, values)
        pq.write_table(table, path)


def test_nan_and_infinite_scores_are_counted_as_errors_and_left_out_of_every_metric(
    settings: Settings, usecase: UseCase
) -> None:
    bp, op, y = _world(settings, seed=5)
    _rewritten(settings, BATCH_BAD, LIVE_BAD)  # the sink's record refuses NaN and infinities: another writer's
    assert {v for v in (*BATCH_BAD.values(), *LIVE_BAD.values()) if not math.isnan(v)} == {math.inf, -math.inf}

    files = write_report(usecase, settings, out_dir=settings.state_dir / "report")
    report = _strict(files.json.read_text(encoding="utf-8"))
    assert isinstance(report, dict)

    coverage = report["coverage"]
    assert coverage["non_finite"] == {"batch": len(BATCH_BAD), "live": len(LIVE_BAD)}
    assert coverage["batch_answered"] == coverage["live_answered"] == N - 4
    latency = report["latency"]
    assert (latency["batch"]["errors"], latency["live"]["errors"]) == (len(BATCH_BAD), len(LIVE_BAD))
    assert report["staleness"]["live"]["n"] == N - len(LIVE_BAD)  # a live age only behind a finite answer

    finite = [i for i in range(N) if i not in BATCH_BAD and i not in LIVE_BAD]
    assert report["accuracy"]["pairs"] == len(finite) == N - 7
    scores = {s["metric"]: s for s in report["accuracy"]["scores"]}
    for side, values in (("batch", bp), ("live", op)):
        brier = math.fsum((values[i] - y[i]) ** 2 for i in finite) / len(finite)
        assert scores["brier"][side] == pytest.approx(brier, rel=1e-12)
    delta = [abs(op[i] - bp[i]) for i in finite]
    assert report["agreement"]["pairs"] == len(finite)
    assert report["agreement"]["mean_abs_delta"] == pytest.approx(math.fsum(delta) / len(delta), rel=1e-12)
    page = files.html.read_text(encoding="utf-8")
    assert "NaN or ±infinity: batch 4, live 4" in page


BATCH_OUTSIDE = {4: 1.3, 60: -0.1, 8: 1.0000001}  # a binary use case's scores that are no probability
LIVE_OUTSIDE = {11: 2.0, 90: -0.5, 8: -1e-9}  # (row 8: both sides)


def test_a_binary_use_cases_scores_outside_0_1_are_counted_as_errors_and_left_out_of_every_metric(
    settings: Settings, usecase: UseCase
) -> None:
    """Before, a score of 1.3 or -0.5 went into every metric (a Brier term of 2.25 for -0.5 against a label of 1)."""
    assert usecase.label.kind == "binary"
    bp, op, y = _world(settings, seed=7)
    _rewritten(settings, BATCH_OUTSIDE, LIVE_OUTSIDE)

    files = write_report(usecase, settings, out_dir=settings.state_dir / "report")
    report = _strict(files.json.read_text(encoding="utf-8"))
    assert isinstance(report, dict)
    coverage = report["coverage"]
    assert coverage["out_of_range"] == {"batch": len(BATCH_OUTSIDE), "live": len(LIVE_OUTSIDE)}
    assert coverage["non_finite"] == {"batch": 0, "live": 0}
    assert coverage["batch_answered"] == coverage["live_answered"] == N - 3
    latency = report["latency"]
    assert (latency["batch"]["errors"], latency["live"]["errors"]) == (len(BATCH_OUTSIDE), len(LIVE_OUTSIDE))
    assert report["staleness"]["live"]["n"] == N - len(LIVE_OUTSIDE)  # a live age only behind a probability

    kept = [i for i in range(N) if i not in BATCH_OUTSIDE and i not in LIVE_OUTSIDE]
    assert report["accuracy"]["pairs"] == len(kept) == N - 5
    scores = {s["metric"]: s for s in report["accuracy"]["scores"]}
    for side, values in (("batch", bp), ("live", op)):
        brier = math.fsum((values[i] - y[i]) ** 2 for i in kept) / len(kept)
        assert scores["brier"][side] == pytest.approx(brier, rel=1e-12)
    assert "outside [0, 1] for a binary label: batch 3, live 3" in files.html.read_text(encoding="utf-8")


def test_a_regression_use_cases_scores_are_any_finite_number(settings: Settings, usecase: UseCase) -> None:
    regression = usecase.model_copy(update={"label": usecase.label.model_copy(update={"kind": "regression"})})
    _world(settings, seed=7)
    _rewritten(settings, BATCH_OUTSIDE, LIVE_OUTSIDE)
    files = write_report(regression, settings, out_dir=settings.state_dir / "report")
    report = _strict(files.json.read_text(encoding="utf-8"))
    assert isinstance(report, dict)
    assert report["coverage"]["out_of_range"] == {"batch": 0, "live": 0}
    assert report["coverage"]["batch_answered"] == report["coverage"]["live_answered"] == N
    assert report["accuracy"]["pairs"] == N
