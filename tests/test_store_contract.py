"""The `Backend` protocol's contract, held alike by both backends.

One fixture runs every test on a real Edge shard in tmp_path and on qdrant-client's in-memory
server (`ServerBackend.connect(":memory:")`, the server backend's code path), with a small
hand-made collection: vectors and BM25 weights chosen so that no two products score alike,
so a ranking is the same on both engines or one of them is wrong.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from shopsearch.errors import CollectionError
from shopsearch.store.backend import (
    RRF_K,
    Backend,
    FusionMethod,
    ProductPoint,
    SearchMode,
    SearchRequest,
    SparseVec,
)
from shopsearch.store.conditions import Match, Range
from shopsearch.store.counts import FacetCount, ValueRange
from shopsearch.store.documents import (
    read_fusion,
    read_meta,
    read_vocabulary,
    write_confidence,
    write_fusion,
    write_meta,
    write_rules,
    write_synonyms,
    write_vocabulary,
)
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import CollectionMeta, Document, EncoderInfo, point_id
from shopsearch.store.server import ServerBackend

META = CollectionMeta(
    EncoderInfo("contract", 4, "c" * 64),
    {"k": 0.3, "b": 0.75, "avg_len": 4.0, "language": "english"},
    "{title}",
    variants=False,
)
# product id, dense vector, {BM25 term id: weight}, brand, color, price, in stock
ROWS = [
    ("boot-1", [0.9, 0.1, 0.0, 0.1], {1: 1.3, 2: 0.4}, "acme", "black", 120.0, True),
    ("boot-2", [0.7, 0.5, 0.1, 0.0], {1: 0.9, 3: 0.8}, "acme", "brown", 95.5, False),
    ("shoe-1", [0.2, 0.9, 0.3, 0.1], {2: 1.1, 4: 0.6}, "zeta", "black", 60.0, True),
    ("shoe-2", [0.1, 0.8, 0.6, 0.2], {1: 0.3, 4: 1.2}, "zeta", "white", 45.0, True),
    ("sock-1", [0.0, 0.2, 0.9, 0.4], {5: 1.0}, "knit", "black", 9.9, True),
    ("hat-1", [0.3, 0.0, 0.2, 0.95], {2: 0.7, 6: 1.4}, "knit", None, 25.0, False),
    ("bag-1", [0.5, 0.3, 0.7, 0.3], {3: 0.5, 6: 0.2}, "acme", "brown", None, True),
]
FIELDS = ("brand", "color", "price", "in_stock")
# product id -> (dense vector, {BM25 term id: weight}, payload without missing values)
PRODUCTS: dict[str, tuple[list[float], dict[int, float], dict]] = {
    pid: (dense, terms, {k: v for k, v in zip(FIELDS, row, strict=True) if v is not None})
    for pid, dense, terms, *row in ROWS
}
QUERY_DENSE = np.array([0.02, 0.06, 0.93, 0.02], dtype=np.float32)
QUERY_SPARSE = SparseVec([1, 2], [1.0, 0.6])


def _point(pid: str) -> ProductPoint:
    dense, terms, payload = PRODUCTS[pid]
    vector = np.asarray(dense, dtype=np.float32)
    return ProductPoint(
        point_id(pid),
        vector / np.linalg.norm(vector),
        SparseVec(list(terms), list(terms.values())),
        {"product_id": pid, **payload},
    )


POINTS = [_point(pid) for pid in PRODUCTS]


@pytest.fixture(params=["edge", "server"])
def backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[Backend]:
    """A backend with no collection yet."""
    if request.param == "edge":
        opened: Backend = EdgeBackend(tmp_path / "data" / "products")
    else:
        opened = ServerBackend.connect(":memory:", "products")
    yield opened
    opened.close()


@pytest.fixture
def filled(backend: Backend) -> Backend:
    """The backend with PRODUCTS ingested."""
    with backend.writing():
        backend.create(META)
        backend.upsert(POINTS)
    return backend


def _ids(hits) -> list[str]:
    return [h.product_id for h in hits]


# -- the collection and its documents --------------------------------------------------------


def test_a_backend_without_a_collection_has_no_documents(backend: Backend) -> None:
    assert read_meta(backend) is None
    assert read_vocabulary(backend) is None and read_fusion(backend) is None


def test_create_makes_an_empty_collection_holding_its_metadata(backend: Backend) -> None:
    backend.create(META)
    assert read_meta(backend) == META
    assert backend.count() == 0 and list(backend.point_ids()) == []
    with pytest.raises(CollectionError, match="already exists"):
        backend.create(META)


def test_documents_round_trip_and_each_write_keeps_the_others(filled: Backend) -> None:
    words = {"boot": 2, "shoe": 2, "sock": 1}
    model = {"format": "shopsearch-learned-fusion", "depth": 7, "weights": [[0.5, -1.25]]}
    write_vocabulary(filled, words)
    write_fusion(filled, model)
    write_meta(filled, replace(META, variants=True))
    write_fusion(filled, {**model, "depth": 9})  # a refit replaces the model
    assert read_meta(filled) == replace(META, variants=True)
    assert read_vocabulary(filled) == words
    assert read_fusion(filled) == {**model, "depth": 9}
    assert filled.read_document(Document.VOCABULARY) == {"words": words}


def _stored(backend: Backend, document: Document):
    """A document as another service finds it: the Edge file, or the server's metadata key."""
    if isinstance(backend, EdgeBackend):
        return json.loads((backend.directory / document.file).read_text(encoding="utf-8"))
    assert isinstance(backend, ServerBackend)
    return backend.client.get_collection(backend.collection).config.metadata[document.key]


