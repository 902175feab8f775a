"""The JSON shapes of a search's answer, of facet counts and of a collection's description.

`shopsearch query --json`, `shopsearch facets --json`, `shopsearch info --json` and the HTTP
service (`shopsearch serve`) all answer with these, so a script written against the CLI reads
the service's answers unchanged, and a test can compare the two field for field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shopsearch.search.business_ranking import resolved
from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE, confident, model_info
from shopsearch.search.facets import Facets
from shopsearch.search.filter_hints import FilterHint, filter_hints
from shopsearch.search.filters import parse_filter_object, parse_filters
from shopsearch.search.highlight import highlighter
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.rules import fired_rules
from shopsearch.store.backend import Hit, Placed, SearchMode
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.schema import MATCH_KEY


def search_document(
    query: Query,
    filters: Sequence[str] | dict[str, Any],
    options: SearchOptions,
    hits: Sequence[Hit],
    facets: Facets | None = None,
    language: str = Bm25Settings.language,
) -> dict[str, Any]:
    """One search's answer: what was asked, what was searched (typos corrected), how, and
    each result's score, stored fields and `highlight` (the searched words in its title and
    description, by the BM25 tokenizer of `language`: shopsearch.search.highlight); with
    `facets`, their counts among the best results (`facets_among` products)."""
    searched = query.searched or query.text
    marker = highlighter(language)
    marked = marker.query(searched)
    doc: dict[str, Any] = {
        "query": query.text,
        "searched": searched,
        # The synonyms that widened the BM25 side of the search (shopsearch.search.synonyms).
        "synonyms": [a.to_dict() for a in query.synonyms or ()],
        "filters": filters if isinstance(filters, dict) else list(filters),
        "mode": options.mode.value,
        "fusion": options.fusion.value if options.mode is SearchMode.HYBRID else None,
        "bm25_weight": options.rrf_bm25_weight if options.fused_by_rrf else None,
        "offset": options.offset,
        # The order asked for, and what the merchandising rules did.
        "sort": None if options.sort is None else str(options.sort),
        "rules": fired_rules(hits),
        # The relevance floor (shopsearch.search.confidence): the cut asked for (null: none),
        # and whether the page lacks any result reaching the default cut (null: unknown, a
        # search without the encoder).
        "min_confidence": options.min_confidence,
        "no_confident_match": no_confident_match(hits, options),
        "results": [
            {
                # `score` is the fusion's: it orders this query's results and means nothing
                # across queries; `confidence` is the calibrated probability of relevance.
                "score": h.score,
                "confidence": h.confidence,
                # The stored fields as the catalog spelled them; not the normalised copies
                # filters compare (schema.MATCH_KEY), which are for matching, not display.
                **{k: v for k, v in h.payload.items() if k != MATCH_KEY},
                "other_variants": list(h.other_variants),
                "highlight": marker.fields(h.payload, marked),
            }
            for h in hits
        ],
    }
    if facets is not None:
        counted = facets_document(facets)
        doc.update(
            facets_among=counted["products"], facets=counted["facets"], ranges=counted["ranges"]
        )
    return doc


def no_confident_match(hits: Sequence[Hit], options: SearchOptions) -> bool | None:
    """True when no result on the page reaches `DEFAULT_MIN_CONFIDENCE` (an empty page
    included); None when the results carry no confidence to tell."""
    if hits and all(h.confidence is None for h in hits):
        return None
    if not hits and not options.scores_confidence:
        return None
    return not confident(hits, DEFAULT_MIN_CONFIDENCE)


def search_answer(
    search: ProductSearch,
    query: Query,
    filters: Sequence[str] | dict[str, Any],
    options: SearchOptions,
    hits: Sequence[Hit],
    facets: Facets | None = None,
) -> dict[str, Any]:
    """`search_document` as the CLI and the service answer it, the collection still open:
    highlighted by the collection's own BM25 language, and with `filter_hints` saying why a
    filtered search found nothing (`unmatched_filter_hints`)."""
    language = search.bm25_settings.language
    doc = search_document(query, filters, options, hits, facets, language)
    doc["filter_hints"] = [h.to_dict() for h in unmatched_filter_hints(search, filters, hits)]
    ranking = resolved(search, options).ranking
    if ranking:  # the business ranking applied, stored and set by hand (business_ranking.py)
        doc["ranking"] = {
            "weights": {n: w for n, w in ranking.weights if w},
            "in_stock_first": ranking.in_stock_first,
        }
    return doc


def unmatched_filter_hints(
    search: ProductSearch, filters: Sequence[str] | dict[str, Any], hits: Sequence[Hit]
) -> list[FilterHint]:
    """The filter hints of a search that found nothing under `filters` (as given: a prepared
    query's conditions point at the normalised copies), worked out only then, each filter
    costing a count; none otherwise."""
    if not filters or hits:
        return []
    if isinstance(filters, dict):
        conditions = parse_filter_object(filters)
    else:
        conditions = parse_filters(list(filters))
    return filter_hints(search.backend, search.meta, conditions)


def facets_document(counted: Facets) -> dict[str, Any]:
    """Products counted, each field's most held values, and each number field's range."""
    return {
        "products": counted.products,
        "facets": {
            name: [{"value": c.value, "count": c.count} for c in hits]
            for name, hits in counted.counts.items()
        },
        "ranges": {
            name: None if span is None else {"min": span.low, "max": span.high}
            for name, span in counted.ranges.items()
        },
    }


def collection_document(search: ProductSearch) -> dict[str, Any]:
    """Where the collection is, its size, what built it, and its learned fusion if any; on a
    server, how it is spread over the cluster (`placement`)."""
    doc = {
        "location": search.backend.location,
        "products": search.backend.count(),
        **search.meta.to_dict(),
        "vocabulary_words": len(search.typos.vocabulary),
        "learned_fusion": search.fusion_info(),
        "confidence_model": model_info(search.backend),
    }
    if isinstance(search.backend, Placed):
        doc["placement"] = search.backend.placement()
    return doc
