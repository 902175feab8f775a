"""Dense, BM25 and hybrid search (RRF, weighted RRF, DBSF) rank alike on the Edge shard
and on QdrantClient(':memory:'); the options refuse a BM25 weight the search cannot use."""

import math
import re
from dataclasses import replace

import pytest
from search_helpers import QUERIES, TIE_FREE_QUERIES, _ranking

from shopsearch.errors import UsageError
from shopsearch.evaluation.systems import system_name
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import (
    DEFAULT_BM25_WEIGHT,
    ProductSearch,
    Query,
    SearchOptions,
)
from shopsearch.store.backend import FusionMethod, SearchMode
from shopsearch.store.server import supports_weighted_rrf


@pytest.mark.parametrize(
    ("mode", "fusion"),
    [
        (SearchMode.DENSE, FusionMethod.RRF),
        (SearchMode.BM25, FusionMethod.RRF),
        (SearchMode.HYBRID, FusionMethod.DBSF),
    ],
)
def test_edge_and_server_return_the_same_ranking(edge, server, encoder, mode, fusion):
    options = SearchOptions(mode=mode, fusion=fusion, top_k=10)
    for text in QUERIES:
        for conditions in ([], parse_filters(["price<=2000"])):
            q = Query(text, conditions)
            a = ProductSearch(edge, encoder).search(q, options)
            b = ProductSearch(server, encoder).search(q, options)
            assert _ranking(a) == _ranking(b), (text, conditions)
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


def test_edge_and_server_agree_on_rrf_fusion(edge, server, encoder):
    """RRF fuses ranks, and engines order tied BM25 scores differently, so this compares
    the queries whose BM25 candidates have no ties (checked here, on both engines)."""
    options = SearchOptions(mode=SearchMode.HYBRID, bm25_weight=1.0, top_k=10)  # plain RRF
    bm25_all = SearchOptions(mode=SearchMode.BM25, top_k=options.candidates)
    compared = 0
    for text in TIE_FREE_QUERIES:
        for backend in (edge, server):
            scores = [
                round(h.score, 4)
                for h in ProductSearch(backend, encoder).search(Query(text), bm25_all)
            ]
            assert len(scores) == len(set(scores)), text
        a = ProductSearch(edge, encoder).search(Query(text), options)
        b = ProductSearch(server, encoder).search(Query(text), options)
        assert _ranking(a) == _ranking(b), text
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        compared += 1
    assert compared == len(TIE_FREE_QUERIES)


def test_a_bm25_weight_moves_rrf_towards_bm25_alike_on_both_backends(edge, server, encoder):
    """Weighted RRF (Qdrant's formula on both engines): a large BM25 weight gives BM25's own
    top hit the first place, and both backends fuse the same way."""
    weighted = SearchOptions(mode=SearchMode.HYBRID, top_k=10, bm25_weight=3.0)
    bm25 = SearchOptions(mode=SearchMode.BM25, top_k=1)
    moved = 0
    for text in TIE_FREE_QUERIES:
        a = ProductSearch(edge, encoder).search(Query(text), weighted)
        b = ProductSearch(server, encoder).search(Query(text), weighted)
        assert _ranking(a) == _ranking(b), text
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        plain = ProductSearch(edge, encoder).search(Query(text), replace(weighted, bm25_weight=1))
        moved += _ranking(plain) != _ranking(a)
        top = ProductSearch(edge, encoder).search(Query(text), replace(weighted, bm25_weight=100))
        assert top[0].point_id == ProductSearch(edge, encoder).search(Query(text), bm25)[0].point_id
    assert moved  # the weight changed some ranking
    with pytest.raises(UsageError, match="--fusion rrf"):
        SearchOptions(fusion=FusionMethod.DBSF, bm25_weight=3.0)
    with pytest.raises(UsageError, match="above 0"):
        SearchOptions(bm25_weight=0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bm25_weight": math.inf}, "--bm25-weight must be a finite number above 0"),
        ({"bm25_weight": math.nan}, "--bm25-weight must be a finite number above 0"),
        ({"bm25_weight": -1.0}, "--bm25-weight must be a finite number above 0"),
        ({"bm25_weight": 2.0, "mode": SearchMode.DENSE}, "--mode dense has none"),
        ({"bm25_weight": 1.0, "mode": SearchMode.BM25}, "--mode bm25 has none"),
        ({"bm25_weight": 2.0, "fusion": FusionMethod.DBSF}, "--fusion dbsf has none"),
    ],
)
def test_a_weight_the_search_cannot_use_is_refused_naming_the_flags(options, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        SearchOptions(**options)


def test_rrf_weighs_bm25_by_default_and_old_servers_are_named():
    assert SearchOptions().fusion is FusionMethod.ADAPTIVE  # the default; a weight asks RRF
    assert SearchOptions(bm25_weight=2.0).fusion is FusionMethod.RRF
    assert SearchOptions(fusion=FusionMethod.RRF).rrf_bm25_weight == DEFAULT_BM25_WEIGHT == 3.0
    assert SearchOptions(fusion=FusionMethod.DBSF).rrf_bm25_weight == 1.0  # no RRF, no weight
    assert SearchOptions(mode=SearchMode.DENSE).rrf_bm25_weight == 1.0
    assert system_name(SearchOptions(fusion=FusionMethod.RRF)) == "hybrid-rrf"
    assert system_name(SearchOptions(bm25_weight=1.0)) == "hybrid-rrf-bm25x1"
    assert not supports_weighted_rrf("1.16.3")
    assert all(map(supports_weighted_rrf, ["1.17.0", "1.20.1-rc1", "2.0.0", "unknown"]))
