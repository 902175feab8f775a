"""A self-contained HTML report: one page, inline SVG charts, no scripts, fonts or URLs.

Charts are drawn here as SVG strings (no matplotlib: the query path stays light and the
page opens anywhere, offline, in a mail attachment or a CI artifact):
- headline metrics per system with deltas, 95% CIs and p-values against the baseline;
- a forest plot of the deltas (one row per metric, both modes);
- horizontal bars: a metric per stratum per system (query length, lexical match, typo
  correction, frequency, category), one row per stratum;
- where each system gains and loses against the baseline, stratum by stratum, and the
  queries it gains and loses most on;
- score distributions per grade: one box plot per grade per system, showing whether the
  model's scores separate the grades at all.
Text never shares room with other text: label columns are as wide as their longest label
(estimated from its length, `text_width`; labels past a cap are cut with "…" and keep their
whole text as a tooltip) and values sit in a column of their own, so nothing runs together
at any page width (tests/test_eval_report_page.py measures it in Chromium).
"""

from __future__ import annotations

import html
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shopsearch.evaluation.calibration import Calibration
from shopsearch.evaluation.evaluate import ALL, Evaluation, SystemResult, grade_bins
from shopsearch.evaluation.metrics import MODES
from shopsearch.evaluation.significance import Comparison

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1", "#edc948"]
MODE_TITLES = {"full": "Full-corpus retrieval", "rerank": "Re-ranking judged products"}
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _fmt(v: float, d: int = 3) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.{d}f}"


def _p(p: float) -> str:
    if math.isnan(p):
        return "–"
    if p == 1:
        return "p = 1"
    return "p < 0.001" if p < 1e-3 else f"p = {p:.3f}"


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def text_width(text: str, size: float) -> float:
    """A generous estimate of `text`'s width in px at font `size`: 0.62 em a character,
    wider than the average glyph of the page's sans-serif fonts (digits are 0.55 em)."""
    return len(text) * size * 0.62


def _fit(text: str, size: float, room: float) -> str:
    """`text`, cut with "…" to fit `room` px (by `text_width`)."""
    if text_width(text, size) <= room:
        return text
    keep = max(1, int(room / (size * 0.62)) - 1)
    return text[:keep].rstrip() + "…"


# -- charts ----------------------------------------------------------------------------


LABEL_FONT, TICK_FONT, VALUE_FONT = 11.5, 10.0, 10.0
MAX_LABEL_W = 200  # px; a longer stratum label is cut with "…" (tooltip: the whole label)


