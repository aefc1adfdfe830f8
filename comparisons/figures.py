"""The report's figures, drawn with matplotlib (no pyplot, no GUI) and returned as inline SVG strings.

Each function takes the comparison and returns one ``<svg>`` element. Text stays text (``svg.fonttype none``) and
every figure salts its element ids with its own name, so several can share one HTML page without clashing.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from datetime import UTC, datetime

import matplotlib as mpl
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter

from comparisons.comparison import Comparison
from comparisons.stats import Histogram

__all__ = ["FIGURES", "render_all"]

BATCH, LIVE = "#7f7f7f", "#1f77b4"
COLOURS = {"batch": BATCH, "live": LIVE, "batch (background)": "#c7c7c7", "live (background)": "#aec7e8"}


def _svg(name: str, draw: Callable[[Figure], None], size: tuple[float, float] = (6.4, 3.4)) -> str:
    with mpl.rc_context({"svg.fonttype": "none", "svg.hashsalt": name, "font.size": 9}):
        figure = Figure(figsize=size, layout="constrained")
        draw(figure)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _legend(ax: Axes, **options: object) -> None:
    """The axes' legend, when a series has a label: a window with no labelled pair (or no answer of a path) draws
    nothing to name, and matplotlib warns on an empty legend."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**options)


def _times(moments: list[datetime]) -> np.ndarray:
    """UTC instants as naive datetime64 (what matplotlib's date axis takes without a zone warning)."""
    return np.array([m.astimezone(UTC).replace(tzinfo=None) for m in moments], dtype="datetime64[us]")


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def decade_label(value: float) -> str:
    """A log axis's tick as plain text: ``0.001`` … ``100,000``, then ``10⁶``, ``2×10⁷`` (Unicode superscripts)."""
    if not value > 0 or not math.isfinite(value):
        return ""
    exponent = math.floor(math.log10(value) + 1e-9)
    if -3 <= exponent <= 5:
        return f"{value:,g}"
    mantissa = value / 10**exponent
    head = "" if abs(mantissa - 1) < 1e-9 else f"{mantissa:g}×"
    return f"{head}10{str(exponent).translate(_SUPERSCRIPTS)}"


class PlainLogFormatter(LogFormatter):
    """matplotlib's choice of which log-axis ticks get a label (`LogFormatter`), each written by `decade_label`.

    A log axis's default formatter writes every label as mathtext (``$\\mathdefault{10^{3}}$``), and the report,
    drawing each figure once in a fresh process, built mathtext's parser and parsed its labels (52 parses) every
    time: its figures took 2.76 s of CPU with them and 2.09 s without at 10M rows (docs/comparisons.md)."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        return decade_label(x) if super().__call__(x, pos) else ""


def _log_x(ax: Axes) -> None:
    """A log x axis labelled in plain text, its ticks chosen as matplotlib's log scale chooses them."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(PlainLogFormatter())
    ax.xaxis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def _histogram(ax: Axes, histogram: Histogram, unit: str) -> None:
    edges = np.asarray(histogram.edges)
    for path, counts in histogram.counts.items():
        total = sum(counts)
        if total:
            share = np.asarray(counts, dtype=float) / total
            ax.stairs(share, edges, label=f"{path} (n={total:,})", color=COLOURS[path], linewidth=1.6)
    _log_x(ax)
    ax.set_xlabel(unit)
    ax.set_ylabel("share of requests")
    _legend(ax, loc="upper left", frameon=False)


