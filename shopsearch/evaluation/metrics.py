"""Per-query ranking metrics: nDCG@k, Recall@k, reciprocal rank, pairwise order accuracy.

Pure numpy, one query at a time, so every metric has a per-query value that strata and
paired significance tests can use. Conventions (each matches trec_eval where it has one):
- nDCG@k: DCG = sum_i gain_i / log2(i + 1) over ranks i = 1..k; the ideal ranking sorts all
  judged products of the query by gain. A query with no positive gain is undefined (NaN)
  and left out of means, rather than counted as 0 for every system.
- Recall@k: relevant products in the top k / relevant products judged; NaN without any.
- RR: 1 / rank of the first relevant product in the whole list, 0 if none; NaN without any.
- Order accuracy: over judged pairs whose grades differ enough (see GradeScheme), the
  fraction the system orders correctly, a tie counting 1/2. In full-corpus mode a product not
  retrieved ranks below every retrieved one; pairs with neither retrieved are skipped (the
  system said nothing about them).
Two modes: "full" scores the ranking as retrieved from the whole catalog (unjudged products
have gain 0); "rerank" scores only the query's judged products in the system's order, and
those the system gave no score (e.g. no BM25 term in common) form one tied group at the end,
whose gains are averaged: the exact expectation over the group's orders.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations

import numpy as np

from shopsearch.evaluation.judgments import ESCI_LEVELS, GradeScheme, JudgedQuery

MODES = ("full", "rerank")


@dataclass(frozen=True)
class MetricConfig:
    ndcg_ks: tuple[int, ...] = (10,)
    recall_ks: tuple[int, ...] = (100,)

    def names(self, scheme: GradeScheme) -> list[str]:
        """Metric names in display order; per-grade-pair accuracies only for ESCI labels."""
        names = [f"nDCG@{k}" for k in self.ndcg_ks] + [f"Recall@{k}" for k in self.recall_ks]
        names += ["MRR", "OrderAcc"]
        if scheme.kind == "esci":
            names += [f"OrderAcc[{a}>{b}]" for a, b in esci_pairs()]
        return names


def esci_pairs() -> list[tuple[str, str]]:
    """(better, worse) label pairs, consecutive ones first: E>S, S>C, C>I, E>C, S>I, E>I."""
    best_first = ESCI_LEVELS[::-1]
    return sorted(
        combinations(best_first, 2),
        key=lambda p: (best_first.index(p[1]) - best_first.index(p[0]), best_first.index(p[0])),
    )


def dcg(gains: np.ndarray, k: int) -> float:
    top = np.asarray(gains, dtype=float)[:k]
    return float(np.sum(top / np.log2(np.arange(2, top.size + 2))))


def ndcg(gains: np.ndarray, ideal_gains: np.ndarray, k: int) -> float:
    """nDCG@k of `gains` (in rank order) against all judged gains of the query."""
    ideal = dcg(np.sort(np.asarray(ideal_gains, dtype=float))[::-1], k)
    return dcg(gains, k) / ideal if ideal > 0 else math.nan


def recall(relevant: np.ndarray, n_relevant: int, k: int) -> float:
    if n_relevant == 0:
        return math.nan
    return float(np.sum(np.asarray(relevant, dtype=float)[:k]) / n_relevant)


def reciprocal_rank(relevant: np.ndarray, n_relevant: int, tie_start: int | None = None) -> float:
    """1/rank of the first relevant item; with a tied tail from `tie_start`, the expectation
    over the tail's random orders (P(first relevant at tail offset j) is hypergeometric)."""
    if n_relevant == 0:
        return math.nan
    rel = np.asarray(relevant, dtype=float)
    head = rel if tie_start is None else rel[:tie_start]
    hits = np.flatnonzero(head > 0)
    if hits.size:
        return 1.0 / (hits[0] + 1)
    if tie_start is None:
        return 0.0
    m = rel.size - tie_start
    r = round(rel[tie_start:].sum() if m else 0)
    if r == 0:
        return 0.0
    # P(first relevant at offset j) = C(m-j-1, r-1) / C(m, r)
    total = math.comb(m, r)
    return sum(math.comb(m - j - 1, r - 1) / total / (tie_start + j + 1) for j in range(m - r + 1))