def stratum_bars(ev: Evaluation, mode: str, metric: str, width: int = 540) -> str:
    """Horizontal bars of `metric`: one row per stratum (all queries first, then each kind
    under its heading), one bar per system, its value just past the bar's end. Rows stack
    downwards, so long labels (category paths) never collide as column labels do; the label
    column is as wide as the longest label, and the value column is reserved."""
    groups = ev.groups()
    n_sys = len(ev.systems)
    bar_h, bar_gap, row_gap, head_h = 13, 2, 10, 20
    labels = {g: "all queries" if g == ALL else g[1] for g in groups}
    label_w = min(
        MAX_LABEL_W,
        max(
            text_width("n=00000", TICK_FONT),
            *(text_width(t, LABEL_FONT) for t in labels.values()),
        ),
    )
    left = int(label_w) + 12
    value_w = int(text_width("0.000", VALUE_FONT)) + 8
    plot_w = width - left - value_w
    row_h = max(n_sys * (bar_h + bar_gap) - bar_gap, 28) + row_gap
    values = {g: [ev.mean(s, mode, metric, g)[0] for s in ev.systems] for g in groups}
    finite = [v for row in values.values() for v in row if not math.isnan(v)]
    vmax = max([*finite, 0.0])
    vmax = 1.0 if vmax > 0.6 else (math.ceil(vmax * 10) / 10 if vmax > 0 else 1.0)
    # rows, with a heading before each kind's first stratum
    layout: list[tuple[str, tuple[str, str] | str]] = []
    for g in groups:
        if g != ALL and (not layout or layout[-1][1] == ALL or layout[-1][1][0] != g[0]):
            layout.append(("head", g[0]))
        layout.append(("row", g))
    top = 4
    y = top
    body = []
    for kind, item in layout:
        if kind == "head":
            y += 6
            body.append(
                f'<text x="0" y="{y + 12}" class="kind">{_e(str(item))}</text>'
                f'<line x1="0" x2="{width}" y1="{y + 17}" y2="{y + 17}" class="brace"/>'
            )
            y += head_h
            continue
        group = item
        assert isinstance(group, tuple)
        n = int(ev.mask(group).sum())
        shown = _fit(labels[group], LABEL_FONT, label_w)
        tip = f"<title>{_e(labels[group])}</title>" if shown != labels[group] else ""
        body.append(
            f'<text x="{left - 10}" y="{y + 11}" class="lab" text-anchor="end">'
            f"{tip}{_e(shown)}</text>"
            f'<text x="{left - 10}" y="{y + 24}" class="tick" text-anchor="end">n={n}</text>'
        )
        for si, v in enumerate(values[group]):
            by = y + si * (bar_h + bar_gap)
            if math.isnan(v):
                body.append(f'<text x="{left + 4}" y="{by + 10}" class="val">–</text>')
                continue
            w = max(plot_w * v / vmax, 0.0)
            title = f"{ev.systems[si].name}, {labels[group]}: {v:.3f} (n={n})"
            body.append(
                f'<rect x="{left}" y="{by}" width="{w:.1f}" height="{bar_h}" rx="2" '
                f'fill="{_color(si)}"><title>{_e(title)}</title></rect>'
                f'<text x="{left + w + 4:.1f}" y="{by + 10}" class="val">{v:.3f}</text>'
            )
        y += row_h
    height = y + 22
    axis = []
    for t in np.linspace(0, vmax, 6):
        x = left + plot_w * t / vmax
        axis.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{y - row_gap + 2}" class="grid"/>'
            f'<text x="{x:.1f}" y="{y + 8}" class="tick" text-anchor="middle">{t:.1f}</text>'
        )
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="{_e(metric)} per stratum">'
        + "".join(axis)
        + "".join(body)
        + "</svg>"
    )


