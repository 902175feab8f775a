"""Strata: groups of queries whose metrics are worth seeing apart.

A model can win on average and lose where it matters (long-tail queries, one vertical).
- length: words in the query, 1 / 2 / 3-4 / 5+ (a frequency proxy: long queries are rare);
- frequency: when judgments carry a count column, queries split into tertiles of count
  (labelled with their count ranges), low to high;
- category: the vertical of the query, i.e. the most common top-level category among its
  best-graded judged products, taken from the catalog payload.
Each stratifier maps query_id -> stratum label; labels come back in a stable display order.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping

import numpy as np

from shopsearch.evaluation.judgments import Judgments

LENGTH_LABELS = ("1 word", "2 words", "3-4 words", "5+ words")
MAX_CATEGORY_STRATA = 8
OTHER = "other"


def length_label(text: str) -> str:
    n = len(text.split())
    if n <= 1:
        return LENGTH_LABELS[0]
    if n == 2:
        return LENGTH_LABELS[1]
    if n <= 4:
        return LENGTH_LABELS[2]
    return LENGTH_LABELS[3]


def by_length(judgments: Judgments) -> dict[str, str]:
    return {qid: length_label(q.text) for qid, q in judgments.queries.items()}


def by_frequency(judgments: Judgments) -> dict[str, str]:
    """Tertiles of the count column; queries without a count are left out. Cut points are
    taken between distinct counts, so equal counts always share a stratum."""
    counts = {qid: q.count for qid, q in judgments.queries.items() if q.count is not None}
    if not counts:
        return {}
    values = np.array(sorted(counts.values()))
    distinct = np.unique(values)
    cuts = sorted({float(np.quantile(values, f, method="lower")) for f in (1 / 3, 2 / 3)})
    cuts = [c for c in cuts if c < distinct[-1]]
    edges = [-np.inf, *cuts, np.inf]
    labels = []
    for lo, hi in itertools.pairwise(edges):
        inside = distinct[(distinct > lo) & (distinct <= hi)]
        a, b = inside.min(), inside.max()
        labels.append(f"freq {a:g}" if a == b else f"freq {a:g}-{b:g}")
    out = {}
    for qid, c in counts.items():
        idx = int(np.searchsorted(cuts, c, side="left"))
        out[qid] = labels[idx]
    return out


def by_category(
    judgments: Judgments,
    categories: Mapping[str, list[str] | None],
    max_strata: int = MAX_CATEGORY_STRATA,
) -> dict[str, str]:
    """`categories`: product_id -> category path (root first). Ties go to the alphabetically
    first category so the result does not depend on file order. Beyond `max_strata`
    categories the rarest are pooled as "other": a stratum of three queries says nothing."""
    scheme = judgments.scheme
    out = {}
    for qid, q in judgments.queries.items():
        known = [
            (scheme.level(g), categories[p][0]) for p, g in q.grades.items() if categories.get(p)
        ]
        if not known:
            continue
        best = max(level for level, _ in known)
        counts = Counter(cat for level, cat in known if level == best)
        top = max(counts.values())
        out[qid] = min(c for c, n in counts.items() if n == top)
    sizes = Counter(out.values())
    if len(sizes) > max_strata:
        keep = {c for c, _ in sorted(sizes.items(), key=lambda x: (-x[1], x[0]))[: max_strata - 1]}
        out = {q: c if c in keep else OTHER for q, c in out.items()}
    return out


def order_labels(labels: set[str], kind: str) -> list[str]:
    if kind == "length":
        return [x for x in LENGTH_LABELS if x in labels]
    if kind == "frequency":
        return sorted(labels, key=lambda s: float(s.split()[1].split("-")[0]))
    return sorted(labels, key=lambda s: (s == OTHER, s))
