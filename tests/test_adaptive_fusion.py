"""The default fusion (shopsearch.search.adaptive_fusion): its re-ranking on hand-made hits, then
searched end to end on real components (an Edge shard, QdrantClient(':memory:'), the real
exported model): the default of SearchOptions and of `shopsearch query`, alike on both
backends, with pages, filters, facets and variant families; RRF still one flag away."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from search_helpers import QUERIES

from shopsearch.cli.app import main
from shopsearch.search.adaptive_fusion import (
    COVERAGE_WEIGHT,
    DBSF_WEIGHT,
    PAIRS_WEIGHT,
    PAIRS_WINDOW,
    WINDOW,
    rerank,
)
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.variants import FAMILY_FIELDS
from shopsearch.store.backend import FusionMethod, Hit, SearchRequest
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.documents import read_meta, write_meta
from shopsearch.store.schema import CollectionMeta
from shopsearch.store.word_pairs import WordPairs

# -- the scores, on hand-made hits ---------------------------------------------------------


def test_rerank_hand_computed() -> None:
    fused = [  # a DBSF search's hits, best first
        Hit("a", 1.6, {"title": "a"}, terms=(9,)),
        Hit("b", 1.2, terms=(1, 2, 9)),
        Hit("c", 1.0, terms=(1, 2, 3)),
        Hit("d", 0.4, terms=(1, 3)),
    ]
    ranked = rerank([1, 2, 3, 3], fused)  # a repeated query term counts once
    expected = {
        "a": DBSF_WEIGHT * 1.6,
        "b": COVERAGE_WEIGHT * 2 / 3 + DBSF_WEIGHT * 1.2,
        "c": COVERAGE_WEIGHT + DBSF_WEIGHT * 1.0,
        "d": COVERAGE_WEIGHT * 2 / 3 + DBSF_WEIGHT * 0.4,
    }
    assert {h.point_id: h.score for h in ranked} == pytest.approx(expected)
    assert [h.point_id for h in ranked] == ["c", "b", "d", "a"]
    # a hit keeps its payload; its BM25 terms are dropped; `limit` keeps the best
    assert ranked[-1].payload == {"title": "a"} and all(h.terms == () for h in ranked)
    assert rerank([1, 2, 3], fused, limit=2) == ranked[:2]


def test_coverage_outweighs_the_fused_score_for_a_two_word_query() -> None:
    """A product missing one of two query words ranks below one holding both, even where
    DBSF put it first with both lists' best scores."""
    fused = [Hit("partial", 2.0, terms=(1,)), Hit("full", 0.0, terms=(1, 2))]
    assert [h.point_id for h in rerank([1, 2], fused)] == ["full", "partial"]


def test_equal_scores_come_by_point_id_and_edge_cases() -> None:
    fused = [Hit("z", 0.5, terms=(1,)), Hit("y", 0.5, terms=(1,))]
    assert [h.point_id for h in rerank([1], fused)] == ["y", "z"]
    assert rerank([1], []) == []
    # a query without BM25 terms (stop words only): the fused order stands
    assert [h.point_id for h in rerank([], fused[::-1])] == ["y", "z"]


def test_hits_past_the_window_follow_it_and_never_reorder_it() -> None:
    fused = [Hit(f"h{n:03d}", 1.0 - n / 100, terms=(n % 2,)) for n in range(WINDOW + 10)]
    ranked = rerank([1], fused)
    window = rerank([1], fused[:WINDOW])
    assert ranked[:WINDOW] == window
    past = {h.point_id for h in fused[WINDOW:]}
    assert {h.point_id for h in ranked[WINDOW:]} == past
    # re-ranked among themselves (coverage first), scored below the window's last
    assert [int(h.point_id[1:]) % 2 for h in ranked[WINDOW:]] == [1] * 5 + [0] * 5
    scores = [h.score for h in ranked]
    assert scores == sorted(scores, reverse=True)