def test_documents_are_stored_where_the_collection_contract_says(filled: Backend) -> None:
    write_vocabulary(filled, {"boot": 2})
    write_fusion(filled, {"depth": 7})
    write_rules(filled, {"rules": []})
    write_synonyms(filled, {"synonyms": [{"words": ["sofa", "couch"]}]})
    write_confidence(filled, {"format": 1, "intercept": -1.0})
    assert _stored(filled, Document.CONFIDENCE) == {"format": 1, "intercept": -1.0}
    assert _stored(filled, Document.META) == META.to_dict()
    assert _stored(filled, Document.RULES) == {"rules": []}
    assert _stored(filled, Document.SYNONYMS) == {"synonyms": [{"words": ["sofa", "couch"]}]}
    assert _stored(filled, Document.VOCABULARY) == {"words": {"boot": 2}}
    assert _stored(filled, Document.FUSION) == {"depth": 7}
    names = {d: (d.key, d.file) for d in Document}
    assert names == {
        Document.META: ("shopsearch", "shopsearch.json"),
        Document.VOCABULARY: ("shopsearch_vocabulary", "vocabulary.json"),
        Document.FUSION: ("shopsearch_fusion", "fusion.json"),
        Document.RULES: ("shopsearch_rules", "rules.json"),
        Document.SYNONYMS: ("shopsearch_synonyms", "synonyms.json"),
        Document.RANKING: ("shopsearch_ranking", "ranking.json"),
        Document.CONFIDENCE: ("shopsearch_confidence", "confidence.json"),
    }


def test_a_collection_without_shopsearchs_metadata_is_refused(backend: Backend) -> None:
    if isinstance(backend, EdgeBackend):
        backend.create(META)
        backend.close()
        (backend.directory / Document.META.file).unlink()
        message = "holds a shard without shopsearch.json"
    else:
        assert isinstance(backend, ServerBackend)
        backend.client.create_collection(backend.collection, vectors_config={})
        message = "exists but was not created by shopsearch"
    with pytest.raises(CollectionError, match=message):
        read_meta(backend)


def test_drop_removes_the_collection_and_its_documents(filled: Backend) -> None:
    write_vocabulary(filled, {"boot": 2})
    filled.drop()
    assert read_meta(filled) is None and read_vocabulary(filled) is None
    filled.drop()  # nothing to drop is no error


# -- points ----------------------------------------------------------------------------------


def test_upsert_payloads_point_ids_delete_and_count(filled: Backend) -> None:
    assert filled.count() == len(PRODUCTS)
    assert sorted(filled.point_ids()) == sorted(point_id(pid) for pid in PRODUCTS)
    wanted = [point_id("boot-1"), point_id("missing")]
    assert filled.payloads(wanted) == {point_id("boot-1"): POINTS[0].payload}
    cheaper = replace(POINTS[0], payload={**POINTS[0].payload, "price": 99.0})
    filled.upsert([cheaper])  # the same id: overwritten, not added
    assert filled.count() == len(PRODUCTS)
    assert filled.payloads([cheaper.id])[cheaper.id]["price"] == 99.0
    filled.delete([point_id("sock-1"), point_id("hat-1")])
    filled.delete([])
    assert filled.count() == len(PRODUCTS) - 2
    assert point_id("sock-1") not in set(filled.point_ids())


def test_point_ids_pages_through_more_than_a_page(backend: Backend) -> None:
    from shopsearch.store.backend import ID_PAGE

    with backend.writing():
        backend.create(META)
        many = [
            replace(POINTS[0], id=point_id(str(i)), payload={"product_id": str(i)})
            for i in range(ID_PAGE + 5)
        ]
        backend.upsert(many)
    ids = list(backend.point_ids())
    assert len(ids) == len(set(ids)) == ID_PAGE + 5


