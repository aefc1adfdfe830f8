"""Multiprocess mode: what /metrics shows when several worker processes write to PROMETHEUS_MULTIPROC_DIR."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from migrate.errors import ConfigError
from online.serving.metrics import MULTIPROC_ENV, exposition, prepare_multiprocess_dir

pytestmark = pytest.mark.unit

_ROOT = Path(__file__).resolve().parents[3]
_WORKER = """
import sys
from prometheus_client import CollectorRegistry
from online.serving.metrics import ServingMetrics, mark_dead
stage, percent, requests, calls, dies = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
metrics = ServingMetrics(CollectorRegistry())
metrics.served_stage("uc", stage, percent or None)
metrics.requests.labels("uc", "200").inc(requests)
metrics.guardrail_window("uc", calls, 1, 0)
if dies == "exits":
    mark_dead()
"""


def _worker(path: Path, *args: object) -> None:
    env = {MULTIPROC_ENV: str(path), "PATH": "/usr/bin:/bin"}
    subprocess.run([sys.executable, "-c", _WORKER, *map(str, args)], env=env, check=True, timeout=120, cwd=_ROOT)


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_counters_add_up_and_an_exited_workers_gauges_leave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _worker(tmp_path, "shadow", 0, 3, 10, "exits")  # a worker that served 3 requests at shadow, then exited
    _worker(tmp_path, "canary", 5, 4, 7, "lives")  # one still serving, at canary 5%
    monkeypatch.setenv(MULTIPROC_ENV, str(tmp_path))
    samples = _samples(exposition(CollectorRegistry()).decode())
    uc = (("usecase", "uc"),)
    assert samples[("migrate_predict_requests_total", (("status", "200"), *uc))] == 3 + 4  # counts outlive a worker
    assert samples[("migrate_guardrail_window_calls", uc)] == 7  # the live workers' windows only
    assert samples[("migrate_usecase_stage", (("stage", "canary"), *uc))] == 1
    assert samples[("migrate_usecase_stage", (("stage", "shadow"), *uc))] == 0
    assert samples[("migrate_canary_percent", uc)] == 5


def test_prepare_empties_the_directory_and_exports_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # setenv first so that monkeypatch records the variable and removes what prepare_multiprocess_dir sets: a
    # bare delenv of an unset variable records nothing, and the directory leaked into every later test's /metrics.
    monkeypatch.setenv(MULTIPROC_ENV, "unset by the test")
    monkeypatch.delenv(MULTIPROC_ENV)
    shared = tmp_path / "prometheus"
    shared.mkdir()
    (shared / "counter_123.db").write_bytes(b"a previous run")
    (shared / "notes.txt").write_text("not ours")
    assert prepare_multiprocess_dir(shared) == shared
    assert sorted(p.name for p in shared.iterdir()) == ["notes.txt"]
    assert os.environ[MULTIPROC_ENV] == str(shared)


def test_no_test_leaves_the_multiprocess_directory_set() -> None:
    """Runs after the tests above (file order): /metrics of later tests in this session read their own registry."""
    assert MULTIPROC_ENV not in os.environ


def test_prepare_refuses_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    afile = tmp_path / "metrics"
    afile.write_text("")
    monkeypatch.setenv(MULTIPROC_ENV, str(afile))
    with pytest.raises(ConfigError, match="is not a directory") as refused:
        prepare_multiprocess_dir(tmp_path / "default")
    assert refused.value.fix is not None and MULTIPROC_ENV in refused.value.fix
