"""Pages of results on both backends: an offset pages through one ranking, and tied
scores come in point id order every time."""

import itertools
from dataclasses import replace

import pytest
from search_helpers import QUERIES

from shopsearch.errors import UsageError
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import FusionMethod, SearchMode


@pytest.mark.parametrize("backend_name", ["edge", "server"])
@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(),
        SearchOptions(fusion=FusionMethod.DBSF),
        SearchOptions(mode=SearchMode.DENSE, exact=True),
        SearchOptions(mode=SearchMode.BM25),
    ],
    ids=["rrf", "dbsf", "dense", "bm25"],
)
def test_an_offset_pages_through_one_ranking(edge, server, encoder, backend_name, options):
    """Page 2 is what follows page 1 in a search two pages deep, ties included (ordered by
    point id, not as Qdrant happened to order them); a page past the last result is empty."""
    search = ProductSearch({"edge": edge, "server": server}[backend_name], encoder)
    for text in QUERIES:
        whole = search.search(Query(text), replace(options, top_k=8))
        pages = [search.search(Query(text), replace(options, top_k=4, offset=o)) for o in (0, 4)]
        assert pages[0] + pages[1] == whole, text
        assert all(h.payload.get("title") for h in pages[1])
    assert search.search(Query("boots"), replace(options, offset=10_000)) == []
    with pytest.raises(UsageError, match="--offset must be at least 0"):
        replace(options, offset=-1)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_equal_scores_come_in_point_id_order_every_time(edge, server, encoder, backend_name):
    """Qdrant orders equal scores arbitrarily, differently from call to call; RRF's rank-based
    scores tie often, and BM25's do between products with the same words."""
    search = ProductSearch({"edge": edge, "server": server}[backend_name], encoder)
    ties = 0
    for options in (SearchOptions(top_k=40), SearchOptions(mode=SearchMode.BM25, top_k=40)):
        for text in QUERIES:
            hits = search.search(Query(text), options)
            assert hits == search.search(Query(text), options), text
            for a, b in itertools.pairwise(hits):
                assert a.score >= b.score
                if a.score == b.score:
                    ties += 1
                    assert a.point_id < b.point_id
    assert ties >= 5, ties  # the rule was exercised
