"""The comparator on a real world: two batch runs (two lookup versions, two snapshots), a trained model, and a
shadow log whose live predictions the model computed from known features, some stale, some skewed by a planted
bug, some altered after scoring. The report renders (and opens in headless Chromium), `migrate gate` answers,
and the `shadow_report__<usecase>` DAG writes the report through Airflow."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest
from airflow.dag_processing.dagbag import DagBag
from chromium_driver import chromium
from parquet_damage import damage_page
from selenium.webdriver.common.by import By
from typer.testing import CliRunner

from comparisons import skew as skew_check
from comparisons.comparison import STEPS, compare
from comparisons.report import REPORT_STEPS, SECTIONS, write_report
from comparisons.shadow_rows import Window, load
from lookup_tables import TableSpec, open_lookup_store
from migrate.artifact import ArtifactStore
from migrate.batch import steps as batch
from migrate.batch.offline_store import open_offline
from migrate.cli.main import app
from migrate.scoring import load_model
from online.shadow.parquet import label_table, shadow_table
from online.shadow.record import ShadowRecord
from online.stream.label_topic import LabelRecord

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts" / "comparisons"
UC = "item_availability"


def skewed(product: int) -> bool:
    """The planted feature-skew bug: the live path reads found_rate_7d wrong (× 3 + 0.5) for these."""
    return product % 7 == 0


def altered(product: int) -> bool:
    """The planted code bug: the live path moves its score by 0.3 after scoring for these."""
    return product % 11 == 0 and not skewed(product)


@dataclass(frozen=True)
class Shadowed:
    world: Any
    start: datetime
    requests: int


def _write(root: Path, items: list[Any], moment: Any, table: Any) -> None:
    groups: dict[str, list[Any]] = {}
    for item in items:
        m = moment(item).astimezone(UTC)
        groups.setdefault(f"date={m:%Y-%m-%d}/hour={m:%H}", []).append(item)
    for part, rows in groups.items():
        path = root / part / "part-test-0-0-0.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table(rows, [0] * len(rows), list(range(len(rows)))), path)


@pytest.fixture(scope="module")
def shadowed(world: Any) -> Shadowed:
    """Two published lookup versions and three hours of shadow traffic the day after the second cutoff."""
    settings, usecase = world.settings, world.usecase
    for end in (world.cutoff - timedelta(days=1), world.cutoff):
        batch.run_batch(usecase, settings, batch.Interval(end - timedelta(days=1), end), run_id=f"cmp-{end:%d}")
    model = load_model(usecase, ArtifactStore(settings.artifacts_dir, settings.project_dir))
    start = world.cutoff + timedelta(hours=23)  # features of the next day exist offline: the batch table is stale
    names = usecase.feature_names
    with open_offline(settings.offline_store_path) as con:
        fresh = con.execute(
            f"SELECT store_id, product_id, {', '.join(names)}, as_of FROM item_features_daily "
            "QUALIFY row_number() OVER (PARTITION BY store_id, product_id ORDER BY as_of DESC) = 1 ORDER BY ALL"
        ).fetchall()
    store = open_lookup_store(settings)
    spec = TableSpec.for_usecase(usecase, settings)
    rng = np.random.default_rng(4)
    records, labels = [], []
    for i in range(600):
        store_id, product_id, *values, as_of = fresh[int(rng.integers(len(fresh)))]
        features = dict(zip(names, (None if v is None else float(v) for v in values), strict=True))
        if skewed(product_id):
            features["found_rate_7d"] = (features["found_rate_7d"] or 0.0) * 3 + 0.5
        matrix = np.array([[np.nan if features[n] is None else features[n] for n in names]], dtype=np.float64)
        live = float(model.score(matrix)[0])
        if altered(product_id):
            live = live + 0.3 if live < 0.6 else live - 0.3
        row = store.get_many(spec, [(store_id, product_id)]).get((store_id, product_id))
        now = start + timedelta(seconds=18 * i)
        records.append(
            ShadowRecord(
                request_id=f"q{i}",
                usecase=UC,
                key={"store_id": store_id, "product_id": product_id},
                request_time=now,
                served_source="batch",
                stage="shadow",
                batch_prediction=None if row is None else row.prediction,
                batch_miss=row is None,
                batch_data_age_s=None if row is None else (now - row.features_as_of).total_seconds(),
                batch_model_version=None if row is None else row.model_version,
                batch_latency_ms=float(rng.uniform(0.3, 2)),
                online_prediction=live,
                online_feature_ages_s={n: (now - as_of.replace(tzinfo=UTC)).total_seconds() for n in names},
                online_features=features,
                online_model_version=model.version,
                online_latency_ms=float(rng.uniform(2, 9)),
            )
        )
        outcome = float(rng.random() < live)
        labels.append(
            LabelRecord(
                usecase=UC,
                key={"store_id": store_id, "product_id": product_id},
                event_time=now + timedelta(minutes=float(rng.uniform(1, 50))),
                label=outcome,
                source_event_id=f"e{i}",
            )
        )
    _write(settings.shadow_dir / UC, records, lambda r: r.request_time, shadow_table)
    _write(settings.labels_dir / UC, labels, lambda r: r.event_time, label_table)
    return Shadowed(world, start, len(records))


@pytest.fixture(scope="module")
def report(shadowed: Shadowed) -> Any:
    settings = shadowed.world.settings
    return write_report(shadowed.world.usecase, settings, out_dir=settings.state_dir / "reports" / "test")


def test_report_has_every_section_figure_and_number(report: Any, shadowed: Shadowed) -> None:
    text = report.html.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in text
    figures = re.findall(r'data-figure="(\w+)"', text)
    assert set(figures) == {
        "ages",
        "coverage",
        "roc",
        "calibration",
        "scatter",
        "agreement",
        "hourly_accuracy",
        "latency",
    }
    assert text.count("<svg") == len(figures)
    # Self-contained: no script, nothing fetched (the only URLs are XML namespaces inside the SVGs).
    assert "<script" not in text
    assert not re.search(r'(src|href)="(https?:)?//', text)
    numbers = json.loads(report.json.read_text())
    assert numbers["verdict"]["decision"] == report.verdict.decision
    assert numbers["rows"] == shadowed.requests
    assert numbers["noise_floor"]["known"] is True  # two lookup versions
    assert numbers["coverage"]["misses"] > 0  # products listed after the cutoff
    assert numbers["coverage"]["misses_new"] == numbers["coverage"]["misses"]
    assert numbers["staleness"]["batch"]["p50"] > 20 * 3600 > numbers["staleness"]["live"]["p50"]
    assert numbers["accuracy"]["pairs"] > 400
    assert len(numbers["hourly"]) >= 3
    assert {g["group"] for g in numbers["staleness"]["groups"]} == {"batch features", "entity"}
    assert set(numbers["baselines"]["paths"]) == {"batch", "live"}
    # Every request was served from the lookup table at stage shadow: the live answers' 2-9 ms are the shadow
    # comparison's, reported as background, and the live path has no served latency yet.
    live = numbers["latency"]["live"]
    assert live["latency_ms"]["n"] == 0 and live["background_ms"]["n"] == shadowed.requests
    assert (
        2 <= live["background_ms"]["p50"] <= 9 and numbers["latency"]["batch"]["latency_ms"]["n"] == shadowed.requests
    )
    assert "<td>live (background)</td>" in text and "not served yet" in text


def test_feature_skew_finds_the_planted_bug(report: Any, shadowed: Shadowed) -> None:
    """The live path reads found_rate_7d wrong for every 7th product: that feature, and only that one, differs from
    its offline point-in-time value, on about the share of requests those products got."""
    skew = json.loads(report.json.read_text())["feature_skew"]
    assert skew["available"], skew["reason"]
    top, *rest = skew["features"]
    assert top["feature"] == "found_rate_7d" and top["mismatches"] > 0
    assert 0.05 < top["mismatch_rate"] < 0.3  # products divisible by 7 among those requested (~1/7)
    assert all(f["mismatches"] == 0 for f in rest if f["kind"] == "batch"), rest
    # The verdict judges the feature off on the largest share of the sampled answers against max_feature_skew.
    check = next(c for c in report.verdict.checks if c.name == "feature_skew")
    off = max(f["mismatches"] + f["missing_online"] + f["missing_offline"] for f in skew["features"])
    assert check.value == pytest.approx(off / skew["sampled"]) and check.passed is (check.value <= check.limit)
    assert (check.detail in report.verdict.reasons) is (check.passed is False)


def test_a_large_window_samples_feature_skew_from_row_groups_spread_over_it(
    shadowed: Shadowed, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond CLUSTER_ABOVE rows the sample comes from GROUPS row groups spread evenly over the window's files (here
    the first and the last hour's), the rows with the smallest hashes among theirs (by hand, in SQL over those
    files); the planted bug is still found on that sample."""
    monkeypatch.setattr(skew_check, "CLUSTER_ABOVE", 100)
    monkeypatch.setattr(skew_check, "GROUPS", 2)
    monkeypatch.setattr(skew_check, "SAMPLE", 150)
    settings, usecase = shadowed.world.settings, shadowed.world.usecase
    files = sorted(str(p) for p in (settings.shadow_dir / UC).glob("date=*/hour=*/*.parquet"))
    assert len(files) >= 3 and all(pq.ParquetFile(f).metadata.num_row_groups == 1 for f in files)
    chosen = [files[0], files[-1]]
    expected = [
        row[0]
        for row in duckdb.sql(
            f"SELECT request_id FROM read_parquet({chosen!r}) WHERE online_prediction IS NOT NULL "
            "ORDER BY hash(request_id, entity_key) LIMIT 150"
        ).fetchall()
    ]
    rows = load(usecase, settings.shadow_dir / UC, settings.labels_dir / UC, Window())
    try:
        sample = skew_check._sample(rows, usecase)
        picked = [
            row[0]
            for row in duckdb.sql(
                f"SELECT request_id FROM read_parquet({files!r}) WHERE online_prediction IS NOT NULL "
                "ORDER BY hash(request_id, entity_key)"
            ).fetchall()
        ]
        by_hash = {row["x"] for row in sample}
        assert len(sample) == 150
        found = duckdb.sql(
            f"SELECT request_id FROM read_parquet({files!r}) WHERE hash(request_id, entity_key) IN "
            f"({', '.join(str(x) for x in by_hash)})"
        ).fetchall()
        assert sorted(r[0] for r in found) == sorted(expected)
        assert expected != picked[:150]  # the whole window's smallest hashes differ: the groups were chosen
        measured = skew_check.measure(rows, usecase, settings)
    finally:
        rows.con.close()
    assert measured.available and measured.sampled == 150, measured.reason
    top = measured.features[0]
    assert top.feature == "found_rate_7d" and 0.05 < (top.mismatch_rate or 0) < 0.3


