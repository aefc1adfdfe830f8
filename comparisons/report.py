"""The comparison report: one self-contained HTML page (inline SVG figures, inline CSS, no script, nothing fetched)
and a JSON file with every number. `write_report` is what the CLI, the DAG and the demo call."""

from __future__ import annotations

import html
import json
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from comparisons.comparison import STEPS, Comparison, OnStep, compare, warm
from comparisons.shadow_rows import Window
from comparisons.verdict import Verdict
from migrate.settings import Settings
from migrate.usecase import UseCase

__all__ = ["REPORT_STEPS", "ReportFiles", "render_html", "write_report"]

SECTIONS = (
    "verdict",
    "staleness",
    "coverage",
    "accuracy",
    "checks",
    "agreement",
    "segments",
    "explanation",
    "latency",
    "waste",
    "method",
)

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.sub{color:#666} .badge{display:inline-block;padding:6px 14px;border-radius:6px;color:#fff;font-weight:700;
font-size:20px;letter-spacing:.05em}
.promote{background:#2e7d32} .hold{background:#b26a00} .rollback{background:#c62828}
table{border-collapse:collapse;margin:8px 0;background:#fff}
td,th{border:1px solid #e0e0e0;padding:4px 8px;text-align:left;vertical-align:top} th{background:#f2f2f2}
.pass{color:#2e7d32;font-weight:600} .fail{color:#c62828;font-weight:600} .na{color:#b26a00;font-weight:600}
figure{display:inline-block;margin:8px 12px 8px 0;background:#fff;border:1px solid #e6e6e6;padding:6px}
figure svg{max-width:100%;height:auto} figcaption{color:#555;font-size:12px}
ul.reasons li{margin:4px 0} .kpis{display:flex;flex-wrap:wrap;gap:12px;margin:12px 0}
.kpi{background:#fff;border:1px solid #e6e6e6;border-radius:6px;padding:8px 12px;min-width:150px}
.kpi b{display:block;font-size:20px} nav ol{columns:2;margin:8px 0}
.banner{background:#e8f0fe;border:1px solid #aac4f6;border-radius:6px;padding:8px 12px;margin:12px 0}
"""


@dataclass(frozen=True)
class ReportFiles:
    """Where the report went, the verdict it carries, and how long each step took (seconds)."""

    html: Path
    json: Path
    verdict: Verdict
    timings: dict[str, float]


def _e(value: object) -> str:
    return html.escape(str(value))


def _n(value: float | int | None, digits: int = 3) -> str:
    """A count with thousands separators, or a metric with `digits` decimals: one precision for every metric."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if value != 0 and abs(value) < 10**-digits:
        return f"{value:.1e}"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} ms"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _when(moment: object) -> str:
    return "–" if moment is None else f"{moment:%Y-%m-%d %H:%M} UTC"


def _counts(values: dict[str, int]) -> str:
    return ", ".join(f"{name} {count:,}" for name, count in sorted(values.items())) or "none"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} d"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _figure(figures: dict[str, str], name: str, caption: str, window: str = "") -> str:
    if name not in figures:
        return ""
    label = f"{caption} {window}".strip()
    return f'<figure data-figure="{name}">{figures[name]}<figcaption>{_e(label)}</figcaption></figure>'


def _verdict(c: Comparison) -> str:
    v = c.verdict
    marks = {True: '<span class="pass">pass</span>', False: '<span class="fail">fail</span>'}
    missing = '<span class="na">n/a</span>'
    checks = [[_e(k.name), missing if k.passed is None else marks[k.passed], _e(k.detail)] for k in v.checks]
    reasons = "".join(f"<li>{_e(r)}</li>" for r in v.reasons)
    auto = (
        " (auto_promote is on: the daily shadow_report DAG moves the flag one step along it)" if v.auto_promote else ""
    )
    return (
        f'<p><span class="badge {v.decision}" id="decision">{v.decision.upper()}</span>{_e(auto)}</p>'
        f'<ul class="reasons">{reasons}</ul>{_table(["check", "result", "detail"], checks)}'
    )


def _kpis(c: Comparison) -> str:
    e = c.verdict.evidence
    items = [
        ("requests", _n(c.rows)),
        ("labeled pairs", _n(c.accuracy.pairs)),
        (f"{e.metric} batch → live", f"{_n(e.batch_value)} → {_n(e.live_value)}"),
        ("data age p50, batch → live", f"{_age(c.staleness.batch.p50)} → {_age(c.staleness.live.p50)}"),
        ("lookup misses", _pct(c.coverage.miss_share)),
        ("live p99", _live_p99(c)),
        ("unread batch rows", _pct(c.waste.share)),
    ]
    return '<div class="kpis">' + "".join(f'<div class="kpi">{_e(k)}<b>{_e(v)}</b></div>' for k, v in items) + "</div>"


def _live_p99(c: Comparison) -> str:
    """The served live p99, or why there is none: a backtest, or a window where the live path served nothing."""
    if c.backtest:
        return "backtest: none"
    if not c.latency.live.latency_ms.n and c.latency.live.background_ms.n:
        return "not served yet"
    return _ms(c.latency.live.latency_ms.p99)


def _staleness(c: Comparison, figures: dict[str, str], window: str) -> str:
    st = c.staleness
    ages = [
        [path, _n(d.n), _age(d.p50), _age(d.p95), _age(d.max)]
        for path, d in (("batch (the lookup row)", st.batch), ("live (the newest data it used)", st.live))
    ]
    groups = []
    for g in st.groups:
        span = "–" if g.window_s is None else _age(g.window_s)
        quiet = "–" if g.no_event_in_window is None else f"{_n(g.no_event_in_window)} ({_pct(g.no_event_share)})"
        groups.append([_e(g.group), _e(g.kind), span, _n(g.age.n), _age(g.age.p50), _age(g.age.p95), quiet])
    sampled = "" if st.live_sampled_every == 1 else f" Live ages from 1 in {st.live_sampled_every:,} requests."
    return (
        f'<p class="sub">{_e(st.definition)}.{_e(sampled)}</p>'
        + _table(["path", "answers", "p50", "p95", "max"], ages)
        + "<p>Per feature group of the live path (a real-time group's age is that of its key's newest event, "
        "counted only within the group's longest window):</p>"
        + _table(["group", "kind", "window", "answers with data", "p50", "p95", "no event within the window"], groups)
        + _figure(figures, "ages", "Data age behind each answer, per path (log scale).", window)
    )


def _coverage(c: Comparison, figures: dict[str, str], window: str) -> str:
    cov = c.coverage
    row = [
        _n(cov.requests),
        _pct(cov.batch_share),
        f"{_n(cov.misses)} ({_pct(cov.miss_share)})",
        _n(cov.misses_new),
        _n(cov.misses_known),
        f"{_pct(cov.live_share)} ({_n(cov.live_answered_on_misses)} of the misses)",
    ]
    header = ["requests", "batch answered", "lookup misses", "new entities", "known entities", "live answered"]
    invalid = ""
    if any(cov.non_finite.values()):
        invalid = (
            f'<p class="invalid">Scores logged as NaN or ±infinity: batch {_n(cov.non_finite.get("batch", 0))}, live '
            f"{_n(cov.non_finite.get('live', 0))}. Each counts as an error of its path and is left out of every "
            "metric; the model or the writer of the shadow log produced them.</p>"
        )
    if any(cov.out_of_range.values()):
        invalid += (
            '<p class="invalid">Scores outside [0, 1] for a binary label: '
            f"batch {_n(cov.out_of_range.get('batch', 0))}, live {_n(cov.out_of_range.get('live', 0))}. "
            "Not probabilities: each counts as an error of its path and "
            "is left out of every metric; the model or the writer of the shadow log produced them.</p>"
        )
    return (
        _table(header, [row])
        + f'<p class="sub">{_e(cov.miss_split)}</p>'
        + invalid
        + _figure(figures, "coverage", "Share of requests each path answered, per hour.", window)
    )


def _calibration(c: Comparison) -> str:
    acc = c.accuracy
    rows = []
    for path in ("batch", "live"):
        cal = acc.calibration[path]
        for index, count in enumerate(cal.count):
            if not count:
                continue
            predicted, observed = cal.predicted[index], cal.observed[index]
            spread = "–"
            if observed is not None and acc.kind == "binary":
                # A 95 % normal interval of the observed rate: a gap within it is noise, not miscalibration.
                half = 1.96 * (observed * (1 - observed) / count) ** 0.5
                spread = f"{_n(max(0.0, observed - half))} … {_n(min(1.0, observed + half))}"
            span = f"{index / 10:.1f} – {(index + 1) / 10:.1f}" if acc.kind == "binary" else str(index + 1)
            rows.append([path, span, _n(count), _n(predicted), _n(observed), spread])
    return _table(["path", "predicted", "requests", "mean prediction", "mean label", "95 % interval"], rows)


def _accuracy(c: Comparison, figures: dict[str, str], window: str) -> str:
    acc = c.accuracy
    scores = [
        [_e(s.metric), _n(s.batch), _n(s.live), _n(s.delta), f"{_n(s.low)} … {_n(s.high)}", _n(s.improvement)]
        for s in acc.scores
    ]
    level = f"{acc.scores[0].confidence:.0%} interval" if acc.scores else "interval"
    return (
        f"<p>{_n(acc.pairs)} labeled pairs ({_n(acc.unlabeled)} requests without a label in their closed window, "
        f"{_n(acc.pending)} still pending; labels seen up to {_e(_when(acc.label_watermark))}).</p>"
        + (
            f'<p class="invalid">Labels that cannot be a {_e(acc.kind)} label (NaN, ±infinity'
            f"{', neither 0 nor 1' if acc.kind == 'binary' else ''}, or without an event time) in the label files: "
            f"{_n(acc.invalid_labels)}, left out of the join. The sink writes none: look for another writer.</p>"
            if acc.invalid_labels
            else ""
        )
        + _table(["metric", "batch", "live", "live − batch", level, "improvement"], scores)
        + _figure(figures, "roc", "ROC per path on the same labeled requests.", window)
        + _figure(figures, "calibration", "Mean label per bin of predicted value.", window)
        + _figure(figures, "hourly_accuracy", "The verdict's metric per hour.", window)
        + "<p>Calibration bins (requests per bin; the mean label's interval shows what is noise):</p>"
        + _calibration(c)
    )


def _checks(c: Comparison) -> str:
    b = c.baselines
    rows = []
    for path in ("batch", "live"):
        check = b.paths[path]
        beats = {True: '<span class="pass">yes</span>', False: '<span class="fail">no</span>', None: "–"}
        rows.append(
            [
                path,
                f"{_e(check.loss_metric)} {_n(check.loss)}",
                _n(check.baseline_loss),
                beats[check.beats_baseline],
                _n(check.calibration_error),
                _e(check.model_version or "–"),
                _n(check.holdout),
                _n(check.shadow),
                _n(check.offline_gap),
            ]
        )
    header = [
        "path",
        "loss",
        "trivial baseline",
        "beats it",
        "calibration error",
        "model",
        f"holdout {c.verdict.evidence.metric}",
        "in this comparison",
        "gap",
    ]
    return (
        f'<p class="sub">Trivial baseline: {_e(b.baseline)}. Holdout: the metric recorded when the model was trained; '
        "a holdout far above this comparison's value suggests leakage or training/serving skew.</p>"
        + _table(header, rows)
        + _skew(c)
    )


def _skew(c: Comparison) -> str:
    sk = c.feature_skew
    if not sk.available:
        return f"<p>Feature skew: not measured ({_e(sk.reason)}).</p>"
    rows = [
        [
            _e(f.feature),
            _e(f.kind),
            _n(f.compared),
            f"{_n(f.mismatches)} ({_pct(f.mismatch_rate)})",
            _n(f.missing_online),
            _n(f.missing_offline),
            _n(f.behind),
        ]
        for f in sk.features[:12]
    ]
    header = [
        "feature",
        "kind",
        "both present",
        "differ",
        "missing online only",
        "missing offline only",
        f"behind ≤ {sk.grace_s:g} s",
    ]
    return (
        f"<p>Feature skew on {_n(sk.sampled)} sampled live answers: the value the live path used against the offline "
        "point-in-time value of the same entity at the same instant (the training rows' code), most skewed first. "
        f"<i>Behind</i>: a real-time value its windows held within {sk.grace_s:g} s before the request "
        "(<code>feature_skew_grace</code>; the events of that last moment had not reached the stream), counted apart "
        "from the skew the verdict judges.</p>" + _table(header, rows)
    )


def _agreement(c: Comparison, figures: dict[str, str], window: str) -> str:
    ag, fl = c.agreement, c.noise_floor
    noise_row = "unknown: " + fl.reason if not fl.known else f"versions {fl.previous_version} → {fl.active_version}"
    rows = [
        [
            "live vs batch",
            _n(ag.pairs),
            _n(ag.mean_abs_delta),
            _n(ag.abs_delta.p95),
            _pct(ag.flip_share),
            _n(ag.rank_correlation),
        ],
        [
            f"batch vs batch ({_e(noise_row)})",
            _n(fl.pairs),
            _n(fl.mean_abs_delta),
            _n(fl.abs_delta.p95),
            _pct(fl.flip_share),
            _n(fl.rank_correlation),
        ],
    ]
    return (
        _table(["", "pairs", "mean |Δ|", "p95 |Δ|", "flip share", "rank correlation"], rows)
        + f"<p>Disagreement threshold {_n(ag.disagreement_threshold)} ({_e(ag.disagreement_basis)}): "
        f"{_n(ag.disagreements)} requests ({_pct(ag.disagreement_share)}) disagree.</p>"
        + _figure(figures, "scatter", "Batch vs live on sampled requests; dotted: the decision threshold.", window)
        + _figure(figures, "agreement", "Live vs batch, judged against batch vs batch.", window)
    )


def _segments(c: Comparison) -> str:
    sg = c.segments
    drift = (
        f"<p>Population stability index of the live predictions against the batch ones, on {_n(sg.psi_pairs)} "
        f"requests both answered: <b>{_n(sg.psi)}</b> (below 0.1 the same distribution, above 0.25 a large "
        "move).</p>"
    )
    if sg.column is None:
        return drift + "<p>No segment declared: set <code>cutover_policy.segment</code> to an entity key or a context "
        "value (a store, a merchant) to see where live wins and where it loses.</p>"
    rows = [
        [_e(g.segment), _n(g.requests), _pct(g.miss_share), _n(g.pairs), _n(g.batch), _n(g.live)] for g in sg.segments
    ]
    header = [sg.column, "requests", "lookup misses", "labeled pairs", f"{sg.metric} batch", f"{sg.metric} live"]
    return drift + _table(header, rows)


def _explanation(c: Comparison) -> str:
    ex = c.explanation
    kinds = []
    for attribution in ex.kinds:
        top = "<br>".join(
            f"{_e(case.key)}: {_n(case.requests)} requests, mean |Δ| {_n(case.mean_abs_delta)} — {_e(case.detail)}"
            for case in attribution.top[:5]
        )
        kinds.append([_e(attribution.kind), _n(attribution.entities), _n(attribution.requests), top or "–"])
    explained = (
        _table(["cause", "entities", "disagreeing requests", "top entities"], kinds)
        if ex.available and ex.kinds
        else f"<p>{_e(ex.reason or 'attribution unavailable')}</p>"
    )
    return (
        f"<p>{_n(ex.disagreeing_requests)} disagreeing requests over {_n(ex.disagreeing_entities)} entities; the "
        f"{_n(ex.examined_entities)} most frequent examined.</p>" + explained
    )


def _latency(c: Comparison, figures: dict[str, str], window: str) -> str:
    lat = c.latency
    if c.backtest:
        return "<p>A backtest answers from history: it has no latency, errors or fallbacks to measure.</p>"
    paths = [
        [
            p,
            _n(x.latency_ms.n),
            _ms(x.latency_ms.p50),
            _ms(x.latency_ms.p95),
            _ms(x.latency_ms.p99),
            _n(x.errors),
            _pct(x.error_rate),
        ]
        for p, x in (("batch", lat.batch), ("live", lat.live))
    ]
    background = [
        [f"{p} (background)", _n(d.n), _ms(d.p50), _ms(d.p95), _ms(d.p99), "", ""]
        for p, d in (("batch", lat.batch.background_ms), ("live", lat.live.background_ms))
        if d.n
    ]
    return (
        _table(["path", "answers timed", "p50", "p95", "p99", "errors", "error rate"], paths + background)
        + "<p>A path's latency is that of the answers it served, timed by the serving worker on the request; the "
        "live p99 guardrail reads it. A <em>(background)</em> row times the answers the shadow comparison computed "
        "beside the served ones: calls at idle priority over the entities of several requests, not a latency anyone "
        "waited for. At stage shadow the live path serves nothing: its latency is judged from canary on.</p>"
        + f"<p>Fallbacks: {_n(lat.fallbacks)} ({_pct(lat.fallback_rate)}). Requests by the path that served them: "
        f"{_e(_counts(lat.served))}.</p>" + _figure(figures, "latency", "Latency per path (log scale).", window)
    )


def _waste(c: Comparison) -> str:
    w = c.waste
    which = ", ".join(str(v) for v in w.versions) or "–"
    return (
        f"<p>Lookup version(s) that served the window: {_e(which)}. {_n(w.never_requested)} of their {_n(w.rows)} "
        f"predictions ({_pct(w.share)}) were never requested while they served. {_e(w.note)}</p>"
    )


def _method(c: Comparison) -> str:
    timings = ", ".join(f"{name} {seconds:.2f} s" for name, seconds in c.timings.items())
    return (
        "<p>Labels: a request at time t is labeled by the first label of its entity in (t, t + "
        f"{_age(c.label_delay_s)}]; only requests whose window closed before the newest label count. Intervals: "
        "paired bootstrap of live − batch. Details: docs/comparisons.md.</p>"
        + f'<p class="sub">Time spent computing this report: {_e(timings)}.</p>'
    )


def _sections(c: Comparison, figures: dict[str, str]) -> dict[str, str]:
    window = f"({_when(c.first_request)} → {_when(c.last_request)})"
    return {
        "verdict": _kpis(c) + _verdict(c),
        "staleness": _staleness(c, figures, window),
        "coverage": _coverage(c, figures, window),
        "accuracy": _accuracy(c, figures, window),
        "checks": _checks(c),
        "agreement": _agreement(c, figures, window),
        "segments": _segments(c),
        "explanation": _explanation(c),
        "latency": _latency(c, figures, window),
        "waste": _waste(c),
        "method": _method(c),
    }


TITLES = {
    "verdict": "Verdict",
    "staleness": "Staleness: how old the data behind each answer was",
    "coverage": "Coverage: who got an answer",
    "accuracy": "Accuracy on labeled requests",
    "checks": "Baselines, calibration, the training holdout and feature skew",
    "agreement": "Agreement and the noise floor",
    "segments": "Segments and prediction drift",
    "explanation": "Where the paths disagree, and the likely cause",
    "latency": "Latency and errors",
    "waste": "Waste: batch predictions nobody read",
    "method": "Method",
}


def render_html(c: Comparison, figures: dict[str, str]) -> str:
    """The report page: every section, figures inline, no external resource."""
    sections = _sections(c, figures)
    body = "".join(f'<section id="{name}"><h2>{_e(TITLES[name])}</h2>{sections[name]}</section>' for name in SECTIONS)
    contents = "".join(f'<li><a href="#{name}">{_e(TITLES[name])}</a></li>' for name in SECTIONS)
    window = f"{_when(c.first_request)} → {_when(c.last_request)}"
    what = "backtest requests (answers from history)" if c.backtest else "shadow requests"
    banner = (
        '<p class="banner" id="backtest">A <b>backtest</b>: every answer was computed from history by '
        "<code>migrate backtest</code>, not served live. Confirm the verdict with a short live shadow.</p>"
        if c.backtest
        else ""
    )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(c.usecase)}: batch vs live — {_e(c.verdict.decision)}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{_e(c.usecase)}: batch predictions vs the live path</h1>"
        f'<p class="sub">{_n(c.rows)} {what}, {_e(window)}; lookup version {_n(c.lookup_version)} served most of them. '
        "Every figure and table covers this window.</p>"
        f"{_sampled(c)}{banner}<nav><b>Contents</b><ol>{contents}</ol></nav>{body}</main></body></html>"
    )


def _sampled(c: Comparison) -> str:
    """What a sampled shadow log means for the numbers (``shadow.sample_percent``); nothing when it logged all."""
    if c.shadow_sample_percent >= 100:
        return ""
    return (
        f'<p class="banner" id="sampled">The shadow log <b>sampled {c.shadow_sample_percent:g} %</b> of the entities '
        "(<code>shadow.sample_percent</code>, down to that share in this window): request counts are the sampled "
        "entities' requests; shares, latencies, accuracy and agreement hold as measured over them, and the unread "
        "batch rows are an estimate.</p>"
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


REPORT_STEPS = (*STEPS, "figures", "write")  # what `write_report` reports to `on_step`, in order


def write_report(
    usecase: UseCase,
    settings: Settings,
    *,
    out_dir: Path | None = None,
    window: Window | None = None,
    on_step: OnStep | None = None,
    skew_grace: timedelta | None = None,
) -> ReportFiles:
    """Compare, then write ``report.html`` and ``report.json`` to ``out_dir`` (default
    ``<state_dir>/reports/<usecase>``); returns their paths, the verdict and the timings. `on_step` is called with
    each of `REPORT_STEPS` as it ends; `skew_grace` as `compare`'s."""
    step = on_step or (lambda _: None)
    warm("comparisons.figures")  # matplotlib imports while the comparison runs
    comparison = compare(usecase, settings, window, on_step=on_step, skew_grace=skew_grace)
    from comparisons.figures import render_all  # noqa: PLC0415 - optional dependency: matplotlib, the [report] extra

    started = time.perf_counter()
    figures = render_all(comparison)
    timings = dict(comparison.timings)
    timings["figures"] = round(time.perf_counter() - started, 4)
    step("figures")
    target = out_dir or settings.state_dir / "reports" / usecase.name
    target.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    html_path, json_path = target / "report.html", target / "report.json"
    _write(html_path, render_html(comparison, figures))
    _write(json_path, json.dumps(comparison.model_dump(mode="json"), indent=1, allow_nan=False) + "\n")
    timings["write"] = round(time.perf_counter() - started, 4)
    step("write")
    return ReportFiles(html_path, json_path, comparison.verdict, timings)