def test_count_facet_and_value_range_under_conditions(filled: Backend) -> None:
    in_stock = [Match("in_stock", (True,))]
    assert filled.count(in_stock) == 5
    assert filled.count([Match("brand", ("acme", "zeta"))]) == 5
    assert filled.count([Match("color", ("black",), negate=True)]) == 4
    assert filled.facet("brand", [], 10) == [
        FacetCount("acme", 3),
        FacetCount("knit", 2),
        FacetCount("zeta", 2),
    ]
    assert filled.facet("color", in_stock, 2) == [FacetCount("black", 3), FacetCount("brown", 1)]
    assert filled.facet("in_stock", [], 10) == [FacetCount(True, 5), FacetCount(False, 2)]
    assert filled.value_range("price", []) == ValueRange(9.9, 120.0)
    cheap = [Range("price", lt=100.0), Match("in_stock", (True,))]
    assert filled.value_range("price", cheap) == ValueRange(9.9, 60.0)
    assert filled.value_range("price", [Match("brand", ("nobody",))]) is None


# -- search ----------------------------------------------------------------------------------


def _ranking(scores: dict[str, float]) -> list[str]:
    return sorted(scores, key=lambda pid: -scores[pid])


def _cosine_scores() -> dict[str, float]:
    query = QUERY_DENSE / np.linalg.norm(QUERY_DENSE)
    return {p.payload["product_id"]: float(p.dense @ query) for p in POINTS}


def _bm25_scores() -> dict[str, float]:
    """Qdrant's sparse search with the IDF modifier: query weight x stored weight x
    ln(1 + (N - n + 0.5) / (n + 0.5)) per shared term; products sharing none are not hits."""
    n_docs = len(POINTS)
    holders = {t: sum(t in PRODUCTS[pid][1] for pid in PRODUCTS) for t in QUERY_SPARSE.indices}
    scores = {}
    for pid, (_, terms, _) in PRODUCTS.items():
        shared = [t for t in QUERY_SPARSE.indices if t in terms]
        if shared:
            weights = dict(zip(QUERY_SPARSE.indices, QUERY_SPARSE.values, strict=True))
            scores[pid] = sum(
                weights[t]
                * terms[t]
                * math.log(1 + (n_docs - holders[t] + 0.5) / (holders[t] + 0.5))
                for t in shared
            )
    return scores


def _rrf_scores(bm25_weight: float) -> dict[str, float]:
    """RRF with Qdrant's k and weights (`rrf_weights`): a hit's share of a list is
    1 / ((rank + 1) / weight + k - 1)."""
    scores: dict[str, float] = {}
    lists = ((_cosine_scores(), 1.0), (_bm25_scores(), bm25_weight))
    for retrieved, weight in lists:
        for rank, pid in enumerate(_ranking(retrieved)):
            scores[pid] = scores.get(pid, 0.0) + 1 / ((rank + 1) / weight + RRF_K - 1)
    return scores


@pytest.mark.parametrize(
    "scores",
    [_cosine_scores(), _bm25_scores(), _rrf_scores(1.0), _rrf_scores(3.0)],
    ids=["dense", "bm25", "rrf", "rrf-weighted"],
)
def test_the_data_set_ranks_without_ties(scores: dict[str, float]) -> None:
    """The expected rankings below depend on no two products scoring alike (equal scores
    come in point id order, which another collection would change)."""
    ordered = sorted(scores.values())
    assert min(b - a for a, b in itertools.pairwise(ordered)) > 1e-3


# Every product is a candidate of each retriever, and the limit holds them all, so that a
# ranking is compared whole. The others follow from the scores above; DBSF's (each list's
# scores normalised by their mean and spread, then summed) is the one both engines give,
# with no two scores within 0.01 of each other.
DBSF_RANKING = ["boot-1", "shoe-2", "shoe-1", "boot-2", "hat-1", "sock-1", "bag-1"]


@pytest.mark.parametrize(
    ("mode", "fusion", "bm25_weight"),
    [
        (SearchMode.DENSE, FusionMethod.RRF, 1.0),
        (SearchMode.BM25, FusionMethod.RRF, 1.0),
        (SearchMode.HYBRID, FusionMethod.RRF, 1.0),
        (SearchMode.HYBRID, FusionMethod.RRF, 3.0),
        (SearchMode.HYBRID, FusionMethod.DBSF, 1.0),
    ],
    ids=["dense", "bm25", "hybrid-rrf", "hybrid-rrf-weighted", "hybrid-dbsf"],
)
def test_each_search_mode_ranks_as_qdrant_scores(
    filled: Backend, mode: SearchMode, fusion: FusionMethod, bm25_weight: float
) -> None:
    request = SearchRequest(
        dense=QUERY_DENSE,
        sparse=QUERY_SPARSE,
        mode=mode,
        fusion=fusion,
        bm25_weight=bm25_weight,
        limit=len(PRODUCTS),
        candidates=len(PRODUCTS),
        exact=True,
    )
    if mode is SearchMode.DENSE:
        wanted = _ranking(_cosine_scores())
    elif mode is SearchMode.BM25:
        wanted = _ranking(_bm25_scores())
    elif fusion is FusionMethod.RRF:
        wanted = _ranking(_rrf_scores(bm25_weight))
    else:
        wanted = DBSF_RANKING
    (hits,) = filled.search_batch([request])
    assert _ids(hits) == wanted
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert hits[0].payload == filled.payloads([hits[0].point_id])[hits[0].point_id]


