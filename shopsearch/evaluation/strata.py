"""Strata: groups of queries whose metrics are worth seeing apart.

A model can win on average and lose where it matters (long-tail queries, one vertical).
- length: words in the query, 1 / 2 / 3-4 / 5+ (a frequency proxy: long queries are rare);
- frequency: when judgments carry a count column, queries split into tertiles of count
  (labelled with their count ranges), low to high;
- category: the vertical of the query, i.e. the most common top-level category among its
  best-graded judged products, taken from the catalog payload;
- lexical: whether keyword search can find the query's relevant products word for word.
  "exact match": at least one judged-relevant product's indexed text (the collection's
  product text: title, description, ... as its template renders them) holds every BM25
  term of the query as searched (Qdrant's BM25 tokenizer: lower-cased, stop words dropped,
  stemmed, so "drills" matches "drill"). "no exact match": none does; semantic search
  should help most here. Queries without a relevant product have no label;
- typos: "corrected" when typo correction rewrote the query before it was searched,
  "as typed" otherwise (only with --fix-typos, the default, and a collection).
The last two need the collection (its product texts, tokenizer and vocabulary), so they
exist when `eval` searches one. Each stratifier maps query_id -> stratum label; labels
come back in a stable display order.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Collection, Mapping

import numpy as np

from shopsearch.evaluation.judgments import Judgments

LENGTH_LABELS = ("1 word", "2 words", "3-4 words", "5+ words")
MAX_CATEGORY_STRATA = 8
OTHER = "other"
LEXICAL_LABELS = ("exact match", "no exact match")
TYPO_LABELS = ("as typed", "corrected")
# Display order of the kinds: the query's own traits first, the catalog's last.
KIND_ORDER = ("length", "lexical", "typos", "frequency", "category")


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


def by_lexical_match(
    judgments: Judgments,
    query_terms: Mapping[str, Collection[int]],
    product_terms: Mapping[str, Collection[int]],
) -> dict[str, str]:
    """`query_terms`: query_id -> the BM25 terms of the query as searched; `product_terms`:
    product_id -> the terms of its indexed text (products the collection lacks are absent).
    "exact match" when a judged-relevant product holds all of the query's terms (a query
    whose every word is a stop word has none, and matches vacuously); queries with no
    relevant product are left out: there is nothing to match."""
    scheme = judgments.scheme
    out = {}
    for qid, q in judgments.queries.items():
        relevant = [p for p, g in q.grades.items() if scheme.is_relevant(g)]
        if not relevant or qid not in query_terms:
            continue
        terms = set(query_terms[qid])
        exact = any(terms <= set(product_terms.get(p, ())) for p in relevant if p in product_terms)
        out[qid] = LEXICAL_LABELS[0] if exact else LEXICAL_LABELS[1]
    return out


def by_typos(judgments: Judgments, searched: Mapping[str, str]) -> dict[str, str]:
    """`searched`: query_id -> the text searched. "corrected" where it differs from the
    query as typed (typo correction rewrote it), "as typed" where it does not."""
    return {
        qid: TYPO_LABELS[1] if searched[qid] != q.text else TYPO_LABELS[0]
        for qid, q in judgments.queries.items()
        if qid in searched
    }


def order_kinds(kinds: Collection[str]) -> list[str]:
    """Strata kinds in display order; unknown ones (a library caller's) after, by name."""
    known = [k for k in KIND_ORDER if k in kinds]
    return known + sorted(k for k in kinds if k not in KIND_ORDER)


def order_labels(labels: set[str], kind: str) -> list[str]:
    if kind == "length":
        return [x for x in LENGTH_LABELS if x in labels]
    if kind == "lexical":
        return [x for x in LEXICAL_LABELS if x in labels]
    if kind == "typos":
        return [x for x in TYPO_LABELS if x in labels]
    if kind == "frequency":
        return sorted(labels, key=lambda s: float(s.split()[1].split("-")[0]))
    return sorted(labels, key=lambda s: (s == OTHER, s))