def test_the_querys_word_pairs_lift_a_title_that_holds_them() -> None:
    """Of two products holding the query's words with the same fused score, the one whose title
    holds them in the query's order ranks first: PAIRS_WEIGHT x the share of pairs it holds."""
    fused = [Hit("apart", 1.0, terms=(1, 2, 3), pairs=(99,)),
             Hit("phrase", 1.0, terms=(1, 2, 3), pairs=(7, 99))]  # fmt: skip
    ranked = rerank([1, 2, 3], fused, query_pairs=[7, 8])
    assert [h.point_id for h in ranked] == ["phrase", "apart"]
    assert ranked[0].score - ranked[1].score == pytest.approx(PAIRS_WEIGHT / 2)
    assert all(h.pairs == () and h.coverage == 1.0 for h in ranked)
    # no pairs to compare (a one-word query, a collection without them): equal, by point id
    assert [h.point_id for h in rerank([1, 2, 3], fused)] == ["apart", "phrase"]
    # the window is the caller's: PAIRS_WINDOW where the collection has the pairs
    many = [Hit(f"h{n:03d}", 1.0 - n / 100, terms=(n % 2,)) for n in range(WINDOW + 10)]
    assert rerank([1], many, window=PAIRS_WINDOW)[:PAIRS_WINDOW] == rerank([1], many[:PAIRS_WINDOW])


def test_word_pairs_follow_the_bm25_tokenizer_and_keep_the_order() -> None:
    pairs = WordPairs(Bm25Settings().model())
    assert pairs.of("Bathroom Vanity") == pairs.of("bathroom vanities")  # case, stems
    assert pairs.of("bathroom vanity") != pairs.of("vanity bathroom")
    assert pairs.of("vanity for the bathroom") == pairs.of("vanity bathroom")  # stop words
    assert pairs.of("vanity") == [] == pairs.of("")
    assert len(pairs.of("white bathroom vanity")) == 2
    # the same ids in another process: a stored title's pairs meet the query's
    again = WordPairs(Bm25Settings().model())
    assert again.of("white bathroom vanity") == pairs.of("white bathroom vanity")