def forest(ev: Evaluation, width: int = 560) -> str:
    """Deltas vs the baseline with 95% CIs, one row per (mode, metric, system)."""
    rows = []
    for mode in MODES:
        for s in ev.systems[1:]:
            for metric in ev.metrics:
                c = ev.comparisons[mode][s.name][ALL][metric]
                if c.n and metric not in ev.scheme.distant_pairs():
                    rows.append((mode, metric, s, c))
    if not rows:
        return ""

    def row_label(mode: str, metric: str, s: SystemResult) -> str:
        label = f"{metric} · {'full' if mode == 'full' else 'rerank'}"
        return label + (f" · {s.name}" if len(ev.systems) > 2 else "")

    # Columns as wide as their text: labels on the left, "delta · p" on the right.
    label_w = int(max(text_width(row_label(m, k, s), LABEL_FONT) for m, k, s, _ in rows)) + 12
    right_w = int(text_width("+0.000 · p < 0.001", VALUE_FONT)) + 12
    width = max(width, label_w + right_w + 220)
    row_h, top = 22, 24
    height = top + row_h * len(rows) + 26
    # An unbounded CI (too few queries for the test to reject any shift) runs to the edge.
    ends = [v for *_, c in rows for v in (c.ci_low, c.ci_high) if math.isfinite(v)]
    span = max([abs(v) for v in ends] + [0.01]) * 1.1
    plot_w = width - label_w - right_w

    def x(v: float) -> float:
        return label_w + plot_w * (min(max(v, -span), span) + span) / (2 * span)

    out = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="deltas with confidence intervals">'
    ]
    out.append(
        f'<line x1="{x(0):.1f}" x2="{x(0):.1f}" y1="{top - 8}" y2="{height - 22}" class="zero"/>'
    )
    for t in (-span / 1.1, -span / 2.2, span / 2.2, span / 1.1):
        out.append(
            f'<text x="{x(t):.1f}" y="{height - 6}" class="tick" '
            f'text-anchor="middle">{t:+.2f}</text>'
        )
    out.append(f'<text x="{x(0):.1f}" y="{height - 6}" class="tick" text-anchor="middle">0</text>')
    out.append(
        f'<text x="{x(-span) + 2:.1f}" y="{top - 10}" class="tick">'
        f"← better: {_e(ev.baseline.name)}</text>"
        f'<text x="{x(span) - 2:.1f}" y="{top - 10}" class="tick" text-anchor="end">'
        f"better: other →</text>"
    )
    for i, (mode, metric, s, c) in enumerate(rows):
        y = top + row_h * i + row_h / 2
        si = ev.systems.index(s)
        colour = _color(si) if c.significant else "#9aa0a6"
        label = row_label(mode, metric, s)
        if i % 2 == 0:
            out.append(
                f'<rect x="0" y="{y - row_h / 2:.1f}" width="{width}" height="{row_h}" '
                f'class="stripe"/>'
            )
        out.append(
            f'<text x="{label_w - 8}" y="{y + 4:.1f}" class="lab" '
            f'text-anchor="end">{_e(label)}</text>'
        )
        out.append(
            f'<line x1="{x(c.ci_low):.1f}" x2="{x(c.ci_high):.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{colour}" stroke-width="3" stroke-linecap="round"/>'
        )
        out.append(
            f'<circle cx="{x(c.delta):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
            f"<title>{_e(f'{c.delta:+.4f} {c.ci_text(4)} {_p(c.p_value)}')}"
            f"</title></circle>"
        )
        out.append(
            f'<text x="{width - right_w + 8}" y="{y + 4:.1f}" class="val">'
            f"{c.delta:+.3f} · {_e(_p(c.p_value))}</text>"
        )
    out.append("</svg>")
    return "".join(out)


def score_boxes(ev: Evaluation, width: int = 560) -> str:
    """Per system (each on its own axis: score scales differ), one horizontal box plot per
    grade, best grade on top: box = quartiles, line = median, whiskers = 5-95%."""
    bins = grade_bins(ev.scheme)[::-1]
    counts = [len(s.judged_scores.get(b, [])) for s in ev.systems for b in bins]
    longest = max(text_width(f"{b} n={max(counts, default=0)}", LABEL_FONT) for b in bins)
    label_w, row_h, head, axis = int(longest) + 14, 20, 22, 22
    block = head + row_h * len(bins) + axis + 10
    height = block * len(ev.systems)
    plot_w = width - label_w - 20
    out = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="score distribution per grade">'
    ]
    drawn = False
    for si, s in enumerate(ev.systems):
        scores = [v for b in bins for v in s.judged_scores.get(b, [])]
        y0 = si * block
        out.append(
            f'<text x="0" y="{y0 + 14}" class="lab" font-weight="600" '
            f'fill="{_color(si)}">{_e(s.name)}</text>'
        )
        if not scores:
            out.append(
                f'<text x="{label_w}" y="{y0 + head + 14}" class="tick">no scores of '
                "judged products</text>"
            )
            continue
        drawn = True
        lo, hi = float(np.percentile(scores, 1)), float(np.percentile(scores, 99))
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.04
        lo, hi = lo - pad, hi + pad

        def x(v: float, lo: float = lo, hi: float = hi) -> float:
            return label_w + plot_w * (min(max(v, lo), hi) - lo) / (hi - lo)

        bottom = y0 + head + row_h * len(bins)
        for t in np.linspace(lo + pad, hi - pad, 5):
            out.append(
                f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y0 + head - 2}" y2="{bottom}" '
                f'class="grid"/><text x="{x(t):.1f}" y="{bottom + 13}" class="tick" '
                f'text-anchor="middle">{t:.3g}</text>'
            )
        c = _color(si)
        for bi, b in enumerate(bins):
            vals = np.asarray(s.judged_scores.get(b, []), dtype=float)
            y = y0 + head + bi * row_h + row_h / 2
            out.append(
                f'<text x="{label_w - 10}" y="{y + 4:.1f}" class="lab" '
                f'text-anchor="end">{_e(b)} <tspan class="tick">n={vals.size}</tspan>'
                "</text>"
            )
            if vals.size == 0:
                continue
            p5, q1, med, q3, p95 = np.percentile(vals, [5, 25, 50, 75, 95])
            h = row_h * 0.62
            out.append(
                f'<line x1="{x(p5):.1f}" x2="{x(p95):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                f'stroke="{c}" stroke-width="1.5"/>'
                f'<rect x="{x(q1):.1f}" y="{y - h / 2:.1f}" width="{max(x(q3) - x(q1), 1.5):.1f}" '
                f'height="{h:.1f}" fill="{c}" fill-opacity="0.3" stroke="{c}" rx="2">'
                f"<title>{_e(f'{s.name}, grade {b}: median {med:.3f}, n={vals.size}')}</title>"
                f'</rect><line x1="{x(med):.1f}" x2="{x(med):.1f}" y1="{y - h / 2:.1f}" '
                f'y2="{y + h / 2:.1f}" stroke="{c}" stroke-width="2.5"/>'
            )
    out.append("</svg>")
    return "".join(out) if drawn else ""


