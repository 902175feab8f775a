"""Fit a collection's learned fusion on judged queries.

Each judged query is searched as `--fusion learned` will search it (both retrievers,
`candidates` deep, typos corrected); its candidates are a list the model learns to order by
their judged gains (0 when unjudged). Judged products neither retriever found are not in
the list: the model only reorders candidates, it cannot find more.

`fit_business` fits a business ranking's weights instead (`fusion fit --business FIELD`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from shopsearch.errors import UsageError
from shopsearch.evaluation.judgments import Judgments
from shopsearch.evaluation.metrics import ndcg
from shopsearch.evaluation.runs import SEARCH_CHUNK, search_rankings
from shopsearch.search.business_ranking import BusinessRanking
from shopsearch.search.learned_fusion import FusionModel, fit
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions


@dataclass(frozen=True)
class FusionFit:
    model: FusionModel
    queries: int
    candidates: int  # rows fit on
    judged_found: int  # judged products with a gain above 0 among the candidates
    judged: int  # judged products with a gain above 0


def fit_fusion(
    search: ProductSearch,
    judgments: Judgments,
    options: SearchOptions,
    *,
    epochs: int = 10,
    seed: int = 0,
    on_chunk: Callable[[int], None] | None = None,
) -> FusionFit:
    options = replace(options, payload_fields=["product_id"], collapse_variants=False)
    judged = list(judgments.queries.values())
    rows, gains = [], []
    found = wanted = 0
    for start in range(0, len(judged), SEARCH_CHUNK):
        chunk = judged[start : start + SEARCH_CHUNK]
        queries = [Query(q.text, query_id=q.query_id) for q in chunk]
        for q, (hits, x) in zip(chunk, search.learned_candidates(queries, options), strict=True):
            gain = {pid: judgments.scheme.gain(g) for pid, g in q.grades.items()}
            y = np.array([gain.get(h.product_id, 0.0) for h in hits], dtype=np.float32)
            rows.append(x)
            gains.append(y)
            found += int((y > 0).sum())
            wanted += sum(1 for v in gain.values() if v > 0)
        if on_chunk is not None:
            on_chunk(len(chunk))
    meta = search.meta
    rows_fit = sum(len(x) for x in rows)
    fitted_on = {
        "encoder": meta.encoder.fingerprint,
        "bm25": meta.bm25,
        "judgments": judgments.source,
        "queries": len(judged),
        "candidates": rows_fit,
        "seed": seed,
        "epochs": epochs,
    }
    model = fit(
        rows,
        gains,
        depth=options.candidates,
        fitted_on=fitted_on,
        epochs=epochs,
        seed=seed,
    )
    return FusionFit(model, len(judged), rows_fit, found, wanted)


# The weights a business ranking fit tries for each field (search/business_ranking.py).
BUSINESS_GRID = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
BUSINESS_PASSES = 2


@dataclass(frozen=True)
class BusinessFit:
    ranking: BusinessRanking
    ndcg: float  # mean nDCG@10 of the default search with it
    baseline: float  # and without a ranking
    queries: int


def fit_business(
    search: ProductSearch,
    judgments: Judgments,
    options: SearchOptions,
    fields: Sequence[str],
    *,
    in_stock_first: bool = False,
    grid: Sequence[float] = BUSINESS_GRID,
    on_step: Callable[[], None] | None = None,
) -> BusinessFit:
    """Business ranking weights for `fields` that maximise the mean nDCG@10 of `options`'
    search (the default search, rules off) on the judged queries: coordinate ascent over
    `grid`, each field's weight in turn, `BUSINESS_PASSES` times. A weight moves only where
    it scores higher, so a field that does not help keeps 0, and the fit never scores below
    the search without a ranking. Small and transparent on purpose: a few weights, each
    tried on every judged query, rather than a model."""
    for name in fields:
        if name not in search.meta.rank_fields:
            held = ", ".join(search.meta.rank_fields) or "none: ingest with --rank-field NAME"
            raise UsageError(f"--business {name!r}: not a rank field (rank fields: {held})")
    judged = list(judgments.queries.values())
    queries = [Query(q.text, query_id=q.query_id) for q in judged]
    plain = replace(options, rules=False, top_k=10, offset=0, payload_fields=["product_id"])

    def mean_ndcg(weights: dict[str, float]) -> float:
        ranking = BusinessRanking(tuple(weights.items()), in_stock_first, over_stored=False)
        total = 0.0
        for q, ranked in zip(
            judged, search_rankings(search, queries, replace(plain, ranking=ranking)), strict=True
        ):
            gains = np.array(
                [
                    judgments.scheme.gain(q.grades[p]) if p in q.grades else 0.0
                    for p in ranked.product_ids
                ]
            )
            ideal = np.array([judgments.scheme.gain(g) for g in q.grades.values()])
            total += ndcg(gains, ideal, 10)
        if on_step is not None:
            on_step()
        return total / max(len(judged), 1)

    weights = {name: 0.0 for name in fields}
    baseline = best = mean_ndcg({})
    if in_stock_first:
        best = mean_ndcg(weights)
    for _ in range(BUSINESS_PASSES):
        for name in fields:
            for weight in grid:
                if weight == weights[name]:
                    continue
                score = mean_ndcg({**weights, name: weight})
                if score > best + 1e-9:
                    best, weights[name] = score, weight
    ranking = BusinessRanking(tuple(weights.items()), in_stock_first, over_stored=False)
    return BusinessFit(ranking, best, baseline, len(judged))