def order_accuracy(
    levels: np.ndarray, scores: np.ndarray, min_gap: float, retrieved: np.ndarray | None = None
) -> tuple[float, int]:
    """(fraction of pairs ordered correctly, number of pairs); ties count 1/2.

    Pairs are (i, j) with levels[i] - levels[j] >= min_gap; with `retrieved`, pairs where
    neither product was retrieved are skipped. NaN when there is no pair."""
    lv = np.asarray(levels, dtype=float)
    sc = np.asarray(scores, dtype=float)
    better = (lv[:, None] - lv[None, :]) >= min_gap - 1e-9
    if retrieved is not None:
        seen = np.asarray(retrieved, dtype=bool)
        better &= seen[:, None] | seen[None, :]
    n = int(better.sum())
    if n == 0:
        return math.nan, 0
    with np.errstate(invalid="ignore"):
        diff = sc[:, None] - sc[None, :]
    credit = np.where(diff > 0, 1.0, np.where(diff == 0, 0.5, 0.0))
    # Both unretrieved scores are -inf: inf - inf is NaN; those pairs are excluded above.
    credit = np.where(np.isnan(diff), 0.5, credit)
    return float(credit[better].sum() / n), n


def query_metrics(
    judged: JudgedQuery,
    product_ids: Sequence[str],
    scores: Sequence[float],
    scheme: GradeScheme,
    config: MetricConfig,
    mode: str = "full",
) -> dict[str, float]:
    """All metrics of one query for one system's ranking (best first) in `mode`."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    grades = judged.grades
    all_gains = np.array([scheme.gain(g) for g in grades.values()], dtype=float)
    n_rel = sum(scheme.is_relevant(g) for g in grades.values())
    tie_start: int | None = None
    ids = list(product_ids)
    if mode == "rerank":
        seen: set[str] = set()
        ids = [p for p in ids if p in grades and not (p in seen or seen.add(p))]
        tie_start = len(ids)
        ids += [p for p in grades if p not in seen]
    gains = np.array([scheme.gain(grades[p]) if p in grades else 0.0 for p in ids], dtype=float)
    rel = np.array([p in grades and scheme.is_relevant(grades[p]) for p in ids], dtype=float)
    if tie_start is not None and tie_start < len(ids):
        gains[tie_start:] = gains[tie_start:].mean()
        rel_tail = rel.copy()
        rel_tail[tie_start:] = rel[tie_start:].mean()
    else:
        rel_tail = rel
    out: dict[str, float] = {}
    for k in config.ndcg_ks:
        out[f"nDCG@{k}"] = ndcg(gains, all_gains, k)
    for k in config.recall_ks:
        out[f"Recall@{k}"] = recall(rel_tail, n_rel, k)
    out["MRR"] = reciprocal_rank(rel, n_rel, tie_start)
    out.update(_order_accuracies(judged, product_ids, scores, scheme, mode))
    return out


def _order_accuracies(
    judged: JudgedQuery,
    product_ids: Sequence[str],
    scores: Sequence[float],
    scheme: GradeScheme,
    mode: str,
) -> dict[str, float]:
    score_of: dict[str, float] = {}
    for p, s in zip(product_ids, scores, strict=True):
        if p in judged.grades and p not in score_of:
            score_of[p] = float(s)
    pids = list(judged.grades)
    levels = np.array([scheme.level(judged.grades[p]) for p in pids])
    sc = np.array([score_of.get(p, -math.inf) for p in pids])
    retrieved = None if mode == "rerank" else np.array([p in score_of for p in pids])
    out = {"OrderAcc": order_accuracy(levels, sc, scheme.min_gap(), retrieved)[0]}
    if scheme.kind == "esci":
        for a, b in esci_pairs():
            keep = np.isin(levels, [scheme.level(a), scheme.level(b)])
            gap = scheme.level(a) - scheme.level(b)
            sub_ret = None if retrieved is None else retrieved[keep]
            acc, _ = order_accuracy(levels[keep], sc[keep], gap, sub_ret)
            out[f"OrderAcc[{a}>{b}]"] = acc
    return out