def test_a_batch_answers_each_request_with_its_filters_limit_and_fields(filled: Backend) -> None:
    hybrid = SearchRequest(dense=QUERY_DENSE, sparse=QUERY_SPARSE, limit=3, candidates=7)
    in_stock = replace(hybrid, conditions=[Match("in_stock", (True,))], limit=10)
    dense = replace(hybrid, mode=SearchMode.DENSE, with_payload=["brand"], limit=2)
    terms = replace(hybrid, mode=SearchMode.BM25, with_payload=False, with_terms=True)
    a, b, c, d = filled.search_batch([hybrid, in_stock, dense, terms])
    assert len(a) == 3 and _ids(a) == _ranking(_rrf_scores(1.0))[:3]
    assert {h.payload["product_id"] for h in b} <= {
        pid for pid, (_, _, payload) in PRODUCTS.items() if payload["in_stock"]
    }
    assert len(b) == 5
    nearest = _ranking(_cosine_scores())[:2]
    assert [h.payload for h in c] == [{"brand": PRODUCTS[pid][2]["brand"]} for pid in nearest]
    by_id = {p.id: set(p.sparse.indices) for p in POINTS}
    assert all(h.payload == {} and set(h.terms) == by_id[h.point_id] for h in d)
    assert all(h.terms == () for h in a)
    assert filled.search_batch([]) == []


# -- writing and rebuilding ------------------------------------------------------------------


def test_writes_leave_writing_searchable_and_durable(backend: Backend, tmp_path) -> None:
    with backend.writing():
        backend.create(META)
        backend.upsert(POINTS)
        backend.delete([point_id("bag-1")])
    request = SearchRequest(dense=QUERY_DENSE, sparse=None, mode=SearchMode.DENSE, limit=10)
    ranking = [pid for pid in _ranking(_cosine_scores()) if pid != "bag-1"]
    assert _ids(backend.search_batch([request])[0]) == ranking
    backend.close()
    if isinstance(backend, EdgeBackend):  # a new process finds what was written
        backend = EdgeBackend(backend.directory)
        assert _ids(backend.search_batch([request])[0]) == ranking
        backend.close()


def test_rebuilding_replaces_the_collection_once_the_build_succeeds(filled: Backend) -> None:
    write_vocabulary(filled, {"boot": 2})
    new_meta = replace(META, product_text_template="{title} | {brand}")
    with filled.writing(), filled.rebuilding() as target:
        target.create(new_meta)
        target.upsert(POINTS[:2])
        write_vocabulary(target, {"hat": 1})
    assert read_meta(filled) == new_meta
    assert filled.count() == 2 and read_vocabulary(filled) == {"hat": 1}
    assert sorted(filled.point_ids()) == sorted(p.id for p in POINTS[:2])


def test_a_rebuild_that_fails_before_creating_leaves_the_old_collection(filled: Backend) -> None:
    write_vocabulary(filled, {"boot": 2})
    unreadable = pytest.raises(RuntimeError, match="catalog unreadable")
    with unreadable, filled.writing(), filled.rebuilding():
        raise RuntimeError("catalog unreadable")
    with filled.writing(), filled.rebuilding():
        pass  # a build that creates nothing replaces nothing
    assert read_meta(filled) == META and read_vocabulary(filled) == {"boot": 2}
    assert filled.count() == len(PRODUCTS)


def test_a_rebuild_that_fails_after_creating_leaves_the_old_collection(
    filled: Backend,
) -> None:
    """Both backends build beside the old collection (Edge: a sibling directory; a server: a
    new version under the alias), and a build that fails is deleted."""
    new_meta = replace(META, product_text_template="{title} | {brand}")
    interrupted = pytest.raises(RuntimeError, match="interrupted")
    with interrupted, filled.writing(), filled.rebuilding() as target:
        target.create(new_meta)
        target.upsert(POINTS[:1])
        raise RuntimeError("interrupted")
    assert read_meta(filled) == META and filled.count() == len(PRODUCTS)
    if isinstance(filled, EdgeBackend):
        assert sorted(p.name for p in filled.directory.parent.iterdir()) == [
            ".products.lock",
            "products",
        ]
    else:
        assert isinstance(filled, ServerBackend)
        names = [c.name for c in filled.client.get_collections().collections]
        assert names == [filled.version()]