# -- page ------------------------------------------------------------------------------


CSS = f"""
:root {{ --ink:#1f2328; --muted:#656d76; --line:#d8dee4; --bg:#f6f8fa; }}
* {{ box-sizing:border-box; }}
body {{ font-family:{FONT}; color:var(--ink); margin:0; background:var(--bg); }}
main {{ max-width:1200px; margin:0 auto; padding:28px 32px 48px; }}
h1 {{ font-size:26px; margin:0 0 4px; }} h2 {{ font-size:19px; margin:30px 0 10px; }}
h3 {{ font-size:15px; margin:0 0 8px; color:var(--ink); }}
.sub {{ color:var(--muted); font-size:13px; margin:0 0 18px; }}
.legend span {{ display:inline-flex; align-items:center; margin-right:18px; font-size:13px; }}
.legend i {{ width:12px; height:12px; border-radius:3px; display:inline-block; margin-right:6px; }}
.cards {{ display:grid; grid-template-columns:repeat(auto-fill, minmax(250px, 1fr)); gap:12px; }}
.card, .panel {{ background:#fff; border:1px solid var(--line); border-radius:10px;
  padding:14px 16px; }}
.card .m {{ font-size:13px; color:var(--muted); font-weight:600; }}
.card .row {{ display:flex; justify-content:space-between; align-items:baseline; margin-top:6px; }}
.card .v {{ font-size:22px; font-weight:600; font-variant-numeric:tabular-nums; }}
.card .d {{ font-size:12px; font-variant-numeric:tabular-nums; }}
.up {{ color:#1a7f37; }} .down {{ color:#cf222e; }} .ns {{ color:var(--muted); }}
.span {{ grid-column:1 / -1; }}
.scroll {{ overflow-x:auto; }}
.grid2 {{ display:grid; grid-template-columns:repeat(auto-fit, minmax(540px, 1fr)); gap:14px; }}
svg {{ max-width:100%; height:auto; font-family:{FONT}; }}
svg .grid {{ stroke:#eaeef2; }} svg .zero {{ stroke:#57606a; stroke-dasharray:3 3; }}
svg .tick {{ font-size:10px; fill:var(--muted); }} svg .lab {{ font-size:11.5px; fill:var(--ink); }}
svg .val {{ font-size:10px; fill:var(--ink); }} svg .kind {{ font-size:11px; fill:var(--muted); }}
svg .brace {{ stroke:#afb8c1; }} svg .stripe {{ fill:#f6f8fa; }}
table {{ border-collapse:collapse; width:100%; font-size:12.5px; background:#fff; }}
th, td {{ padding:5px 8px; border-bottom:1px solid var(--line); text-align:right;
  font-variant-numeric:tabular-nums; white-space:nowrap; }}
th:first-child, td:first-child {{ text-align:left; }} th {{ background:#f6f8fa; }}
.note {{ color:var(--muted); font-size:12px; margin-top:8px; line-height:1.5; }}
.warn {{ background:#fff1f0; border:1px solid #cf222e; color:#82071e; border-radius:8px;
  padding:10px 14px; margin:0 0 14px; font-size:13.5px; }}
.effects h3 {{ margin:16px 0 6px; }} td.verdict {{ text-align:left; }}
table.queries td.q {{ text-align:left; white-space:normal; }}
table.queries td.tags {{ color:var(--muted); font-size:11.5px; }}
table.queries th:nth-child(2) {{ text-align:left; }}
"""


