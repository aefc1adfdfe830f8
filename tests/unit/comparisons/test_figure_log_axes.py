"""The report's log-scale figures (data ages, latency) label their ticks in plain text: the same ticks matplotlib's
own log formatter labels, each written by hand-checked rules, and never through mathtext (building its parser and
parsing the labels cost the report ~0.7 s of CPU at 10M rows, docs/comparisons.md)."""

from __future__ import annotations

import math
from typing import Any

import matplotlib.mathtext
import numpy as np
import pytest
from matplotlib.figure import Figure

from comparisons.figures import _histogram, decade_label
from comparisons.stats import Histogram

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("value", "label"),
    [
        (0.001, "0.001"),
        (0.25, "0.25"),
        (1.0, "1"),
        (2.0, "2"),
        (1000.0, "1,000"),
        (300_000.0, "300,000"),
        (1e6, "10⁶"),
        (2e7, "2×10⁷"),
        (1e-4, "10⁻⁴"),
        (5e-5, "5×10⁻⁵"),
        (0.0, ""),
        (math.nan, ""),
        (math.inf, ""),
    ],
)
def test_decade_labels_by_hand(value: float, label: str) -> None:
    assert decade_label(value) == label


def _labelled(edges: list[float], *, ours: bool) -> dict[float, str]:
    """The figure's x ticks that carry a label (major and minor), drawn with our formatter or matplotlib's."""
    figure = Figure(figsize=(6.4, 3.4), layout="constrained")
    ax = figure.subplots()
    counts = {"batch": [3] * (len(edges) - 1), "live": [1] * (len(edges) - 1)}
    _histogram(ax, Histogram(edges=edges, counts=counts), "ms")
    if not ours:  # what a log scale writes by default
        ax.set_xscale("linear")
        ax.set_xscale("log")
    figure.canvas.draw()
    low, high = ax.get_xlim()
    ticks: dict[float, str] = {}
    for label in ax.xaxis.get_ticklabels(which="both"):
        where, text = float(label.get_position()[0]), label.get_text()
        if low <= where <= high and label.get_visible() and text:
            ticks[where] = text
    return ticks


@pytest.mark.parametrize(
    "edges",
    [
        list(np.geomspace(0.01, 2e6, 30)),  # nine decades: decades only
        [2.0, 3.0, 5.0, 8.0],  # under one decade: matplotlib labels some minor ticks too
        list(np.geomspace(0.5, 40.0, 12)),  # about two decades
    ],
    ids=["nine-decades", "under-one-decade", "two-decades"],
)
def test_log_axes_label_matplotlibs_ticks_in_plain_text_without_mathtext(edges: list[float], monkeypatch: Any) -> None:
    default = _labelled(edges, ours=False)
    assert all(text.startswith("$") for text in default.values())  # the default writes mathtext: what is avoided

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a log axis of the report parsed mathtext")

    monkeypatch.setattr(matplotlib.mathtext.MathTextParser, "parse", refuse)
    ours = _labelled(edges, ours=True)
    assert set(ours) == set(default)  # the same ticks labelled as matplotlib's own choice
    assert len(ours) >= 2  # an axis a reader can read, even under one decade
    assert ours == {where: decade_label(where) for where in ours}
