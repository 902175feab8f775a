"""Systems from a collection: run the judged queries through ProductSearch.

Full-corpus mode uses exactly the search loop of `shopsearch query --batch`
(`runs.search_rankings`). Re-rank mode needs a score for each query's judged products:
the same query, filtered to `product_id in (judged products)`, with top_k = their number.
`collection_facts` reads what the collection itself says about the judgments: how many of
the judged products it holds, and the strata that need its texts and tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from shopsearch.evaluation.calibration import Calibration, assess, run_confidences
from shopsearch.evaluation.evaluate import System
from shopsearch.evaluation.judgments import Judgments
from shopsearch.evaluation.runs import search_rankings
from shopsearch.evaluation.strata import by_lexical_match, by_typos
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.validate import Product
from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE, prior, read_evidence
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import SearchMode
from shopsearch.store.conditions import Match
from shopsearch.store.schema import point_id

PAYLOAD_FIELDS = ["product_id", "category"]
ID_PAGE = 512  # payloads read per request


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
    # Judgments grade products, not families: every variant keeps its own rank. Relevance
    # alone is measured: a collection's merchandising rules are off.
    full_options = replace(
        options, payload_fields=PAYLOAD_FIELDS, collapse_variants=False, rules=False
    )
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


@dataclass
class CollectionFacts:
    """What eval learns from the collection itself, beyond the systems' rankings."""

    judged: int  # distinct judged products
    found: int  # of those, the ones the collection holds
    missing: list[str]  # a few judged product ids it lacks, for messages
    payloads: dict[str, dict[str, Any]]  # product_id -> payload of the judged products found
    searched: dict[str, str]  # query_id -> the text searched (typos corrected or not)
    strata: dict[str, dict[str, str]]  # "lexical" and "typos": query_id -> label

    @property
    def coverage(self) -> float:
        return self.found / self.judged if self.judged else 1.0


def collection_facts(
    search: ProductSearch, judgments: Judgments, options: SearchOptions
) -> CollectionFacts:
    """Which judged products the collection holds (their payloads), each query's searched
    text, and the strata only a collection can tell: lexical match (the query's BM25 terms
    against the relevant products' indexed texts, tokenised as the collection tokenises
    them) and typo correction (see `strata`)."""
    judged = list(dict.fromkeys(p for q in judgments.queries.values() for p in q.grades))
    by_point = {point_id(p): p for p in judged}
    payloads: dict[str, dict[str, Any]] = {}
    points = list(by_point)
    for start in range(0, len(points), ID_PAGE):
        for pid, payload in search.backend.payloads(points[start : start + ID_PAGE]).items():
            payloads[by_point[pid]] = payload
    missing = [p for p in judged if p not in payloads][:3]
    searched = {
        qid: search.searched_text(Query(q.text), options) for qid, q in judgments.queries.items()
    }
    template = ProductTextTemplate(search.meta.product_text_template)
    bm25 = search.bm25_settings.model()
    scheme = judgments.scheme
    relevant = {
        p for q in judgments.queries.values() for p, g in q.grades.items() if scheme.is_relevant(g)
    }
    product_terms = {
        pid: set(bm25.embed_document(template.render(Product.from_payload(p))).indices)
        for pid, p in payloads.items()
        if pid in relevant
    }
    query_terms = {qid: set(bm25.embed_query(text).indices) for qid, text in searched.items()}
    strata = {"lexical": by_lexical_match(judgments, query_terms, product_terms)}
    if options.fix_typos:
        strata["typos"] = by_typos(judgments, searched)
    return CollectionFacts(len(judged), len(payloads), missing, payloads, searched, strata)


def calibration_of(
    search: ProductSearch,
    judgments: Judgments,
    system: System,
    options: SearchOptions,
    k: int = 10,
) -> Calibration:
    """The relevance floor's calibration on `system`'s first `k` results: each one's
    confidence read as the query path reads it (`confidence.read_evidence`, the shipped
    model), against the judgments (`calibration.assess`)."""
    model = prior()
    texts = {qid: q.text for qid, q in judgments.queries.items()}

    def read(qids: list[str], products: list[list[str]]) -> list[list[float]]:
        queries = [search.prepare(Query(texts[q], (), query_id=q), options) for q in qids]
        points = [[point_id(p) for p in ps] for ps in products]
        return [model.probability(e) for e in read_evidence(search, queries, points)]

    confidences = run_confidences(read, system.full, k)
    return assess(system.name, judgments, system.full, confidences, DEFAULT_MIN_CONFIDENCE, k)
