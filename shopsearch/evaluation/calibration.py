"""How well the relevance floor's confidences match what people judged: the reliability diagram.

A confidence is calibrated when, of the results given about 0.3, about 30% are relevant. The
truth is known only for judged products, so the diagram counts the judged results among each
query's first `k` (an unjudged result is neither relevant nor irrelevant: the judgments do
not say). Bins of equal width over 0..1; ECE is the bins' mean gap between predicted and
observed, weighted by their counts. At a cut, precision is the share relevant among the
judged results it keeps and recall the share of the relevant judged results it keeps; a
query whose first results all fall under the cut is a `no_confident_match` query.

`shopsearch eval` reads the default system's confidences for its searched hybrid system (the
page's evidence as the query path reads it, `search.confidence.read_evidence`) and the
report draws the diagram; `benchmarks/fit_confidence.py` assesses a fit with the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopsearch.evaluation.judgments import Judgments
from shopsearch.evaluation.runs import Run

BINS = 10


@dataclass(frozen=True)
class Calibration:
    """Confidences of judged results and whether each is relevant, with the query of each."""

    system: str
    confidence: np.ndarray  # float, one per judged result
    relevant: np.ndarray  # bool
    query: np.ndarray  # int: the result's query, 0..queries-1
    firsts: np.ndarray  # float: each query's highest confidence among its first k (judged or not)
    cut: float
    k: int = 10

    def bins(self, n: int = BINS) -> list[dict[str, float]]:
        """Equal-width bins over 0..1 that hold results: edges, count, mean predicted,
        share relevant."""
        index = np.minimum((self.confidence * n).astype(int), n - 1)
        out = []
        for b in range(n):
            inside = index == b
            count = int(inside.sum())
            if count:
                out.append(
                    {
                        "low": b / n,
                        "high": (b + 1) / n,
                        "results": count,
                        "predicted": float(self.confidence[inside].mean()),
                        "observed": float(self.relevant[inside].mean()),
                    }
                )
        return out

    @property
    def ece(self) -> float:
        total = len(self.confidence)
        if not total:
            return float("nan")
        return sum(b["results"] / total * abs(b["predicted"] - b["observed"]) for b in self.bins())

    def at(self, cut: float) -> dict[str, Any]:
        """Precision and recall of the judged results at `cut`, and the queries it leaves
        without a confident match."""
        kept = self.confidence >= cut
        relevant = int(self.relevant.sum())
        return {
            "cut": cut,
            "kept": int(kept.sum()),
            "precision": float(self.relevant[kept].mean()) if kept.any() else None,
            "recall": float((kept & self.relevant).sum() / relevant) if relevant else None,
            "no_confident_match": int((self.firsts < cut).sum()),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "first_k": self.k,
            "judged_results": len(self.confidence),
            "relevant_share": float(self.relevant.mean()) if len(self.relevant) else None,
            "queries": len(self.firsts),
            "ece": self.ece,
            "bins": self.bins(),
            "default_cut": self.at(self.cut),
        }


def assess(
    system: str,
    judgments: Judgments,
    run: Run,
    confidences: dict[str, Sequence[float]],
    cut: float,
    k: int = 10,
) -> Calibration:
    """The calibration of `confidences` (query_id -> the confidence of each of the run's
    first `k` results, in order) against `judgments`."""
    conf, rel, query, firsts = [], [], [], []
    for i, (qid, judged) in enumerate(judgments.queries.items()):
        ranking = run.get(qid)
        scores = confidences.get(qid)
        if ranking is None or not scores:
            continue
        firsts.append(max(scores))
        for pid, c in zip(ranking.product_ids[:k], scores, strict=False):
            grade = judged.grades.get(pid)
            if grade is None:
                continue
            conf.append(c)
            rel.append(judgments.scheme.is_relevant(grade))
            query.append(i)
    return Calibration(
        system,
        np.asarray(conf, dtype=float),
        np.asarray(rel, dtype=bool),
        np.asarray(query, dtype=int),
        np.asarray(firsts, dtype=float),
        cut,
        k,
    )


def run_confidences(
    read: Callable[[list[str], list[list[str]]], list[list[float]]],
    run: Run,
    k: int = 10,
    chunk: int = 64,
) -> dict[str, list[float]]:
    """Each ranking's first `k` results' confidences, `read(query_ids, product_ids)` reading
    them a chunk of queries at a time."""
    qids = [q for q, r in run.items() if r.product_ids]
    out: dict[str, list[float]] = {}
    for start in range(0, len(qids), chunk):
        part = qids[start : start + chunk]
        read_ = read(part, [list(run[q].product_ids[:k]) for q in part])
        out.update(zip(part, read_, strict=True))
    return out