def _ages(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        _histogram(ax, c.staleness.histogram, "data age (seconds, log scale)")
        for seconds, label in ((3600, "1 h"), (86400, "1 day")):
            ax.axvline(seconds, color="#bbbbbb", linestyle=":", linewidth=1)
            ax.text(seconds, ax.get_ylim()[1] * 0.95, f" {label}", color="#777777", fontsize=8, va="top")
        ax.set_title("How old the data behind each prediction was")

    return _svg("ages", draw)


def _coverage(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        hours = _times([h.hour for h in c.hourly])
        ax.plot(hours, [h.batch_share for h in c.hourly], color=BATCH, marker=".", label="batch answered")
        ax.plot(hours, [h.live_share for h in c.hourly], color=LIVE, marker=".", label="live answered")
        ax.plot(hours, [h.miss_share for h in c.hourly], color="#d62728", linestyle="--", label="lookup miss")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("share of requests")
        ax.set_title("Coverage over the day (per hour, UTC)")
        _legend(ax, loc="center left", frameon=False)
        figure.autofmt_xdate()

    return _svg("coverage", draw)


def _roc(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        auc = c.accuracy.score("auc")
        for path, curve in c.accuracy.roc.items():
            value = None if auc is None else getattr(auc, path)
            label = f"{path} AUC {value:.4f}" if value is not None else path
            ax.plot(curve["fpr"], curve["tpr"], color=COLOURS[path], label=label)
        ax.plot([0, 1], [0, 1], color="#cccccc", linestyle=":")
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.set_title(f"ROC on {c.accuracy.pairs:,} labeled requests")
        _legend(ax, loc="lower right", frameon=False)

    return _svg("roc", draw, (4.2, 3.8))


def _calibration(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        for path, bins in c.accuracy.calibration.items():
            points = [(p, o) for p, o in zip(bins.predicted, bins.observed, strict=True) if p is not None]
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, color=COLOURS[path], marker="o", label=path)
        low, high = ax.get_xlim()
        ax.plot([low, high], [low, high], color="#cccccc", linestyle=":")
        ax.set_xlabel("mean prediction (bin)")
        ax.set_ylabel("mean label")
        ax.set_title("Calibration")
        _legend(ax, loc="upper left", frameon=False)

    return _svg("calibration", draw, (4.2, 3.8))


def _scatter(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        xs, ys = c.scatter.get("batch", []), c.scatter.get("live", [])
        ax.scatter(xs, ys, s=4, alpha=0.35, color=LIVE, rasterized=True, linewidths=0)
        both = xs + ys
        low, high = (min(both), max(both)) if both else (0.0, 1.0)
        ax.plot([low, high], [low, high], color="#333333", linewidth=0.8)
        t = c.agreement.threshold
        ax.axvline(t, color="#d62728", linestyle=":", linewidth=1)
        ax.axhline(t, color="#d62728", linestyle=":", linewidth=1)
        ax.set_xlabel("batch prediction (served)")
        ax.set_ylabel("live prediction (shadow)")
        ax.set_title(f"Batch vs live ({len(xs):,} sampled requests)")

    return _svg("scatter", draw, (4.2, 3.8))


def _latency(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        _histogram(ax, c.latency.histogram, "latency (ms, log scale)")
        p99 = c.latency.live.latency_ms.p99
        if p99 is not None:
            ax.axvline(p99, color=LIVE, linestyle="--", linewidth=1)
        ax.set_title("Latency per path (dashed: live p99)")

    return _svg("latency", draw)


def _hourly_accuracy(c: Comparison) -> str:
    metric = c.verdict.evidence.metric

    def draw(figure: Figure) -> None:
        ax = figure.subplots()
        hours = _times([h.hour for h in c.accuracy.hourly])
        for path in ("batch", "live"):
            values = [getattr(h, path).get(metric) for h in c.accuracy.hourly]
            ax.plot(hours, [np.nan if v is None else v for v in values], color=COLOURS[path], marker=".", label=path)
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per hour (labeled requests)")
        _legend(ax, frameon=False)
        figure.autofmt_xdate()

    return _svg("hourly_accuracy", draw)


def _agreement(c: Comparison) -> str:
    def draw(figure: Figure) -> None:
        left, right = figure.subplots(1, 2)
        floor, agree = c.noise_floor, c.agreement
        labels = ["batch vs batch\n(noise floor)", "live vs batch"]
        for ax, values, title in (
            (left, [floor.mean_abs_delta, agree.mean_abs_delta], "mean |Δ|"),
            (right, [floor.flip_share, agree.flip_share], f"decisions flipped at {agree.threshold:g}"),
        ):
            heights = [0.0 if v is None else v for v in values]
            bars = ax.bar(labels, heights, color=[BATCH, LIVE])
            for bar, value in zip(bars, values, strict=True):
                text = "unknown" if value is None else f"{value:.3g}"
                ax.annotate(text, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom")
            ax.set_title(title)

    return _svg("agreement", draw)


FIGURES: dict[str, tuple[str, Callable[[Comparison], str]]] = {
    "ages": ("Data age per path", _ages),
    "coverage": ("Coverage over the day", _coverage),
    "roc": ("ROC per path", _roc),
    "calibration": ("Calibration per path", _calibration),
    "scatter": ("Batch vs live", _scatter),
    "agreement": ("Live vs batch against the noise floor", _agreement),
    "hourly_accuracy": ("Accuracy per hour", _hourly_accuracy),
    "latency": ("Latency per path", _latency),
}


def render_all(c: Comparison) -> dict[str, str]:
    """Every figure that applies to the comparison, by name (no ROC for regression labels)."""
    return {name: draw(c) for name, (_, draw) in FIGURES.items() if not (name == "roc" and c.accuracy.kind != "binary")}
