"""What the two backends ask Qdrant for, written once.

qdrant_edge and qdrant_client.models describe a collection, a filter, a query and a scroll in
the same shapes, mostly under the same class names. The backends must ask for the same
things (they score products identically, and a collection either one built is the same
public contract), so the requests are built here from a `Models`: one backend's classes by
role. Each backend's subclass spells out only what its module writes differently; the calls
that send a request stay in the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from types import ModuleType
from typing import Any

from shopsearch.store.backend import (
    ID_PAGE,
    QUANTIZED_OVERSAMPLING,
    RRF_K,
    FusionMethod,
    IndexSettings,
    ProductPoint,
    RankFormula,
    SearchMode,
    SearchRequest,
    SparseVec,
    rrf_weights,
)
from shopsearch.store.conditions import Condition, build_filter
from shopsearch.store.counts import ValueRange
from shopsearch.store.schema import (
    DENSE_VECTOR,
    INDEXED_FIELDS,
    PAIRS_VECTOR,
    SPARSE_VECTOR,
    CollectionMeta,
    FieldType,
    match_indexes,
    rank_indexes,
)

# The classes a request is built of, by qdrant_client's names; qdrant_edge's classes take
# the same keywords, and mostly have the same names.
_CLASSES = (
    "Filter",
    "FieldCondition",
    "MatchValue",
    "MatchAny",
    "Range",
    "HasIdCondition",
    "SearchParams",
    "QuantizationSearchParams",
    "QueryRequest",
    "Prefetch",
    "SparseVector",
    "OrderBy",
    "VectorParams",
    "SparseVectorParams",
    "HnswConfigDiff",
)


class Models:
    """One backend's Qdrant classes by the role they play in a request.

    The classes (`_CLASSES`, by qdrant_client's names) come from `module`, except those a
    subclass sets itself because its module names them otherwise. The subclass implements
    the methods below, where the two APIs differ in shape. `build_filter` takes a `Models`
    as its namespace too.
    """

    Filter: Any
    FieldCondition: Any
    MatchValue: Any
    MatchAny: Any
    Range: Any
    HasIdCondition: Any
    SearchParams: Any
    QuantizationSearchParams: Any
    QueryRequest: Any
    Prefetch: Any
    SparseVector: Any
    OrderBy: Any
    VectorParams: Any
    SparseVectorParams: Any
    HnswConfigDiff: Any

    def __init__(self, module: ModuleType, prefetch_field: str) -> None:
        """`prefetch_field`: QueryRequest's keyword for its prefetches."""
        self.module = module
        self.prefetch_field = prefetch_field
        for name in _CLASSES:
            if not hasattr(type(self), name):  # the subclass's own class wins
                setattr(self, name, getattr(module, name))

    def member(self, enum: str, name: str) -> Any:
        """A member of one of the module's enums by its lowercase name: qdrant_client spells
        members in capitals (`Distance.COSINE`), qdrant_edge capitalised (`Distance.Cosine`)."""
        cls = getattr(self.module, enum)
        upper = name.upper()
        return getattr(cls, upper) if hasattr(cls, upper) else getattr(cls, name.capitalize())

    def nearest(self, vector: Any, using: str) -> dict[str, Any]:
        """The fields of a query or prefetch that searches the named vector nearest to
        `vector`."""
        raise NotImplementedError

    def rrf(self, k: int, weights: list[float] | None) -> Any:
        """The query that fuses a request's prefetches by (weighted) RRF."""
        raise NotImplementedError

    def dbsf(self) -> Any:
        """The query that fuses a request's prefetches by DBSF."""
        raise NotImplementedError

    def int8(self) -> Any:
        """Scalar int8 quantisation, as the collection config takes it."""
        raise NotImplementedError

    def expression(self, op: str, *args: Any) -> Any:
        """A score formula's expression: `variable` (a payload field or `$score`),
        `constant`, `sum` and `mult` (of a list), `max` (of a list), `div` (left, right,
        the value where right is 0) or `condition` (1 where the condition holds, else 0)."""
        raise NotImplementedError

    def formula(self, expression: Any, defaults: dict[str, float]) -> Any:
        """The query that rescores a request's prefetch by `expression`, a missing field
        read as its `defaults` value."""
        raise NotImplementedError

    def index_schema(self, field: str, kind: FieldType) -> Any:
        """What a payload index of `field` is created with."""
        return self.member("PayloadSchemaType", kind.value)


def collection_config(meta: CollectionMeta, index: IndexSettings, m: Models) -> dict[str, Any]:
    """The collection's vectors and index, under qdrant_edge's `EdgeConfig` keywords: the
    `dense` vector (cosine, the encoder's dimension), the `bm25` sparse vector with IDF,
    the HNSW graph and int8 quantisation as `index` sets them."""
    return {
        "vectors": {
            DENSE_VECTOR: m.VectorParams(
                size=meta.encoder.dimension, distance=m.member("Distance", "cosine")
            )
        },
        "sparse_vectors": {
            SPARSE_VECTOR: m.SparseVectorParams(modifier=m.member("Modifier", "idf")),
            **({PAIRS_VECTOR: m.SparseVectorParams()} if meta.word_pairs else {}),
        },
        "hnsw_config": m.HnswConfigDiff(
            m=index.hnsw_m,
            ef_construct=index.hnsw_ef_construct,
            full_scan_threshold=index.full_scan_threshold_kb,
        ),
        "quantization_config": m.int8() if index.int8_quantization else None,
    }


def payload_indexes(m: Models, meta: CollectionMeta) -> dict[str, Any]:
    """Each indexed payload field (the contract's `INDEXED_FIELDS`) with its index schema,
    the keyword index of each normalised copy the collection records (`match.brand`,
    ...: `match_indexes`), and the float index of each rank field (`rank_indexes`)."""
    indexed = {
        **INDEXED_FIELDS,
        **match_indexes(meta.match_fields),
        **rank_indexes(meta.rank_fields),
    }
    return {name: m.index_schema(name, kind) for name, kind in indexed.items()}


def point_vectors(point: ProductPoint, m: Models) -> dict[str, Any]:
    """A product's named vectors, as a point stores them."""
    vectors = {DENSE_VECTOR: point.dense.tolist(), SPARSE_VECTOR: _sparse_vector(point.sparse, m)}
    if point.pairs is not None and point.pairs.indices:
        vectors[PAIRS_VECTOR] = _sparse_vector(point.pairs, m)
    return vectors


def query_request(req: SearchRequest, m: Models) -> Any:
    """One search: a dense or a BM25 search, or both as prefetches fused by RRF or DBSF."""
    flt = build_filter(req.conditions, m)
    params = m.SearchParams(
        exact=req.exact,
        hnsw_ef=req.hnsw_ef,
        quantization=m.QuantizationSearchParams(rescore=True, oversampling=QUANTIZED_OVERSAMPLING),
    )
    common: dict[str, Any] = {"limit": req.limit, "with_payload": req.with_payload}
    if req.with_terms:
        common["with_vector"] = [SPARSE_VECTOR, PAIRS_VECTOR] if req.with_pairs else [SPARSE_VECTOR]
    if req.formula is not None:
        # The ranking below becomes the prefetch the formula rescores.
        depth = max(req.formula.depth, req.limit)
        ranked = m.Prefetch(limit=depth, **_ranking(req, m, flt, params))
        query = _formula(req.formula, m)
        return m.QueryRequest(query=query, **{m.prefetch_field: [ranked]}, **common)
    return m.QueryRequest(**_ranking(req, m, flt, params), **common)


def _ranking(req: SearchRequest, m: Models, flt: Any, params: Any) -> dict[str, Any]:
    """The fields of the query (or prefetch) that ranks a request's products: a dense or a
    BM25 search, or both as prefetches fused by RRF or DBSF."""
    if req.mode is SearchMode.DENSE:
        return {**_dense(req, m), "params": params, "filter": flt}
    if req.mode is SearchMode.BM25:
        return {**_sparse(req, m), "filter": flt}
    prefetches = [
        m.Prefetch(limit=req.candidates, params=params, filter=flt, **_dense(req, m)),
        m.Prefetch(limit=req.candidates, filter=flt, **_sparse(req, m)),
    ]
    # The filter goes into the prefetches only: every fused candidate already passed it, and
    # the same filter at the root as well would make each prefetch check it twice.
    if req.fusion is FusionMethod.RRF:
        fusion = m.rrf(RRF_K, rrf_weights(req.bm25_weight))
    else:
        fusion = m.dbsf()
    return {"query": fusion, m.prefetch_field: prefetches}


def _formula(formula: RankFormula, m: Models) -> Any:
    """`RankFormula`'s score as the backend's formula query."""
    e = m.expression
    terms = [e("variable", "$score")]
    for name, weight, scale in formula.terms:
        value = e("max", [e("variable", name), e("constant", 0.0)])
        saturated = e("div", value, e("sum", [value, e("constant", scale)]), 0.0)
        terms.append(e("mult", [e("constant", weight), saturated]))
    if formula.stock_penalty:
        out = m.FieldCondition(key="in_stock", match=m.MatchValue(value=False))
        terms.append(e("mult", [e("constant", -formula.stock_penalty), e("condition", out)]))
    return m.formula(e("sum", terms), {name: 0.0 for name, _, _ in formula.terms})


def _dense(req: SearchRequest, m: Models) -> dict[str, Any]:
    assert req.dense is not None, "dense/hybrid search needs a query vector"
    return m.nearest(req.dense.tolist(), DENSE_VECTOR)


def _sparse(req: SearchRequest, m: Models) -> dict[str, Any]:
    assert req.sparse is not None, "bm25/hybrid search needs a sparse query vector"
    return m.nearest(_sparse_vector(req.sparse, m), SPARSE_VECTOR)


def _sparse_vector(sparse: SparseVec, m: Models) -> Any:
    return m.SparseVector(indices=sparse.indices, values=sparse.values)


# A backend's scroll: keywords offset, limit, filter, with_payload and order_by (those of
# qdrant_edge's ScrollRequest), vectors never; returns a page of records and the offset of
# the next page (None after the last).
Scroll = Callable[..., tuple[Sequence[Any], Any]]


def scrolled_ids(scroll: Scroll) -> Iterator[str]:
    """Every point's id, a page at a time."""
    offset = None
    while True:
        records, offset = scroll(offset=offset, limit=ID_PAGE, with_payload=False)
        yield from (str(r.id) for r in records)
        if offset is None:
            return


def value_range(
    scroll: Scroll, field: str, conditions: Sequence[Condition], m: Models
) -> ValueRange | None:
    """The first point in the field index's order, and the last: no point's value is read
    but theirs."""
    flt = build_filter(conditions, m)
    ends = []
    for direction in ("asc", "desc"):
        order = m.OrderBy(key=field, direction=m.member("Direction", direction))
        records, _ = scroll(limit=1, filter=flt, with_payload=[field], order_by=order)
        ends += [r.order_value for r in records]
    return ValueRange(*ends) if ends else None
