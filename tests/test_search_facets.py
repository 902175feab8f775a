"""Facets on both backends: value counts and numeric ranges among the products passing
the filters, and among a query's best candidates."""

from collections import Counter
from dataclasses import replace

import pyarrow.parquet as pq
import pytest
from search_helpers import _empty_backend, _jsonl, ingest

from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.counts import ValueRange


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_facets_count_each_value_among_the_products_passing_the_filters(
    backend_name, request, small_catalog
):
    backend = request.getfixturevalue(backend_name)
    rows = pq.read_table(small_catalog).to_pylist()
    cheap = [r for r in rows if r["price"] <= 500]
    conditions = parse_filters(["price<=500"])
    colors = Counter(r["color"] for r in cheap if r["color"])
    levels = Counter(level for r in cheap for level in r["category"] or [])
    assert backend.count(conditions) == len(cheap) < len(rows) == backend.count()
    expected = sorted(colors.items(), key=lambda kv: (-kv[1], kv[0]))
    got = backend.facet("color", conditions, limit=1000)
    assert [(c.value, c.count) for c in got] == expected
    # A category counts each level of its path; the limit keeps the most frequent values.
    top = backend.facet("category", conditions, limit=3)
    assert [(c.value, c.count) for c in top] == sorted(
        levels.items(), key=lambda kv: (-kv[1], kv[0])
    )[:3]
    # A number is bounded, not counted.
    prices = [r["price"] for r in cheap]
    assert backend.value_range("price", conditions) == ValueRange(min(prices), max(prices))
    assert backend.value_range("price", parse_filters(["price<0"])) is None


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_facets_count_booleans_as_booleans_and_a_field_no_product_has_as_none(
    backend_name, encoder, tmp_path
):
    backend = _empty_backend(backend_name, tmp_path)
    catalog = _jsonl(
        tmp_path / "stock.jsonl",
        [
            {"id": f"p{i}", "title": f"lamp {i}", "in_stock": i % 3 == 0, "price": 10.0 * i}
            for i in range(7)
        ],
    )
    ingest(catalog, backend, encoder, tmp_path)
    stock = backend.facet("in_stock", [], limit=10)
    assert [(c.value, c.count) for c in stock] == [(False, 4), (True, 3)]
    assert all(isinstance(c.value, bool) for c in stock)
    in_stock = parse_filters(["in_stock=true"])
    assert [(c.value, c.count) for c in backend.facet("in_stock", in_stock, 10)] == [(True, 3)]
    assert backend.facet("brand", [], limit=10) == []
    backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_querys_facets_count_its_best_candidates_results(backend_name, request, encoder):
    search = ProductSearch(request.getfixturevalue(backend_name), encoder)
    query = Query("shoes", parse_filters(["price<=1500"]))
    options = SearchOptions(candidates=30)
    counted = search.facets(query, options, ["color", "category", "price"], limit=1000)
    best = search.search(query, replace(options, top_k=30, collapse_variants=False))
    assert counted.products == len(best) == 30
    prices = [h.payload["price"] for h in best]
    assert counted.ranges == {"price": ValueRange(min(prices), max(prices))}
    assert max(prices) <= 1500
    colors = Counter(h.payload["color"] for h in best if h.payload.get("color"))
    levels = Counter(level for h in best for level in h.payload.get("category") or [])
    for name, expected in (("color", colors), ("category", levels)):
        got = [(c.value, c.count) for c in counted.counts[name]]
        assert got == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0])), name
    # A filter no product passes: nothing to count.
    none = search.facets(Query("shoes", parse_filters(["price<0"])), options, ["color"], 10)
    assert none.products == 0 and none.counts == {"color": []} and none.ranges == {}
