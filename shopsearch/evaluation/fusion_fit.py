"""Fit a collection's learned fusion on judged queries.

Each judged query is searched as `--fusion learned` will search it (both retrievers,
`candidates` deep, typos corrected); its candidates are a list the model learns to order by
their judged gains (0 when unjudged). Judged products neither retriever found are not in
the list: the model only reorders candidates, it cannot find more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from shopsearch.evaluation.judgments import Judgments
from shopsearch.evaluation.runs import SEARCH_CHUNK
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
