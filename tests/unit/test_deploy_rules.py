"""deploy/: the Grafana dashboard and the Prometheus alert rules parse, and the PromQL scanner finds their metrics.

That every name is one the service exports is checked against a real service in
tests/integration/online/test_deploy_metrics.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from promql_names import (
    ALERTS,
    UnknownIdentifierError,
    alert_expressions,
    dashboard_expressions,
    exposed_names,
    metric_names,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (usecase) (rate(a_total{status=~"5.."}[5m])) / sum by (usecase) (rate(a_total[5m])) > 0.01',
            {"a_total"},
        ),
        (
            "histogram_quantile(0.99, sum by (usecase, le) (rate(x_bucket[$__rate_interval])))"
            " > 0.8 * on (usecase) group_left max by (usecase) (limit_seconds)",
            {"x_bucket", "limit_seconds"},
        ),
        ("count by (usecase) (max by (usecase, stage) (stage_gauge) == 1) > 1", {"stage_gauge"}),
        ("sum(b) without (pid) + c offset 5m and on() d", {"b", "c", "d"}),
        ('max_over_time(e{name="sum(not_a_metric)"}[1h:5m]) > 2e3', {"e"}),
        ("topk(3, f) unless g", {"f", "g"}),
    ],
)
def test_scanner_finds_the_metrics_and_nothing_else(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_scanner_refuses_an_unknown_function() -> None:
    with pytest.raises(UnknownIdentifierError, match="'ratee' is called like a function"):
        metric_names("ratee(a_total[5m])")


def test_exposed_names_add_the_suffixes_of_a_family_without_samples() -> None:
    text = (
        "# HELP h_seconds a histogram\n# TYPE h_seconds histogram\n"
        "# HELP c_total a counter\n# TYPE c_total counter\n"
        '# HELP g a gauge\n# TYPE g gauge\ng{usecase="x"} 1.0\n'
    )
    assert exposed_names(text) == {"h_seconds_bucket", "h_seconds_sum", "h_seconds_count", "c_total", "g"}


def test_every_dashboard_and_alert_expression_reads_a_migrate_metric() -> None:
    exprs = dashboard_expressions() + alert_expressions()
    assert len(exprs) > 20
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        assert all(name.startswith("migrate_") for name in names), expr


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not on PATH (Debian: apt install prometheus); the rules were not checked by it")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
