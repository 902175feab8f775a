"""Fit the relevance floor's calibration (shopsearch.search.confidence) on judged queries.

The package ships a prior fit on Home Depot; a shop whose judgments look otherwise (most
judged results relevant, as on CrowdFlower, where the prior's confidences run low) fits its
own: `shopsearch fusion fit --confidence` stores it with the collection, and
`benchmarks/fit_confidence.py` refits the prior. Both run `fit_confidence`:

1. each judged query is searched as `shopsearch query` searches it (`SearchOptions` as
   given: the default search), its top 10 kept;
2. each result's evidence is read as the query path reads it (`confidence.read_evidence`),
   and a result the judgments rate is labelled relevant as their scheme says
   (`GradeScheme.is_relevant`: rating >= 3/4 up the scale, or an ESCI label S and better).
   Judged results alone, by default: where the judgments say nothing there is no label
   (search/confidence.py says why);
3. a logistic regression over the evidence features (the prior's: cosine and coverage)
   minimises the mean log loss with a small L2 penalty (Newton's method).
"""

from __future__ import annotations

import datetime
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from shopsearch.errors import UsageError
from shopsearch.evaluation.calibration import Calibration
from shopsearch.evaluation.judgments import Judgments
from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE, ConfidenceModel, read_evidence

if TYPE_CHECKING:
    from shopsearch.search.product_search import ProductSearch, SearchOptions

# Queries searched per batch.
CHUNK = 64
# The results of each query whose evidence is read: a page.
TOP_K = 10
# The L2 penalty on the weights (not the intercept): a few thousand results fit stably.
L2 = 1e-3
# The features a shop's own model weighs: the prior's.
FIT_FEATURES = ("cosine", "coverage")


@dataclass
class Labelled:
    """Each labelled result's features (rows of `x`), label (`y`: 1 relevant) and query
    (`q`: its index among the searched queries)."""

    x: np.ndarray
    y: np.ndarray
    q: np.ndarray


@dataclass
class FittedConfidence:
    model: ConfidenceModel
    calibration: Calibration  # on the results it was fit on
    queries: int
    results: int


def sampled(judged: Judgments, limit: int | None, seed: int = 0) -> Judgments:
    """`judged` with `limit` of its queries, drawn at random (seeded); all of them for None."""
    if limit is None or limit >= len(judged.queries):
        return judged
    kept = sorted(random.Random(seed).sample(sorted(judged.queries), limit))
    return replace(judged, queries={q: judged.queries[q] for q in kept})


def labelled(
    search: ProductSearch,
    judged: Judgments,
    options: SearchOptions,
    features: Sequence[str] = FIT_FEATURES,
    judged_only: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> Labelled:
    """The evidence and label of each of the judged queries' top-10 results (of those the
    judgments rate, with `judged_only`; else every result, an unrated one not relevant)."""
    from shopsearch.search.product_search import Query

    # Rules off, as in `eval`: the evidence is relevance's, whatever a shop pins.
    page = replace(options, top_k=TOP_K, offset=0, payload_fields=["product_id"], rules=False)
    qids = sorted(judged.queries)
    xs: list[list[float]] = []
    ys: list[float] = []
    qs: list[int] = []
    for start in range(0, len(qids), CHUNK):
        chunk = qids[start : start + CHUNK]
        queries = [search.prepare(Query(judged.queries[q].text, query_id=q), page) for q in chunk]
        pages = search.search_batch(queries, page)
        evidence = read_evidence(search, queries, [[h.point_id for h in p] for p in pages])
        for j, (qid, hits) in enumerate(zip(chunk, pages, strict=True)):
            grades = judged.queries[qid].grades
            for hit, ev in zip(hits, evidence[j], strict=True):
                grade = grades.get(hit.product_id)
                if judged_only and grade is None:
                    continue
                xs.append(ev.features(features))
                ys.append(1.0 if grade is not None and judged.scheme.is_relevant(grade) else 0.0)
                qs.append(start + j)
        if on_chunk is not None:
            on_chunk(len(chunk))
    width = len(features)
    return Labelled(np.array(xs).reshape(-1, width), np.array(ys), np.array(qs, dtype=int))


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = L2) -> tuple[float, np.ndarray]:
    """Intercept and weights minimising the mean log loss + l2/2 |w|^2 (Newton's method)."""
    a = np.hstack([np.ones((len(x), 1)), x])
    beta = np.zeros(a.shape[1])
    penalty = np.diag([0.0] + [l2] * x.shape[1])
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-(a @ beta)))
        grad = a.T @ (p - y) / len(y) + penalty @ beta
        hess = (a * (p * (1 - p))[:, None]).T @ a / len(y) + penalty
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(beta[0]), beta[1:]


def calibration_of(
    name: str, p: np.ndarray, y: np.ndarray, q: np.ndarray, cut: float = DEFAULT_MIN_CONFIDENCE
) -> Calibration:
    """The reliability of confidences `p` for results labelled `y` (1: relevant) of queries
    `q` (`evaluation.calibration`), each query's best confidence deciding its page."""
    firsts = np.array([p[q == i].max() for i in sorted(set(q.tolist()))])
    return Calibration(name, p, y == 1, q, firsts, cut)


def fit_confidence(
    search: ProductSearch,
    judged: Judgments,
    options: SearchOptions,
    features: Sequence[str] = FIT_FEATURES,
    judged_only: bool = True,
    on_chunk: Callable[[int], None] | None = None,
) -> FittedConfidence:
    """A confidence model fit on `judged` (module docstring), with its model card and its
    calibration on the results it was fit on. Refused when the top 10s hold too few rated
    results, or no relevant or no irrelevant one, to fit."""
    data = labelled(search, judged, options, features, judged_only, on_chunk)
    rated = len(data.y)
    if rated < 20 or data.y.min() == data.y.max():
        raise UsageError(
            f"{judged.source or 'the judgments'}: {rated} rated results among the queries' "
            f"top {TOP_K}, {int(data.y.sum())} of them relevant: a confidence model needs "
            "at least 20, relevant and irrelevant ones both"
        )
    intercept, weights = fit_logistic(data.x, data.y)
    card = {
        "fit_on": f"{len(judged.queries)} judged queries of {judged.source or 'a shop'}: "
        f"{rated} rated results of the default search's top {TOP_K}, "
        f"{data.y.mean():.1%} relevant ({_relevant(judged)})",
        "fit_by": "shopsearch.evaluation.confidence_fit",
        "fit_at": datetime.date.today().isoformat(),
        "encoder": search.meta.encoder.name,
        "encoder_fingerprint": search.meta.encoder.fingerprint,
    }
    model = ConfidenceModel(intercept, tuple(float(w) for w in weights), card, tuple(features))
    p = 1.0 / (1.0 + np.exp(-(intercept + data.x @ weights)))
    calibration = calibration_of("fit", p, data.y, data.q)
    return FittedConfidence(model, calibration, len(judged.queries), rated)


def _relevant(judged: Judgments) -> str:
    """What counted as relevant, in a few words."""
    scheme = judged.scheme
    if scheme.kind == "esci":
        return f"label {scheme.relevant or 'S'} or better"
    return f"rating >= {scheme.relevant_level:g}"