def _legend(ev: Evaluation) -> str:
    items = "".join(
        f'<span><i style="background:{_color(i)}"></i>{_e(s.name)}'
        f"{' (baseline)' if i == 0 else ''}</span>"
        for i, s in enumerate(ev.systems)
    )
    return f'<div class="legend">{items}</div>'


def _cards(ev: Evaluation, mode: str) -> str:
    cards = []
    for metric in ev.metrics:
        if "[" in metric or ev.mean(ev.baseline, mode, metric)[1] == 0:
            continue
        rows = []
        for i, s in enumerate(ev.systems):
            v, _ = ev.mean(s, mode, metric)
            delta = ""
            if i:
                c = ev.comparisons[mode][s.name][ALL][metric]
                cls = "ns" if not c.significant else ("up" if c.delta > 0 else "down")
                delta = (
                    f'<span class="d {cls}">{c.delta:+.3f} '
                    f"{c.ci_text()} · {_e(_p(c.p_value))}</span>"
                )
            rows.append(
                f'<div class="row"><span><i style="display:inline-block;width:9px;'
                f'height:9px;border-radius:2px;background:{_color(i)};margin-right:6px">'
                f'</i>{_e(s.name)}</span><span class="v">{_fmt(v)}</span></div>'
                + (f'<div style="text-align:right">{delta}</div>' if delta else "")
            )
        cards.append(f'<div class="card"><div class="m">{_e(metric)}</div>{"".join(rows)}</div>')
    return f'<div class="cards">{"".join(cards)}</div>'


