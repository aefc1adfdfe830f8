"""The metric names a PromQL expression reads, and the expressions in the repo's dashboard and alert rules.

A small scanner, not a full parser: it drops strings, label matchers and range/subquery brackets, then takes
every identifier that is not a function, an aggregation, a keyword or a label list (``by (…)``, ``on (…)``).
An identifier it cannot class (a function it does not know) is an error, not a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "migrate.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"

AGGREGATIONS = frozenset(
    [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ]
)
FUNCTIONS = frozenset(
    [
        "abs",
        "absent",
        "absent_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "delta",
        "deriv",
        "exp",
        "floor",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "double_exponential_smoothing",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "ln",
        "log2",
        "log10",
        "minute",
        "month",
        "predict_linear",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sort",
        "sort_desc",
        "sort_by_label",
        "sort_by_label_desc",
        "sqrt",
        "time",
        "timestamp",
        "vector",
        "year",
        "avg_over_time",
        "min_over_time",
        "max_over_time",
        "sum_over_time",
        "count_over_time",
        "quantile_over_time",
        "stddev_over_time",
        "stdvar_over_time",
        "last_over_time",
        "present_over_time",
        "mad_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "cos",
        "cosh",
        "sin",
        "sinh",
        "tan",
        "tanh",
        "deg",
        "pi",
        "rad",
    ]
)
KEYWORDS = frozenset(
    [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "and",
        "or",
        "unless",
        "offset",
        "atan2",
        "inf",
        "nan",
    ]
)
_LABEL_LISTS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^()]*)\)")
_TOKEN = re.compile(
    r"(?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[smhdwy]?)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)|(?P<other>.)", re.S
)


class UnknownIdentifierError(ValueError):
    """The scanner met an identifier called like a function that is not one it knows."""


def metric_names(expr: str) -> set[str]:
    """The metric names `expr` selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    text = re.sub(r"\{[^{}]*\}", " ", text)  # label matchers (their strings are already empty)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)  # ranges and subqueries: [5m], [$__rate_interval], [1h:5m]
    text = _LABEL_LISTS.sub(r"\1 ", text)  # by (usecase, le) → by
    names: set[str] = set()
    tokens = [(m.lastgroup, m.group()) for m in _TOKEN.finditer(text) if not m.group().isspace()]
    for i, (kind, value) in enumerate(tokens):
        if kind != "name" or value in KEYWORDS:
            continue
        called = i + 1 < len(tokens) and tokens[i + 1][1] == "("
        nxt = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        if value in AGGREGATIONS and (called or nxt in ("by", "without")):
            continue
        if called:
            if value in FUNCTIONS:
                continue
            raise UnknownIdentifierError(f"{value!r} is called like a function in {expr!r}, but is not a PromQL one")
        names.add(value)
    return names


def _grafana_variable(query: str) -> Iterator[str]:
    """The PromQL inside a Grafana variable query: label_values(expr, label) reads `expr`."""
    found = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query, re.S)
    if found:
        yield found.group(1)
    elif not query.strip().startswith("label_values("):
        yield query


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression in a Grafana dashboard: panel targets and variable queries."""
    board: dict[str, Any] = json.loads(path.read_text())
    exprs = [t["expr"] for panel in board["panels"] for t in panel.get("targets", ())]
    for variable in board.get("templating", {}).get("list", ()):
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        exprs += _grafana_variable(query["query"] if isinstance(query, dict) else query)
    return exprs


def alert_expressions(path: Path = ALERTS) -> list[str]:
    """Every rule's expression in a Prometheus rules file."""
    rules: dict[str, Any] = yaml.safe_load(path.read_text())
    return [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]


def exposed_names(text: str) -> set[str]:
    """Every series name a Prometheus text exposition offers: its samples', and each family's by its type (a family
    with labels but no sample yet is exported all the same, as its HELP and TYPE lines)."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415 - test helper

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names
