"""``GET /v1/reports/{usecase}/latest``: the newest report of a served use case, HTML or JSON, and clear 404s."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from migrate.registry import load_usecase
from online.serving.app import ServingDeps, create_app
from online.serving.metrics import ServingMetrics

pytestmark = pytest.mark.unit

USECASE = load_usecase(Path(__file__).resolve().parents[3] / "usecases" / "item_availability.yaml")


def _report(folder: Path, text: str, mtime: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in (("report.html", f"<html>{text}</html>"), ("report.json", f'{{"which": "{text}"}}')):
        (folder / name).write_text(body)
        os.utime(folder / name, (mtime, mtime))


def _client(reports: Path) -> TestClient:
    deps = ServingDeps(
        servers={},
        usecases={USECASE.name: USECASE},
        metrics=ServingMetrics(CollectorRegistry()),
        flag_store=None,
        admin_token=None,
        readiness=dict,
        reports_dir=reports,
    )
    return TestClient(create_app(deps))


def test_the_newest_report_is_served_as_html_or_json(tmp_path: Path) -> None:
    root = tmp_path / "reports"
    _report(root / USECASE.name, "from the CLI", 1_700_000_000)
    _report(root / USECASE.name / "2026-11-30", "from the DAG, older", 1_600_000_000)
    _report(root / USECASE.name / "2026-12-01", "from the DAG, newest", 1_800_000_000)
    client = _client(root)
    page = client.get(f"/v1/reports/{USECASE.name}/latest")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.text == "<html>from the DAG, newest</html>"
    numbers = client.get(f"/v1/reports/{USECASE.name}/latest", params={"format": "json"})
    assert numbers.status_code == 200 and numbers.json() == {"which": "from the DAG, newest"}
    assert client.get(f"/v1/reports/{USECASE.name}/latest", params={"format": "pdf"}).status_code == 422
    # Read-only: no other method on the route.
    assert client.put(f"/v1/reports/{USECASE.name}/latest").status_code == 405


def test_unknown_use_cases_and_missing_reports_are_clear_404s(tmp_path: Path) -> None:
    client = _client(tmp_path / "reports")
    missing = client.get(f"/v1/reports/{USECASE.name}/latest")
    assert missing.status_code == 404 and f"migrate report {USECASE.name}" in missing.json()["detail"]
    unknown = client.get("/v1/reports/nobody/latest")
    assert unknown.status_code == 404 and "no use case 'nobody'" in unknown.json()["detail"]
    # A name that would walk out of the reports folder is not a served use case: nothing is read.
    assert client.get("/v1/reports/..%2F..%2Fetc/latest").status_code == 404
