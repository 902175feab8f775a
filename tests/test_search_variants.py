"""Variants: results show one product per family (its best variant passing the filters, one
in stock where the family has one), an offset counts families, and the search reads deep
enough to fill the page."""

from dataclasses import replace

import pyarrow.parquet as pq
import pytest
from search_helpers import TIE_FREE_QUERIES, _empty_backend, _jsonl, ingest

from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.variants import MAX_DEPTH, collapse, deeper_limit, first_limit
from shopsearch.store.backend import Hit, SearchMode
from shopsearch.store.documents import read_meta, write_meta


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_results_show_one_variant_per_family(
    variant_backends, variant_catalog, encoder, backend_name
):
    parents_of = {r["id"]: r["parent_id"] for r in pq.read_table(variant_catalog).to_pylist()}
    search = ProductSearch(variant_backends[backend_name], encoder)
    query = Query("women's casual shoes")
    every = search.search(query, SearchOptions(top_k=10, collapse_variants=False))
    parents = [h.payload["parent_id"] for h in every if "parent_id" in h.payload]
    assert len(set(parents)) < len(parents)  # without collapsing, sizes crowd the page

    hits = search.search(query, SearchOptions(top_k=10))
    families = [h.payload.get("parent_id") or h.payload["product_id"] for h in hits]
    assert len(hits) == 10 and len(set(families)) == 10  # searched deeper to fill the page
    for hit in hits:
        if "parent_id" not in hit.payload:
            assert not hit.other_variants
            continue
        family = {p for p, parent in parents_of.items() if parent == hit.payload["parent_id"]}
        assert len(family) == 6
        assert hit.payload["product_id"] in family
        assert set(hit.other_variants) <= family - {hit.payload["product_id"]}
    assert hits[0].payload["product_id"] == every[0].payload["product_id"]
    top_family = [
        h.payload["product_id"] for h in every if h.payload.get("parent_id") == families[0]
    ]
    assert hits[0].other_variants[: len(top_family) - 1] == tuple(top_family[1:])

    # The filters pick the variant shown: the family's best match that passes them.
    sized = search.search(Query("women's casual shoes", parse_filters(["size=9"])))
    assert len(sized) == 10 and all(h.payload["size"] == "9" for h in sized)
    assert all(not h.other_variants for h in sized)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_collapsed_ranking_is_each_familys_best_variant_in_rank_order(
    variant_backends, encoder, backend_name
):
    """Exact dense scores do not depend on the search depth, so the collapsed page must equal
    the first variant of each family down a long uncollapsed ranking."""
    search = ProductSearch(variant_backends[backend_name], encoder)
    dense = SearchOptions(mode=SearchMode.DENSE, exact=True, payload_fields=["title"])
    collapsed = 0
    for text in ("black boots", "gold ring", "canvas sneakers"):
        # An uncollapsed search adds no family fields to the payload asked for.
        every = replace(dense, top_k=320, collapse_variants=False, payload_fields=["parent_id"])
        long = search.search(Query(text), every)
        first: dict[str, str] = {}
        for h in long:
            first.setdefault(h.payload.get("parent_id") or h.point_id, h.point_id)
        page = search.search(Query(text), replace(dense, top_k=12))
        assert [h.point_id for h in page] == list(first.values())[:12], text
        collapsed += sum(bool(h.other_variants) for h in page)
        assert all({"product_id", "parent_id"} <= set(h.payload) for h in page if h.other_variants)
    assert collapsed >= 10, collapsed  # black boots, canvas sneakers: shoes in six sizes


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_an_offset_counts_families_where_variants_collapse(variant_backends, encoder, backend_name):
    """The offset skips families, not the variants collapsed into them: page 2 is the second
    half of a page twice as long. (Page 1 is the first half of its own, shallower search:
    where variants send both deeper, approximate retrieval at another depth may differ.)"""
    search = ProductSearch(variant_backends[backend_name], encoder)
    for text in ("black boots", "canvas sneakers"):
        whole = search.search(Query(text), SearchOptions(top_k=12))
        assert len({h.payload.get("parent_id") or h.point_id for h in whole}) == 12
        page = search.search(Query(text), SearchOptions(top_k=6, offset=6))
        assert page == whole[6:], text


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_catalog_without_families_gets_the_page_collapsing_would_give(
    backend_name, small_catalog, encoder, tmp_path
):
    """A collection recorded without families skips collapsing and its deeper first search;
    the page is the one a collection that may have families (variants unrecorded) returns."""
    backend = _empty_backend(backend_name, tmp_path)
    ingest(small_catalog, backend, encoder, tmp_path)
    meta = read_meta(backend)
    assert meta.variants is False
    options = [SearchOptions(top_k=10), SearchOptions(mode=SearchMode.DENSE, exact=True)]
    pages = {}
    for variants in (False, None):
        write_meta(backend, replace(meta, variants=variants))
        search = ProductSearch(backend, encoder)
        pages[variants] = [
            [(h.point_id, round(h.score, 5)) for h in search.search(Query(q), o)]
            for q in TIE_FREE_QUERIES
            for o in options
        ]
    assert pages[False] == pages[None]
    backend.close()