def _table(ev: Evaluation, mode: str) -> str:
    head = "<th>stratum</th><th>n</th><th>system</th>" + "".join(
        f"<th>{_e(m)}</th>" for m in ev.metrics if ev.mean(ev.baseline, mode, m)[1]
    )
    body = []
    for group in ev.groups():
        for i, s in enumerate(ev.systems):
            cells = [
                f"<td>{_e('all' if group == ALL else f'{group[0]}: {group[1]}')}</td>",
                f"<td>{int(ev.mask(group).sum())}</td>",
                f"<td>{_e(s.name)}</td>",
            ]
            for m in ev.metrics:
                if not ev.mean(ev.baseline, mode, m)[1]:
                    continue
                v, _ = ev.mean(s, mode, m, group)
                text = _fmt(v)
                if i:
                    c = ev.comparisons[mode][s.name][group][m]
                    if c.n:
                        cls = "ns" if not c.significant else ("up" if c.delta > 0 else "down")
                        text += f' <span class="{cls}">({c.delta:+.3f})</span>'
                cells.append(f"<td>{text}</td>")
            body.append(f"<tr>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


STRATA_NOTES = {
    "length": "words in the query, as typed",
    "lexical": "exact match: a judged-relevant product's indexed text holds every BM25 "
    "term of the query as searched (stemmed, stop words dropped); no exact match: none does",
    "typos": "corrected: typo correction rewrote the query before it was searched",
    "frequency": "tertiles of the judgments' count column",
    "category": "top-level category most common among the query's best-graded products",
}
SIGNIFICANCE_NOTE = (
    "p: paired randomisation (sign-flip) test over queries. The 95% CI is the same test "
    "inverted (the shifts of the per-query deltas it does not reject at 5%), so a CI "
    "excludes 0 exactly when p &lt; 0.05: the two never disagree."
)


def _verdict(c: Comparison) -> str:
    if not c.n:
        return '<span class="ns">–</span>'
    if not c.significant:
        return '<span class="ns">no clear difference</span>'
    return '<span class="up">helps</span>' if c.delta > 0 else '<span class="down">hurts</span>'


def _strata_effects(ev: Evaluation, mode: str, metrics: list[str]) -> str:
    """Per non-baseline system and metric: each stratum's mean delta against the baseline
    with its CI, p and a verdict, so "where does it help, where does it hurt" is read off
    one table."""
    out = []
    for s in ev.systems[1:]:
        for m in metrics:
            head = (
                f"<th>stratum</th><th>n</th><th>{_e(ev.baseline.name)}</th>"
                f"<th>{_e(s.name)}</th><th>Δ [95% CI]</th><th>p</th><th></th>"
            )
            rows = []
            for group in ev.groups():
                c = ev.comparisons[mode][s.name][group][m]
                ci = f"{c.delta:+.3f} {c.ci_text()}" if c.n else "–"
                name = "all queries" if group == ALL else f"{group[0]}: {group[1]}"
                rows.append(
                    f"<tr><td>{_e(name)}</td><td>{int(ev.mask(group).sum())}</td>"
                    f"<td>{_fmt(ev.mean(ev.baseline, mode, m, group)[0])}</td>"
                    f"<td>{_fmt(ev.mean(s, mode, m, group)[0])}</td>"
                    f"<td>{ci}</td><td>{_e(_p(c.p_value)) if c.n else '–'}</td>"
                    f'<td class="verdict">{_verdict(c)}</td></tr>'
                )
            out.append(
                f"<h3>{_e(s.name)} against {_e(ev.baseline.name)}: {_e(m)}</h3>"
                f'<div class="scroll"><table><thead><tr>{head}</tr></thead>'
                f"<tbody>{''.join(rows)}</tbody></table></div>"
            )
    notes = "".join(
        f"<li><b>{_e(kind)}</b>: {STRATA_NOTES[kind]}</li>"
        for kind in ev.strata_order
        if kind in STRATA_NOTES
    )
    return '<div class="effects">' + "".join(out) + f'</div><ul class="note">{notes}</ul>'


def _wins_losses(ev: Evaluation, mode: str, metric: str, n: int = 10) -> str:
    """Per non-baseline system: the queries it gains most and loses most on."""
    out = []
    for s in ev.systems[1:]:
        wins, losses = ev.wins_losses(s, mode, metric, n)
        moved = len([d for d in ev.deltas(s, mode, metric) if abs(d.delta) > 1e-12])
        for title, items in (("gains", wins), ("losses", losses)):
            rows = (
                "".join(
                    f'<tr><td class="q">{_e(d.text)}</td>'
                    f'<td class="q tags">{_e(" · ".join(ev.labels_of(d.query_id)))}</td>'
                    f"<td>{d.baseline:.3f}</td><td>{d.system:.3f}</td>"
                    f'<td class="{"up" if d.delta > 0 else "down"}">{d.delta:+.3f}</td></tr>'
                    for d in items
                )
                or '<tr><td class="q" colspan="5">none</td></tr>'
            )
            out.append(
                f'<div class="panel"><h3>{_e(s.name)} vs {_e(ev.baseline.name)}: biggest '
                f"{title} ({_e(metric)}, {len(items)} of {moved} queries that differ)</h3>"
                f'<table class="queries"><thead><tr><th>query</th><th>strata</th>'
                f"<th>{_e(ev.baseline.name)}</th><th>{_e(s.name)}</th><th>Δ</th></tr></thead>"
                f"<tbody>{rows}</tbody></table></div>"
            )
    return f'<div class="grid2">{"".join(out)}</div>'


def reliability(cal: Calibration, size: int = 360) -> str:
    """The reliability diagram: each bin's mean confidence (x) against its share of relevant
    judged results (y), a dot sized by its count, the diagonal where they would be equal,
    and the default cut as a vertical line."""
    pad, top = 44, 10
    plot = size - pad - 12
    height = top + plot + 36

    def x(v: float) -> float:
        return pad + plot * v

    def y(v: float) -> float:
        return top + plot * (1 - v)

    out = [
        f'<svg viewBox="0 0 {size} {height}" width="{size}" height="{height}" role="img" '
        'aria-label="reliability diagram">'
    ]
    for t in np.linspace(0, 1, 6):
        out.append(
            f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y(1):.1f}" y2="{y(0):.1f}" class="grid"/>'
            f'<line x1="{x(0):.1f}" x2="{x(1):.1f}" y1="{y(t):.1f}" y2="{y(t):.1f}" class="grid"/>'
            f'<text x="{x(t):.1f}" y="{y(0) + 13:.1f}" class="tick" text-anchor="middle">'
            f"{t:.1f}</text>"
        )
        if t > 0:  # the x axis labels the corner
            out.append(
                f'<text x="{pad - 6}" y="{y(t) + 4:.1f}" class="tick" text-anchor="end">'
                f"{t:.1f}</text>"
            )
    out.append(
        f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>'
        f'<line x1="{x(cal.cut):.1f}" x2="{x(cal.cut):.1f}" y1="{y(1):.1f}" y2="{y(0):.1f}" '
        f'stroke="{_color(3)}" stroke-width="1.5"/>'
        f'<text x="{x(cal.cut) + 4:.1f}" y="{y(1) + 12:.1f}" class="tick">cut {cal.cut:g}</text>'
        f'<text x="{x(0.5):.1f}" y="{height - 4}" class="tick" text-anchor="middle">'
        "confidence (bin mean)</text>"
    )
    bins = cal.bins()
    most = max((b["results"] for b in bins), default=1)
    points = " ".join(f"{x(b['predicted']):.1f},{y(b['observed']):.1f}" for b in bins)
    if len(bins) > 1:
        out.append(f'<polyline points="{points}" fill="none" stroke="{_color(0)}"/>')
    for b in bins:
        r = 3 + 7 * math.sqrt(b["results"] / most)
        out.append(
            f'<circle cx="{x(b["predicted"]):.1f}" cy="{y(b["observed"]):.1f}" r="{r:.1f}" '
            f'fill="{_color(0)}" fill-opacity="0.75"><title>{b["low"]:.1f}–{b["high"]:.1f}: '
            f"{b['results']} results, {b['observed']:.3f} relevant</title></circle>"
        )
    out.append("</svg>")
    return "".join(out)


