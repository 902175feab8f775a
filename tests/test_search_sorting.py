"""`--sort FIELD:asc|desc` on both backends, with the real encoder: the relevant products
(the best --candidates) ordered by the field, equal values by relevance, pages cut from one
sorted list (shopsearch.search.sorting)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
from search_helpers import QUERIES

from shopsearch.cli.app import main
from shopsearch.errors import UsageError
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.sorting import SortOrder, parse_sort, sort_hits
from shopsearch.store.backend import Hit

OPTS = SearchOptions(candidates=40)


def ids(hits) -> list[str]:
    return [h.product_id for h in hits]


@pytest.mark.parametrize("backend_name", ["edge", "server"])
@pytest.mark.parametrize("descending", [False, True], ids=["asc", "desc"])
def test_sort_orders_the_relevant_products_with_stable_pages(
    edge, server, encoder, backend_name, descending
):
    search = ProductSearch({"edge": edge, "server": server}[backend_name], encoder)
    order = SortOrder("price", descending)
    ties = 0
    for text in QUERIES:
        query = Query(text)
        relevance = search.search(query, replace(OPTS, top_k=40))
        rank = {h.product_id: n for n, h in enumerate(relevance)}
        whole = search.search(query, replace(OPTS, top_k=40, sort=order))
        # The relevant products, no others, by price; equal prices in relevance order.
        assert sorted(ids(whole)) == sorted(ids(relevance)), text
        prices = [h.payload["price"] for h in whole]
        assert prices == sorted(prices, reverse=descending), text
        for a, b in itertools.pairwise(whole):
            if a.payload["price"] == b.payload["price"]:
                ties += 1
                assert rank[a.product_id] < rank[b.product_id], text
        # Pages cut that one list: page 1 + page 2 is its top 20; past it, nothing.
        pages = [search.search(query, replace(OPTS, top_k=10, offset=o, sort=order))
                 for o in (0, 10)]  # fmt: skip
        assert ids(pages[0]) + ids(pages[1]) == ids(whole)[:20], text
        assert all(h.payload.get("title") for h in pages[1])  # the whole payload, as unsorted
        assert search.search(query, replace(OPTS, offset=40, sort=order)) == []
    assert ties >= 3, ties  # the tie order was exercised


def test_products_without_a_value_go_last_in_either_direction():
    hits = [
        Hit("a", 0.9, {"product_id": "a"}),
        Hit("b", 0.8, {"product_id": "b", "price": 20.0}),
        Hit("c", 0.7, {"product_id": "c", "price": [5.0, 30.0]}),  # a list sorts by its lowest
        Hit("d", 0.6, {"product_id": "d", "price": 20}),
        Hit("e", 0.5, {"product_id": "e", "price": True}),  # not a number
    ]
    assert ids(sort_hits(hits, SortOrder("price"))) == ["c", "b", "d", "a", "e"]
    assert ids(sort_hits(hits, SortOrder("price", True))) == ["b", "d", "c", "a", "e"]


def test_a_bad_sort_names_the_flag_or_parameter(capsys):
    assert parse_sort("price") == SortOrder("price")
    assert parse_sort(" price : DESC ") == SortOrder("price", True)
    with pytest.raises(UsageError, match=r"^--sort 'brand:asc': 'brand' is not a sortable field"):
        parse_sort("brand:asc")
    with pytest.raises(UsageError, match=r"^sort 'price:up': the direction is asc or desc"):
        parse_sort("price:up", "sort")
    assert main(["query", "shoes", "--sort", "rating:desc", "--json"]) == 2
    assert "--sort 'rating:desc'" in capsys.readouterr().err