def test_search_depths_first_and_deeper():
    def hits(families, per_family):
        return [
            Hit(f"{f}-{v}", 1.0, {"parent_id": str(f)})
            for f in range(families)
            for v in range(per_family)
        ]

    assert deeper_limit(10, hits(10, 1), top_k=10) is None  # the page is full
    assert deeper_limit(10, hits(3, 2), top_k=10) is None  # the catalog had only 6 hits
    assert deeper_limit(10, hits(2, 5), top_k=10) == 150  # 5 a family: 3 x 5 x 10
    assert deeper_limit(40, hits(20, 2), top_k=30) == 180
    assert deeper_limit(40, hits(39, 1) + hits(1, 1), top_k=41) == 160  # at least 4x
    assert deeper_limit(300, hits(30, 10), top_k=100) == MAX_DEPTH
    assert deeper_limit(MAX_DEPTH, hits(100, 10), top_k=101) is None
    # The first search reads four pages, within the depth, never less than the page.
    assert first_limit(10) == 40
    assert first_limit(300) == MAX_DEPTH
    assert first_limit(2 * MAX_DEPTH) == 2 * MAX_DEPTH


def test_a_parent_listed_as_a_product_is_one_family_with_its_variants():
    parent = Hit("p1", 0.9, {"product_id": "drill"})
    variant = Hit("p2", 0.8, {"product_id": "drill-18v", "parent_id": "drill"})
    other = Hit("p3", 0.7, {"product_id": "hose"})
    page = collapse([parent, variant, other], top_k=10)
    assert [h.point_id for h in page] == ["p1", "p3"]
    assert page[0].other_variants == ("drill-18v",) and page[1].other_variants == ()


# Two shirt families and two singles. The shirt family's best match for "red linen shirt" (the
# shortest title) is out of stock while a red one in another size is in stock; every polo is
# out of stock.
STOCK_CATALOG = [
    {"id": "tee-red-s", "title": "Red linen shirt", "color": "Red", "size": "S",
     "in_stock": False, "parent_id": "tee"},
    {"id": "tee-red-m", "title": "Red linen shirt with a relaxed fit, short sleeves",
     "color": "Red", "size": "M", "in_stock": True, "parent_id": "tee"},
    {"id": "tee-blue-s", "title": "Blue linen shirt with a relaxed fit, short sleeves",
     "color": "Blue", "size": "S", "in_stock": True, "parent_id": "tee"},
    {"id": "polo-red-s", "title": "Red linen polo shirt", "color": "Red", "size": "S",
     "in_stock": False, "parent_id": "polo"},
    {"id": "polo-red-l", "title": "Red linen polo shirt with long sleeves and a pocket",
     "color": "Red", "size": "L", "in_stock": False, "parent_id": "polo"},
    {"id": "scarf", "title": "Green wool scarf", "color": "Green", "in_stock": True},
    {"id": "boots", "title": "Black leather boots", "color": "Black", "in_stock": True},
]  # fmt: skip


