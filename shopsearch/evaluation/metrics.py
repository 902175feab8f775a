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
- Ties: products with equal scores form a tied group, scored as the expectation over the
  group's orders (McSherry & Najork, ECIR 2008): gains and relevance averaged over the group
  for nDCG and Recall, the hypergeometric expectation for RR. An engine's order among equal
  scores is arbitrary (identical titles embed identically; BM25 ties often), and trec_eval's
  tie break by product id would make a metric depend on how ids sort.
- A product listed twice counts once, at its first rank.
Two modes: "full" scores the ranking as retrieved from the whole catalog (unjudged products
have gain 0); "rerank" scores only the query's judged products in the system's order, and
those the system gave no score (e.g. no BM25 term in common) form one more tied group at the
end.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shopsearch.evaluation.judgments import GradeScheme, JudgedQuery

MODES = ("full", "rerank")


@dataclass(frozen=True)
class MetricConfig:
    ndcg_ks: tuple[int, ...] = (10,)
    recall_ks: tuple[int, ...] = (100,)

    def names(self, scheme: GradeScheme) -> list[str]:
        """Metric names in display order; per-grade-pair accuracies where the scheme has
        grade classes (`GradeScheme.grade_pairs`: ESCI labels, whole-number ratings)."""
        names = [f"nDCG@{k}" for k in self.ndcg_ks] + [f"Recall@{k}" for k in self.recall_ks]
        names += ["MRR", "OrderAcc"]
        names += [f"OrderAcc[{a}>{b}]" for a, b in scheme.grade_pairs()]
        return names


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


def tie_starts(scores: np.ndarray) -> np.ndarray:
    """Where each run of equal scores starts in a ranking (best first)."""
    sc = np.asarray(scores, dtype=float)
    if not sc.size:
        return np.zeros(0, dtype=int)
    return np.concatenate(([0], np.flatnonzero(sc[1:] != sc[:-1]) + 1))


def tie_averaged(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Each value replaced by its tied group's mean: DCG and recall are linear in the value at
    each rank, so this is their expectation over the group's orders."""
    vals = np.asarray(values, dtype=float)
    if vals.size == 0:
        return vals
    sizes = np.diff(np.append(starts, vals.size))
    return np.repeat(np.add.reduceat(vals, starts) / sizes, sizes)


def reciprocal_rank(
    relevant: np.ndarray, n_relevant: int, starts: np.ndarray | None = None
) -> float:
    """1/rank of the first relevant item; with tied groups (`starts`, see `tie_starts`), the
    expectation over the orders of the group holding the first relevant item (its position
    in the group is hypergeometric)."""
    if n_relevant == 0:
        return math.nan
    rel = np.asarray(relevant, dtype=float)
    hits = np.flatnonzero(rel > 0)
    if not hits.size:
        return 0.0
    if starts is None:
        return 1.0 / (hits[0] + 1)
    group = int(np.searchsorted(starts, hits[0], side="right")) - 1
    start = int(starts[group])
    end = int(starts[group + 1]) if group + 1 < len(starts) else rel.size
    m, r = end - start, round(rel[start:end].sum())
    # P(first relevant at offset j) = C(m-j-1, r-1) / C(m, r)
    total = math.comb(m, r)
    return sum(math.comb(m - j - 1, r - 1) / total / (start + j + 1) for j in range(m - r + 1))


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
    first: dict[str, float] = {}
    for p, s in zip(product_ids, scores, strict=True):
        if p not in first and (mode == "full" or p in grades):
            first[p] = float(s)
    if mode == "rerank":  # the judged products without a score tie below the scored ones
        first.update({p: -math.inf for p in grades if p not in first})
    ids = list(first)
    starts = tie_starts(np.array(list(first.values())))
    gains = np.array([scheme.gain(grades[p]) if p in grades else 0.0 for p in ids], dtype=float)
    rel = np.array([p in grades and scheme.is_relevant(grades[p]) for p in ids], dtype=float)
    out: dict[str, float] = {}
    for k in config.ndcg_ks:
        out[f"nDCG@{k}"] = ndcg(tie_averaged(gains, starts), all_gains, k)
    for k in config.recall_ks:
        out[f"Recall@{k}"] = recall(tie_averaged(rel, starts), n_rel, k)
    out["MRR"] = reciprocal_rank(rel, n_rel, starts)
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
    for a, b in scheme.grade_pairs():
        keep = np.isin(levels, [scheme.level(a), scheme.level(b)])
        gap = scheme.level(a) - scheme.level(b)
        sub_ret = None if retrieved is None else retrieved[keep]
        acc, _ = order_accuracy(levels[keep], sc[keep], gap, sub_ret)
        out[f"OrderAcc[{a}>{b}]"] = acc
    return out
