"""Filters restrict results alike on both backends: prices, colours, stock, category
paths, and attribute keys as catalogs spell them (spaces, dots, slashes)."""

import numpy as np
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient

from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import ProductPoint, SearchMode, SearchRequest, SparseVec
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import CollectionMeta, EncoderInfo, point_id
from shopsearch.store.server import ServerBackend


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_filters_restrict_results(backend_name, request, encoder):
    search = ProductSearch(request.getfixturevalue(backend_name), encoder)
    cases = {
        "price<=500": lambda p: p["price"] <= 500,
        "price>=1000": lambda p: p["price"] >= 1000,
        "color in (Black,Brown)": lambda p: p.get("color") in ("Black", "Brown"),
        "category=footwear": lambda p: "footwear" in p["category"],
        "in_stock=true": lambda p: p["in_stock"] is True,
        "category!=footwear": lambda p: "footwear" not in (p.get("category") or []),
    }
    for expr, check in cases.items():
        hits = search.search(Query("shoes", parse_filters([expr])), SearchOptions(top_k=20))
        assert hits, expr
        assert all(check(h.payload) for h in hits), expr
    both = parse_filters(["category=footwear", "price<=500"])
    hits = search.search(Query("shoes", both), SearchOptions(top_k=50))
    assert hits and all(
        h.payload["price"] <= 500 and "footwear" in h.payload["category"] for h in hits
    )


# Keys and categories as catalogs have them: spaces, dots, slashes; categories as paths.
FILTERED_PRODUCTS = {
    "1": {
        "attributes": {"Ideal For": "Women", "Model No.": "X1"},
        "category": ["footwear", "womens footwear", "casual shoes"],
    },
    "2": {
        "attributes": {"Ideal For": "Men", "Precious/Artificial Jewellery": "Artificial"},
        "category": ["footwear", "mens footwear", "casual shoes"],
    },
    "3": {
        "attributes": {"a.b": "dotted", "Model": "X1", "Men's Size": "9"},
        "category": ["womens footwear"],
    },
}


@pytest.fixture(scope="module")
def filtered_backends(tmp_path_factory):
    """FILTERED_PRODUCTS in an Edge shard and in QdrantClient(':memory:')."""
    backends = [
        EdgeBackend(tmp_path_factory.mktemp("filtered") / "products"),
        ServerBackend(QdrantClient(":memory:"), "products", ":memory:"),
    ]
    meta = CollectionMeta(EncoderInfo("random", 4, "f" * 64), {}, "{title}")
    points = [
        ProductPoint(
            point_id(pid), np.ones(4, np.float32), SparseVec([], []), {"product_id": pid, **p}
        )
        for pid, p in FILTERED_PRODUCTS.items()
    ]
    for backend in backends:
        with backend.writing():
            backend.create(meta)
            backend.upsert(points)
    yield backends
    for backend in backends:
        backend.close()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("attributes.Ideal For=Women", {"1"}),
        ("attributes.'Ideal For' in (Women, Men)", {"1", "2"}),
        ('attributes."Ideal For"!=Women', {"2", "3"}),
        ("attributes.Model No.=X1", {"1"}),  # the dot is the key's, not a nested path
        ("attributes.Precious/Artificial Jewellery=Artificial", {"2"}),
        ("attributes.a.b=dotted", {"3"}),
        ("attributes.Men's Size=9", {"3"}),
        ("category=womens footwear > casual shoes", {"1"}),
        ("category=footwear > casual shoes", {"1", "2"}),
        ("category!=womens footwear > casual shoes", {"2", "3"}),
        ("category in (mens footwear > casual shoes, footwear > womens footwear)", {"1", "2"}),
        ("category not in (mens footwear > casual shoes, womens footwear)", set()),
    ],
)
def test_attribute_keys_and_category_paths_filter_alike_on_both_backends(
    filtered_backends, expr, expected
):
    request = SearchRequest(
        dense=np.ones(4, np.float32),
        sparse=None,
        conditions=parse_filters([expr]),
        mode=SearchMode.DENSE,
        exact=True,
    )
    for backend in filtered_backends:
        (hits,) = backend.search_batch([request])
        assert {h.payload["product_id"] for h in hits} == expected, (backend.location, expr)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_the_demo_catalogs_commonest_attribute_key_filters(
    request, backend_name, small_catalog, encoder
):
    """The demo's commonest attribute key, "Ideal For" (680 of 1,002 products), has a space."""
    backend = request.getfixturevalue(backend_name)
    rows = pq.read_table(small_catalog).to_pylist()
    women = {r["id"] for r in rows if dict(r["attributes"] or []).get("Ideal For") == "Women"}
    options = SearchOptions(mode=SearchMode.DENSE, exact=True, top_k=500, collapse_variants=False)
    query = Query("shoes", parse_filters(["attributes.Ideal For=Women"]))
    hits = ProductSearch(backend, encoder).search(query, options)
    assert len(women) > 40 and {h.payload["product_id"] for h in hits} == women