def _calibration(cal: Calibration) -> str:
    at = cal.at(cal.cut)
    rows = "".join(
        f"<tr><td>{b['low']:.1f}–{b['high']:.1f}</td><td>{b['results']:,}</td>"
        f"<td>{b['predicted']:.3f}</td><td>{b['observed']:.3f}</td></tr>"
        for b in cal.bins()
    )
    precision = "–" if at["precision"] is None else f"{at['precision']:.3f}"
    recall = "–" if at["recall"] is None else f"{at['recall']:.3f}"
    share = f"{cal.relevant.mean():.3f}" if len(cal.relevant) else "–"
    return (
        "<h2>Relevance floor: calibration</h2>"
        f'<p class="note">{_e(cal.system)}: the confidence of each of the first {cal.k} '
        f"results that is judged ({len(cal.confidence):,} results), against whether it is "
        f"relevant. ECE {cal.ece:.3f}. At the default cut {cal.cut:g}: precision {precision} "
        f"(all judged results: {share}), recall {recall}; {at['no_confident_match']} of "
        f"{len(cal.firsts)} queries have no confident match.</p>"
        f'<div class="grid2"><div class="panel"><h3>Reliability diagram</h3>'
        f'{reliability(cal)}<div class="note">Dots on the dashed diagonal: calibrated. '
        "Dot area: results in the bin.</div></div>"
        '<div class="panel"><h3>Bins</h3><table><thead><tr><th>confidence</th><th>results'
        "</th><th>mean confidence</th><th>share relevant</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></div></div>"
    )