@pytest.mark.parametrize("backend_name", ["edge", "server"])
@pytest.mark.parametrize("mode", [SearchMode.HYBRID, SearchMode.BM25])
def test_an_in_stock_variant_represents_its_family(backend_name, mode, encoder, tmp_path):
    """The family keeps its best variant's place and score, and is shown by its best variant
    in stock that the search returned (so one that passed the filters); a family with every
    variant out of stock is still shown, by its best."""
    backend = _empty_backend(backend_name, tmp_path)
    ingest(_jsonl(tmp_path / "stock.jsonl", STOCK_CATALOG), backend, encoder, tmp_path)
    search = ProductSearch(backend, encoder)
    query = Query("red linen shirt")
    every = search.search(query, SearchOptions(mode=mode, top_k=7, collapse_variants=False))
    rank = {h.product_id: n for n, h in enumerate(every)}
    score = {h.product_id: h.score for h in every}
    # The premise: out-of-stock variants are their families' best matches.
    assert rank["tee-red-s"] < rank["tee-red-m"] and rank["polo-red-s"] < rank["polo-red-l"]

    page = search.search(query, SearchOptions(mode=mode, top_k=4))
    shown = {h.payload["parent_id"]: h for h in page if "parent_id" in h.payload}
    tee, polo = shown["tee"], shown["polo"]
    assert tee.product_id == "tee-red-m" and tee.payload["in_stock"] is True
    assert tee.score == score["tee-red-s"]  # the family's score, at the family's place
    assert tee.other_variants[0] == "tee-red-s" and "tee-red-m" not in tee.other_variants
    assert polo.product_id == "polo-red-s" and polo.other_variants == ("polo-red-l",)
    families = [h.payload.get("parent_id") or h.product_id for h in page]
    assert families == sorted(families, key=lambda f: min(
        rank[h.product_id] for h in every if (h.payload.get("parent_id") or h.product_id) == f
    ))  # fmt: skip
    assert [h.score for h in page] == sorted((h.score for h in page), reverse=True)

    # Filters come first: with the red variants filtered out, the blue one shows the family;
    # with only red size S, the out-of-stock variant is the family's one match and shows it.
    blue = search.search(Query("red linen shirt", parse_filters(["color=Blue"])))
    assert [h.product_id for h in blue] == ["tee-blue-s"]
    small = search.search(Query("red linen shirt", parse_filters(["size=S", "color=Red"])))
    assert {h.product_id for h in small} == {"tee-red-s", "polo-red-s"}

    # Pages cut one ranking of families: page 1 + page 2 are the top 4, no family on both.
    options = SearchOptions(mode=mode, top_k=2)
    first, second = search.search(query, options), search.search(query, replace(options, offset=2))
    assert first + second == page
    backend.close()


def test_the_representative_is_the_best_in_stock_variant_among_the_hits():
    def hit(point_id, score, parent, stock):
        payload = {"product_id": point_id, "parent_id": parent}
        if stock is not None:
            payload["in_stock"] = stock
        return Hit(point_id, score, payload)

    hits = [
        hit("a1", 0.9, "a", False),
        hit("b1", 0.8, "b", None),  # no stock data: taken as in stock
        hit("a2", 0.7, "a", False),
        hit("a3", 0.6, "a", True),
        hit("c1", 0.5, "c", False),
        hit("b2", 0.4, "b", True),
        hit("a4", 0.3, "a", True),
    ]
    page = collapse(hits, top_k=3)
    assert [(h.point_id, h.score, h.other_variants) for h in page] == [
        ("a3", 0.9, ("a1", "a2", "a4")),
        ("b1", 0.8, ("b2",)),
        ("c1", 0.5, ()),
    ]
    # The page's families are the first top_k, whichever variants show them.
    assert [h.point_id for h in collapse(hits, top_k=1)] == ["a3"]