def test_report_reads_as_prose_not_as_python(report: Any) -> None:
    """No dict or list reprs, no raw datetimes, one precision for metrics, and a contents list."""
    text = report.html.read_text()
    visible = re.sub(r"<svg.*?</svg>", "", text, flags=re.S)  # the figures' own markup aside
    for leak in ("{'", "': ", "['", "datetime.", "+00:00", "None"):
        assert leak not in visible, (leak, visible[max(0, visible.find(leak) - 200) : visible.find(leak) + 200])
    assert '<nav><b>Contents</b><ol><li><a href="#verdict">' in text
    metrics = re.findall(r"<td>(0\.\d+)</td>", visible)
    assert metrics and all(len(m) == 5 for m in metrics), metrics  # 0.xxx everywhere
    assert "of requests (≥" in visible and "labeled pairs (≥" in visible
    assert "Calibration bins" in visible and "95 % interval" in visible


def test_disagreements_are_attributed_to_the_planted_causes(report: Any) -> None:
    explanation = json.loads(report.json.read_text())["explanation"]
    assert explanation["available"], explanation["reason"]
    kinds = {k["kind"]: k for k in explanation["kinds"]}
    for case in kinds["feature_skew"]["top"]:
        assert skewed(case["key"]["product_id"]), case
        assert "found_rate_7d" in case["detail"]
    for case in kinds["model_skew"]["top"]:
        assert altered(case["key"]["product_id"]), case
    for case in kinds["stale_data"]["top"]:
        assert not skewed(case["key"]["product_id"]) and not altered(case["key"]["product_id"]), case
    assert kinds["feature_skew"]["entities"] > 0 and kinds["model_skew"]["entities"] > 0
    assert kinds["stale_data"]["entities"] > 0
    assert kinds["undetermined"]["entities"] == 0


