"""Systems from a collection: run the judged queries through ProductSearch.

Full-corpus mode uses exactly the search loop of `shopsearch query --batch`
(`runs.search_rankings`). Re-rank mode needs a score for each query's judged products:
the same query, filtered to `product_id in (judged products)`, with top_k = their number.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from shopsearch.evaluation.evaluate import System
from shopsearch.evaluation.judgments import Judgments
from shopsearch.evaluation.runs import search_rankings
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import SearchMode
from shopsearch.store.conditions import Match

PAYLOAD_FIELDS = ["product_id", "category"]


def system_name(options: SearchOptions) -> str:
    name = options.mode.value
    if options.mode is SearchMode.HYBRID:
        name += f"-{options.fusion.value}"
        if options.bm25_weight is not None:  # None: the default weight
            name += f"-bm25x{options.bm25_weight:g}"
    return name


def search_system(
    search: ProductSearch,
    judgments: Judgments,
    options: SearchOptions,
    name: str | None = None,
    rerank: bool = True,
    payloads: dict[str, dict[str, Any]] | None = None,
    on_chunk: Callable[[int], None] | None = None,
) -> System:
    """Full-corpus (and re-rank) runs of every judged query; payloads seen are collected."""
    # Judgments grade products, not families: every variant keeps its own rank.
    full_options = replace(options, payload_fields=PAYLOAD_FIELDS, collapse_variants=False)
    queries = [Query(q.text, (), query_id=qid) for qid, q in judgments.queries.items()]
    full = {
        r.query_id: r
        for r in search_rankings(search, queries, full_options, on_chunk, payloads=payloads)
    }
    rerank_run = None
    if rerank:
        most = max(len(q.grades) for q in judgments.queries.values())
        rerank_options = replace(full_options, top_k=most, candidates=max(most, options.candidates))
        filtered = [
            Query(q.text, (Match("product_id", tuple(q.grades)),), query_id=qid)
            for qid, q in judgments.queries.items()
        ]
        rerank_run = {
            r.query_id: r
            for r in search_rankings(search, filtered, rerank_options, on_chunk, payloads=payloads)
        }
    detail = [options.mode.value]
    if options.mode is SearchMode.HYBRID:
        detail.append(f"fusion={options.fusion.value}")
        if options.fused_by_rrf:
            detail.append(f"bm25_weight={options.rrf_bm25_weight:g}")
    if options.mode is not SearchMode.BM25:
        detail.append("exact" if options.exact else "HNSW")
    detail.append(f"top_k={options.top_k}")
    if not options.fix_typos:
        detail.append("typos kept")
    return System(
        name or system_name(options),
        full,
        rerank_run,
        source=f"collection {search.backend.location} ({', '.join(detail)})",
    )