# -- searched end to end on both backends ---------------------------------------------------


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_ingest_stores_each_titles_pairs_and_the_default_reads_them(
    edge, server, encoder, backend_name
):
    backend = {"edge": edge, "server": server}[backend_name]
    search = ProductSearch(backend, encoder)
    assert search.meta.word_pairs
    pairs = WordPairs(Bm25Settings.from_dict(search.meta.bm25).model())
    query = search.prepare(Query("black boots for women"), SearchOptions())
    text = query.searched or query.text
    request = SearchRequest(dense=search._encode([text])[0], sparse=search._sparse(text, query),
                            limit=10, with_payload=["title"], with_terms=True,
                            with_pairs=True)  # fmt: skip
    hits = backend.search_batch([request])[0]
    assert hits and any(h.pairs for h in hits)
    assert all(sorted(h.pairs) == pairs.of(h.payload["title"]) for h in hits)
    sent: list[SearchRequest] = []
    searched = backend.search_batch

    def recorded(requests):  # the real backend answers; the requests are noted
        sent.extend(requests)
        return searched(requests)

    backend.search_batch = recorded
    try:
        search.search(Query("black boots for women"), SearchOptions())
        assert sent and all(r.with_pairs and r.limit == PAIRS_WINDOW for r in sent)
        # a collection made before the pairs existed says so, and is searched without them
        meta = read_meta(backend)
        write_meta(backend, CollectionMeta.from_dict({**meta.to_dict(), "word_pairs": False}))
        assert "word_pairs" not in read_meta(backend).to_dict()
        sent.clear()
        hits = ProductSearch(backend, encoder).search(Query("black boots for women"))
        assert hits and sent and not any(r.with_pairs for r in sent)
        assert all(r.limit == WINDOW for r in sent)
    finally:
        backend.search_batch = searched
        write_meta(backend, meta)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_the_default_fuses_adaptively_and_rrf_is_one_flag_away(edge, server, encoder, backend_name):
    backend = {"edge": edge, "server": server}[backend_name]
    assert SearchOptions().fusion is FusionMethod.ADAPTIVE
    search = ProductSearch(backend, encoder)
    for text in QUERIES:
        hits = search.search(Query(text), SearchOptions(top_k=10))
        assert 0 < len(hits) <= 10
        assert all(h.payload.get("title") for h in hits)  # the page's payloads were read
        assert all(h.terms == () for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        # coverage and half the DBSF score (each list's share about 0..1)
        top = COVERAGE_WEIGHT + 2 * DBSF_WEIGHT + PAIRS_WEIGHT + 0.5
        assert all(0.0 <= h.score <= top for h in hits)
        rrf = search.search(Query(text), SearchOptions(top_k=10, fusion=FusionMethod.RRF))
        assert all(h.score < 1.5 for h in rrf)  # RRF's rank shares, not fused scores
    # a BM25 weight weighs RRF's lists: given one, the default fusion is RRF
    weighted = SearchOptions(bm25_weight=2.0)
    assert weighted.fusion is FusionMethod.RRF and weighted.rrf_bm25_weight == 2.0
    assert SearchOptions().rrf_bm25_weight == 1.0  # no RRF, no weight


def test_both_backends_rank_alike(edge, server, encoder):
    options = SearchOptions(top_k=10, exact=True)
    for text in QUERIES:
        a = ProductSearch(edge, encoder).search(Query(text), options)
        b = ProductSearch(server, encoder).search(Query(text), options)
        assert [h.point_id for h in a] == [h.point_id for h in b], text
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_pages_filters_and_facets_work_with_the_default(edge, server, encoder, backend_name):
    search = ProductSearch({"edge": edge, "server": server}[backend_name], encoder)
    options = SearchOptions()
    for text in QUERIES:
        whole = search.search(Query(text), replace(options, top_k=8))
        pages = [search.search(Query(text), replace(options, top_k=4, offset=o)) for o in (0, 4)]
        assert pages[0] + pages[1] == whole, text
    assert search.search(Query("boots"), replace(options, offset=10_000)) == []

    cheap = parse_filters(["category=footwear", "price<=500"])
    hits = search.search(Query("shoes", cheap), replace(options, top_k=30))
    assert hits and all(
        h.payload["price"] <= 500 and "footwear" in h.payload["category"] for h in hits
    )
    asked = search.search(Query("shoes", cheap), replace(options, payload_fields=["price"]))
    assert asked and all(set(h.payload) <= {"price", *FAMILY_FIELDS} for h in asked)

    facets = search.facets(Query("shoes", cheap), options, ["brand", "price"], limit=5)
    best = search.search(
        Query("shoes", cheap),
        replace(options, top_k=options.candidates, collapse_variants=False),
    )
    assert facets.products == len(best) > 0
    brands = [h.payload.get("brand") for h in best if h.payload.get("brand")]
    top = facets.counts["brand"][0]
    assert top.count == brands.count(top.value)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_variants_collapse_to_one_per_family_and_fill_the_page(
    variant_backends, encoder, backend_name
):
    search = ProductSearch(variant_backends[backend_name], encoder)
    query = Query("women's casual shoes")
    every = search.search(query, SearchOptions(top_k=10, collapse_variants=False))
    parents = [h.payload["parent_id"] for h in every if "parent_id" in h.payload]
    assert len(set(parents)) < len(parents)  # sizes would crowd the page

    # 40 shoes in six sizes: a page of 50 families needs each list deeper than --candidates
    options = SearchOptions(top_k=50, candidates=20)
    hits = search.search(query, options)
    families = [h.payload.get("parent_id") or h.payload["product_id"] for h in hits]
    assert len(hits) == 50 and len(set(families)) == 50
    assert any(h.other_variants for h in hits)
    page2 = search.search(query, replace(options, top_k=25, offset=25))
    assert page2 == hits[25:]


def test_the_query_command_defaults_to_the_adaptive_fusion(
    small_catalog, exported_model, tmp_path, capsys
):
    where = ["--collection", "cli", "--path", str(tmp_path / "data")]
    where += ["--model", str(exported_model), "--precision", "fp32"]
    assert main(["ingest", str(small_catalog), "--json", *where]) == 0
    capsys.readouterr()
    assert main(["query", "black boots", "-k", "5", "--json", *where]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fusion"] == "adaptive" and doc["bm25_weight"] is None
    assert 0 < len(doc["results"]) <= 5 and all(r["title"] for r in doc["results"])
    assert main(["query", "black boots", "--fusion", "rrf", "--json", *where]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fusion"] == "rrf" and doc["bm25_weight"] == 3.0