def render_report(ev: Evaluation, title: str = "shopsearch evaluation") -> str:
    coverage = (
        ""
        if ev.collection_coverage is None
        else f'<p class="note">The collection holds {ev.collection_coverage:.1%} of the '
        "judged products.</p>"
    )
    systems = "".join(
        f"<li><b>{_e(s.name)}</b>: {_e(s.source)}"
        + (f" — {s.missing_queries} judged queries absent" if s.missing_queries else "")
        + f" — re-rank coverage {s.rerank_coverage:.0%}</li>"
        for s in ev.systems
    )
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="sub">{len(ev.query_ids)} judged queries · grades: '
        f"{_e(ev.scheme.summary())} · "
        f"paired randomisation test and its inverted 95% CI, {ev.resamples:,} resamples, "
        f"seed {ev.seed} · {stamp}</p>",
    ]
    parts += [f'<div class="warn"><b>Warning:</b> {_e(w)}</div>' for w in ev.warnings]
    parts.append(_legend(ev))
    key_metrics = {
        "full": [m for m in ev.metrics if m.startswith(("nDCG", "Recall"))][:2],
        "rerank": [*[m for m in ev.metrics if m.startswith("nDCG")][:1], "OrderAcc"],
    }
    for mode in MODES:
        parts.append(f"<h2>{MODE_TITLES[mode]}</h2>{_cards(ev, mode)}")
        charts = [
            f'<div class="panel"><h3>{_e(m)} per stratum</h3>{stratum_bars(ev, mode, m)}</div>'
            for m in key_metrics[mode]
            if ev.mean(ev.baseline, mode, m)[1]
        ]
        parts.append(f'<div class="grid2" style="margin-top:14px">{"".join(charts)}</div>')
    full_keys = [m for m in key_metrics["full"] if ev.mean(ev.baseline, "full", m)[1]]
    if len(ev.systems) > 1 and full_keys:
        parts.append(
            "<h2>Where each system helps and where it hurts</h2>"
            f'<p class="note">Full-corpus retrieval, stratum by stratum, against '
            f"{_e(ev.baseline.name)}. helps / hurts: p &lt; 0.05. {SIGNIFICANCE_NOTE}</p>"
            + _strata_effects(ev, "full", full_keys)
        )
        parts.append(
            "<h2>Biggest per-query wins and losses</h2>" + _wins_losses(ev, "full", full_keys[0])
        )
    fp = forest(ev)
    boxes = score_boxes(ev)
    side = []
    if fp:
        side.append(
            f'<div class="panel"><h3>Δ vs {_e(ev.baseline.name)} '
            f"(95% CI; coloured when p &lt; 0.05)</h3>{fp}"
            f'<div class="note">{SIGNIFICANCE_NOTE}</div></div>'
        )
    if boxes:
        side.append(
            '<div class="panel"><h3>Scores of judged products per grade</h3>'
            f'{boxes}<div class="note">Boxes: quartiles and median; whiskers: 5–95%. '
            "Good separation = higher grades further right. Each system has its own "
            "axis: score scales differ.</div></div>"
        )
    if side:
        parts.append(
            f'<h2>Differences and score distributions</h2><div class="grid2">{"".join(side)}</div>'
        )
    if ev.calibration is not None and len(ev.calibration.confidence):
        parts.append(_calibration(ev.calibration))
    for mode in MODES:
        parts.append(f"<h2>All numbers — {MODE_TITLES[mode].lower()}</h2>{_table(ev, mode)}")
    parts.append(
        '<p class="note">Means over queries with the metric defined (nDCG needs a '
        "positive gain, Recall/MRR a relevant product, order accuracy a judged pair); "
        "deltas pair the queries where both systems have the metric defined. "
        "Full corpus: unjudged products count as irrelevant. Re-rank: judged products "
        "in the system's order, those it did not score tied last.</p>"
    )
    parts.append(f'<h2>Systems</h2>{coverage}<ul class="note">{systems}</ul>')
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<title>{_e(title)}</title><meta name="viewport" content="width=device-width">'
        f"<style>{CSS}</style></head><body><main>{''.join(parts)}</main></body></html>\n"
    )


def write_report(ev: Evaluation, path: Path, title: str = "shopsearch evaluation") -> None:
    Path(path).write_text(render_report(ev, title), encoding="utf-8")
