"""The JSON shapes of a search's answer, of facet counts and of a collection's description.

`shopsearch query --json`, `shopsearch facets --json`, `shopsearch info --json` and the HTTP
service (`shopsearch serve`) all answer with these, so a script written against the CLI reads
the service's answers unchanged, and a test can compare the two field for field.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shopsearch.search.facets import Facets
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import Hit, SearchMode


def search_document(
    query: Query,
    filters: Sequence[str] | dict[str, Any],
    options: SearchOptions,
    hits: Sequence[Hit],
    facets: Facets | None = None,
) -> dict[str, Any]:
    """One search's answer: what was asked, what was searched (typos corrected), how, and
    each result's score and stored fields; with `facets`, their counts among the best
    results (`facets_among` products)."""
    doc: dict[str, Any] = {
        "query": query.text,
        "searched": query.searched or query.text,
        "filters": filters if isinstance(filters, dict) else list(filters),
        "mode": options.mode.value,
        "fusion": options.fusion.value if options.mode is SearchMode.HYBRID else None,
        "bm25_weight": options.rrf_bm25_weight if options.fused_by_rrf else None,
        "offset": options.offset,
        "results": [
            {"score": h.score, **h.payload, "other_variants": list(h.other_variants)}
            for h in hits
        ],
    }
    if facets is not None:
        counted = facets_document(facets)
        doc.update(
            facets_among=counted["products"], facets=counted["facets"], ranges=counted["ranges"]
        )
    return doc


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
    """Where the collection is, its size, what built it, and its learned fusion if any."""
    return {
        "location": search.backend.location,
        "products": search.backend.count(),
        **search.meta.to_dict(),
        "vocabulary_words": len(search.typos.vocabulary),
        "learned_fusion": search.fusion_info(),
    }