def test_a_damaged_snapshot_leaves_the_explanation_unavailable_and_says_why(shadowed: Shadowed) -> None:
    # A page of each batch snapshot damaged: DuckDB's error names no file; the explanation names the snapshot, and
    # every other measure and the verdict stand.
    settings, usecase = shadowed.world.settings, shadowed.world.usecase
    snapshots = sorted((settings.snapshots_dir / UC).glob("*/snapshot.parquet"))
    kept = {path: path.read_bytes() for path in snapshots}
    try:
        for path in snapshots:
            damage_page(path, "found_rate_7d")
        result = compare(usecase, settings)
    finally:
        for path, data in kept.items():
            path.write_bytes(data)
    reason = result.explanation.reason
    assert not result.explanation.available
    assert "the batch snapshot" in reason and "cannot be read" in reason and "restore that file" in reason
    assert any(str(path) in reason for path in snapshots), reason
    assert result.rows == shadowed.requests and result.verdict.decision


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def test_report_renders_in_chromium(report: Any, browser: Any) -> None:

    browser.get(report.html.as_uri())
    assert report.verdict.decision in browser.title
    badge = browser.find_element(By.ID, "decision")
    assert badge.text == report.verdict.decision.upper()
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('figure svg')).map(s => s.getBoundingClientRect().width)"
    )
    assert len(sizes) == 8 and all(width > 200 for width in sizes)
    failed = browser.execute_script("return performance.getEntriesByType('resource').map(r => r.name)")
    assert failed == []  # nothing was fetched
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser.set_window_size(1280, int(browser.execute_script("return document.body.scrollHeight")) + 100)
    shot = ARTIFACTS / "report.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 50_000
    shutil.copy(report.html, ARTIFACTS / "report.html")


