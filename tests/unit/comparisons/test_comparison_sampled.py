"""A shadow log that sampled a share of the entities (shadow.sample_percent): the report says so where its counts
are read, and shares are those of the sampled requests, as logged."""

from __future__ import annotations

import json

import pytest
from comparison_fixtures import label, record, write_shadow

from comparisons.report import write_report
from migrate.settings import Settings
from migrate.usecase import UseCase

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("percent", [100.0, 20.0])
def test_the_report_says_the_log_was_sampled_and_measures_what_it_logged(
    settings: Settings, usecase: UseCase, percent: float
) -> None:
    # 50 requests, the lookup missed every 5th (10 misses): a share of the logged requests, sampled or not.
    records = [
        record(i, i, product=i, bp=None if i % 5 == 0 else 0.4).model_copy(update={"sample_percent": percent})
        for i in range(50)
    ]
    write_shadow(settings, records, [label(600, 0.0, store=99, product=99)])
    files = write_report(usecase, settings, out_dir=settings.state_dir / "report")
    report = json.loads(files.json.read_text(encoding="utf-8"))
    assert report["shadow_sample_percent"] == percent
    assert (report["coverage"]["requests"], report["coverage"]["misses"]) == (50, 10)
    assert report["coverage"]["miss_share"] == pytest.approx(0.2)
    page = files.html.read_text(encoding="utf-8")
    assert ('id="sampled"' in page) is (percent < 100)
    if percent < 100:
        assert "sampled 20 %" in page


def test_a_window_without_any_labelled_pair_still_writes_a_strict_report(settings: Settings, usecase: UseCase) -> None:
    """The first hours of a shadow, no label closed yet: the report was refused (the baseline check's limit was
    NaN, which strict JSON cannot hold; matplotlib warned on legends with nothing to name)."""
    write_shadow(settings, [record(i, i, product=i) for i in range(30)], [label(600, 0.0, store=99, product=99)])
    files = write_report(usecase, settings, out_dir=settings.state_dir / "report")

    def refuse(constant: str) -> object:
        raise AssertionError(f"report.json holds {constant}")

    report = json.loads(files.json.read_text(encoding="utf-8"), parse_constant=refuse)
    assert report["accuracy"]["pairs"] == 0 and report["verdict"]["decision"] == "hold"
    baseline = next(c for c in report["verdict"]["checks"] if c["name"] == "beats_baseline")
    assert baseline["passed"] is None and baseline["limit"] is None
