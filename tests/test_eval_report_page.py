"""The eval report's geometry in a real headless Chromium (Debian's `chromium` and
`chromium-driver`, as tests/test_page.py uses them; nothing is downloaded): at a 1,400 px
window, and a narrow 900 px one, no two text boxes of a chart overlap (stratum labels, bar
values, axis ticks) and none leaves its chart. The report is built by the library from
runs with long category names, three systems and every kind of stratum: the case whose
labels and bar values used to run together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shopsearch.evaluation.calibration import assess
from shopsearch.evaluation.evaluate import System, evaluate
from shopsearch.evaluation.judgments import GradeScheme, JudgedQuery, Judgments
from shopsearch.evaluation.report import write_report
from shopsearch.evaluation.runs import Ranking

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")

from browser_helpers import headless_chromium, require_chromium  # noqa: E402

require_chromium()

CATEGORIES = [
    "Building Materials > Lumber & Composites",
    "Appliances > Refrigerators & Freezers",
    "Bath > Bathroom Faucets > Widespread",
    "Electrical > Light Bulbs",
    "Outdoors > Garden Center > Plants",
    "Tools > Power Tool Accessories",
    "Heating, Venting & Cooling",
    "Paint",
    "Kitchen",
    "Storage & Organization > Garage Storage",
]

# Every <text> of every chart: its box, and its chart's box.
BOXES_JS = """
const out = [];
document.querySelectorAll('svg').forEach((svg, si) => {
  const s = svg.getBoundingClientRect();
  svg.querySelectorAll('text').forEach((t) => {
    const r = t.getBoundingClientRect();
    if (r.width === 0) return;
    out.push({svg: si, label: svg.getAttribute('aria-label'), text: t.textContent,
              l: r.left, r: r.right, t: r.top, b: r.bottom,
              sl: s.left, sr: s.right, st: s.top, sb: s.bottom});
  });
});
return out;
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    rng = np.random.default_rng(3)
    scheme = GradeScheme("numeric", lo=1, hi=4)
    words = ["drill", "cordless", "white", "paint", "kit", "outdoor", "led", "bulb", "wood"]
    queries, categories, runs = {}, {}, {"bm25": {}, "dense": {}, "hybrid-rrf-bm25x3": {}}
    for i in range(120):
        qid = f"q{i}"
        text = " ".join(rng.choice(words, int(rng.integers(1, 7))))
        grades = {f"p{i}-{k}": float(rng.choice([1, 1.5, 2, 3, 3.5, 4])) for k in range(8)}
        grades[f"p{i}-0"] = 4.0
        queries[qid] = JudgedQuery(qid, text, grades)
        for p in grades:
            categories[p] = [CATEGORIES[i % len(CATEGORIES)]]
        for run in runs.values():
            order = list(rng.permutation(list(grades)))
            run[qid] = Ranking(qid, tuple(order), tuple(float(x) for x in range(len(order), 0, -1)))
    judgments = Judgments(queries, scheme)
    strata = {
        "lexical": {
            q: ("exact match" if i % 3 else "no exact match") for i, q in enumerate(queries)
        },
        "typos": {q: ("corrected" if i % 7 == 0 else "as typed") for i, q in enumerate(queries)},
    }
    systems = [System(name, run, source="runs") for name, run in runs.items()]
    ev = evaluate(
        judgments, systems, categories=categories, resamples=200, extra_strata=strata,
        collection_coverage=0.85, warnings=["collection holds 85% of the judged products"],
    )  # fmt: skip
    assert set(ev.strata) == {"length", "lexical", "typos", "category"}
    # The relevance floor's reliability diagram, from confidences that rise with the grade.
    hybrid = runs["hybrid-rrf-bm25x3"]
    confidences = {
        q: [
            min(1.0, queries[q].grades[p] / 4 * float(rng.uniform(0.6, 1.1))) for p in r.product_ids
        ]
        for q, r in hybrid.items()
    }
    ev.calibration = assess("hybrid-rrf-bm25x3", judgments, hybrid, confidences, 0.22)
    path = tmp_path_factory.mktemp("report") / "report.html"
    write_report(ev, path)
    assert 'aria-label="reliability diagram"' in path.read_text()
    return path


@pytest.fixture(scope="module")
def browser():
    with headless_chromium() as driver:
        yield driver


def _overlap(a: dict, b: dict, slack: float = 0.75) -> bool:
    return (
        min(a["r"], b["r"]) - max(a["l"], b["l"]) > slack
        and min(a["b"], b["b"]) - max(a["t"], b["t"]) > slack
    )


@pytest.mark.parametrize("width", [1400, 900])
def test_no_chart_text_overlaps_or_leaves_its_chart(browser, report, width):
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
    )
    browser.get(report.as_uri())
    boxes = browser.execute_script(BOXES_JS)
    charts = {b["label"] for b in boxes}
    assert {"nDCG@10 per stratum", "Recall@100 per stratum"} <= charts
    assert any("Building Materials" in b["text"] for b in boxes)  # categories drawn
    problems = []
    for i, a in enumerate(boxes):
        if a["l"] < a["sl"] - 0.5 or a["r"] > a["sr"] + 0.5 or a["t"] < a["st"] - 0.5:
            problems.append(f"{a['label']}: {a['text']!r} leaves its chart")
        for b in boxes[i + 1 :]:
            if a["svg"] == b["svg"] and _overlap(a, b):
                problems.append(f"{a['label']}: {a['text']!r} overlaps {b['text']!r}")
    assert not problems, "\n".join(problems[:20])
    # The page itself is no wider than the window: nothing scrolls sideways but tables.
    assert browser.execute_script("return document.documentElement.scrollWidth") <= width