def test_gate_cli(shadowed: Shadowed) -> None:
    runner = CliRunner()
    as_json = runner.invoke(app, ["gate", UC, "--json"])
    assert as_json.exit_code == 0, as_json.output
    verdict = json.loads(as_json.output)
    assert verdict["decision"] in ("promote", "hold", "rollback")
    assert {c["name"] for c in verdict["checks"]} >= {"labeled_samples", "accuracy", "live_error_rate"}
    human = runner.invoke(app, ["gate", UC])
    assert human.exit_code == 0 and verdict["decision"].upper() in human.output
    until = (shadowed.start + timedelta(hours=1)).isoformat()
    windowed = runner.invoke(app, ["gate", UC, "--json", "--until", until])
    assert windowed.exit_code == 0, windowed.output
    assert json.loads(windowed.output)["evidence"]["requests"] < shadowed.requests


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["gate", "no_such_usecase"], "no use case 'no_such_usecase'"),
        (["gate", UC, "--since", "2026-11-06", "--until", "2026-11-05"], "at or before it starts"),
        (["gate", UC, "--since", "yesterday"], "is not a time"),
        (["gate", UC, "--until", "2020-01-01"], "no shadow log"),
    ],
)
def test_gate_cli_errors_say_what_and_how_to_fix(shadowed: Shadowed, args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert message in result.output and "fix:" in result.output


def test_report_reports_each_step_as_it_ends_and_the_total_is_their_number(shadowed: Shadowed, tmp_path: Path) -> None:
    heard: list[str] = []
    settings = shadowed.world.settings
    result = write_report(shadowed.world.usecase, settings, out_dir=tmp_path, on_step=heard.append)
    # The progress bar's total (len(REPORT_STEPS)) is what the run went through: every timed step, once, in order.
    assert heard == list(REPORT_STEPS) == list(result.timings)
    assert heard[: len(STEPS)] == list(STEPS)


def test_report_cli_writes_both_files(shadowed: Shadowed, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", UC, "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "report.html").exists() and (tmp_path / "report.json").exists()
    assert str(tmp_path / "report.html") in result.output


DAG_FILE = ROOT / "dags" / "shadow_report.py"


def _dagbag() -> Any:

    return DagBag(dag_folder=str(DAG_FILE))


@pytest.mark.airflow
def test_shadow_report_dag_loads_and_imports_nothing_heavy() -> None:
    bag = _dagbag()
    assert bag.import_errors == {}
    dag = bag.dags[f"shadow_report__{UC}"]
    assert {"migrate", "comparison", f"usecase:{UC}"} <= set(dag.tags)
    assert [t.task_id for t in dag.tasks] == ["report", "judge_candidate"] and not dag.catchup
    code = (
        "import runpy, sys; runpy.run_path(sys.argv[1]); "
        "print(','.join(m for m in ('duckdb', 'matplotlib', 'numpy', 'sklearn', 'comparisons') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(DAG_FILE)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1:] in ([], [""]), done.stdout


@pytest.mark.airflow
def test_shadow_report_dag_writes_the_report_and_returns_the_verdict(shadowed: Shadowed, airflow_db: None) -> None:
    dag = _dagbag().dags[f"shadow_report__{UC}"]
    # The run whose data interval ends at 05:00 after the traffic (01:00-04:00): its window holds all of it.
    logical = shadowed.start.replace(hour=5, minute=0, second=0, microsecond=0)
    run = dag.test(logical_date=logical)
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state
    folder = shadowed.world.settings.state_dir / "reports" / UC / f"{logical:%Y-%m-%d}"
    numbers = json.loads((folder / "report.json").read_text())
    assert numbers["rows"] == shadowed.requests
    assert (folder / "report.html").read_text().count("<svg") == 8


@pytest.mark.airflow
def test_shadow_report_task_log_starts_with_the_report_location_then_the_verdict(
    shadowed: Shadowed, airflow_db: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Libraries that warn by the hundred while the comparison runs do not bury the verdict: their warnings are
    counted in one line after it."""
    import warnings  # noqa: PLC0415 - only this test makes noise

    import comparisons.report  # noqa: PLC0415 - patched below, imported by the task when it runs

    real = comparisons.report.write_report

    def noisy(*args: Any, **kwargs: Any) -> Any:
        for _ in range(500):
            warnings.warn("an old API", DeprecationWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(comparisons.report, "write_report", noisy)
    dag = _dagbag().dags[f"shadow_report__{UC}"]
    logical = shadowed.start.replace(hour=5, minute=0, second=0, microsecond=0)
    with caplog.at_level("INFO"):
        run = dag.test(logical_date=logical)
    assert str(run.state) in ("success", "DagRunState.SUCCESS"), run.state
    lines = [r.getMessage() for r in caplog.records if r.name in ("migrate.shadow_report", "py.warnings")]
    folder = shadowed.world.settings.state_dir / "reports" / UC / f"{logical:%Y-%m-%d}"
    assert lines[0] == f"report: {folder / 'report.html'} (numbers: {folder / 'report.json'})", lines[:3]
    assert (folder / "report.html").exists()
    assert lines[2].startswith(f"verdict for {UC}: ") and "report: " in lines[2], lines[:3]
    assert not any("an old API" in line for line in lines)
    assert any(line.startswith("500 warnings while comparing (500× DeprecationWarning") for line in lines), lines
