"""Server backend: a Qdrant server or cluster through qdrant-client.

For shops that outgrow one machine (docker-compose.yml runs one). The collection's
metadata goes into Qdrant's collection metadata, so other services can read which encoder
and BM25 settings built it. Tests run this code against `QdrantClient(":memory:")`,
which speaks the same client API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from shopsearch.errors import CollectionError, ServerError, UsageError
from shopsearch.store.backend import (
    ID_PAGE,
    QUANTIZED_OVERSAMPLING,
    RRF_K,
    Backend,
    FusionMethod,
    Hit,
    IndexSettings,
    ProductPoint,
    SearchMode,
    SearchRequest,
    SparseVec,
    hits_by_score,
    rrf_weights,
)
from shopsearch.store.conditions import Condition, build_filter
from shopsearch.store.counts import FacetCount, ValueRange, by_count
from shopsearch.store.schema import (
    DENSE_VECTOR,
    FUSION_KEY,
    INDEXED_FIELDS,
    META_KEY,
    SPARSE_VECTOR,
    VOCABULARY_KEY,
    CollectionMeta,
    FieldType,
)

WEIGHTED_RRF_SINCE = (1, 17)


def supports_weighted_rrf(version: str) -> bool:
    """Whether a Qdrant server of this version ("1.16.3", "1.17.0-rc1") takes RRF weights;
    a version it cannot read is given the benefit of the doubt."""
    parts = re.findall(r"\d+", version)[:2]
    if len(parts) < 2:
        return True
    return (int(parts[0]), int(parts[1])) >= WEIGHTED_RRF_SINCE


_INDEX_TYPES = {
    FieldType.KEYWORD: models.PayloadSchemaType.KEYWORD,
    FieldType.FLOAT: models.PayloadSchemaType.FLOAT,
    FieldType.BOOL: models.PayloadSchemaType.BOOL,
}


class ServerBackend:
    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        location: str,
        index: IndexSettings | None = None,
        url: str | None = None,
    ) -> None:
        """`url`: the server's, for messages (default: `location`)."""
        self.client = client
        self.collection = collection
        self._location = location
        self._url = url or location
        self.index = index or IndexSettings()
        self._server_version: str | None = None

    @contextmanager
    def _server(self, doing: str = "answered") -> Iterator[None]:
        """qdrant-client raises a connection failure as ResponseHandlingException and an HTTP
        error as UnexpectedResponse, both with a traceback of httpx frames: name the URL and
        the fix instead. `doing`: what the server did with an HTTP error ("rejected the
        query")."""
        try:
            yield
        except ResponseHandlingException as exc:
            raise ServerError(
                f"cannot reach Qdrant at {self._url} ({exc.source}): is the server running, and "
                "is --qdrant-url (QDRANT_URL) its address?"
            ) from exc
        except UnexpectedResponse as exc:
            status = f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
            if exc.status_code in (401, 403):
                raise ServerError(
                    f"Qdrant at {self._url} refused the request ({status}): check --api-key "
                    "(QDRANT_API_KEY)"
                ) from exc
            raise ServerError(
                f"Qdrant at {self._url} {doing} with {status}: {_error_text(exc)}"
            ) from exc

    def _check_weighted_rrf(self) -> None:
        """Servers before 1.17 reject RRF weights with a bare 400: name the fix instead."""
        if self._server_version is None:
            with self._server():
                try:
                    self._server_version = self.client.info().version
                except UnexpectedResponse:  # a key that may query but not read the root
                    self._server_version = "unknown"
        if not supports_weighted_rrf(self._server_version):
            raise UsageError(
                f"the Qdrant server at {self._location} is version {self._server_version}: "
                "weighted RRF (any --bm25-weight but 1, the default included) needs Qdrant "
                ">= 1.17. Upgrade the server, or pass --bm25-weight 1"
            )

    @classmethod
    def connect(
        cls,
        url: str,
        collection: str,
        api_key: str | None = None,
        index: IndexSettings | None = None,
    ) -> ServerBackend:
        if url == ":memory:":
            return cls(QdrantClient(":memory:"), collection, ":memory:", index)
        try:
            # No compatibility check: it costs every command a request to the server, and
            # warns (a bare UserWarning) before the error a server that is down gets anyway.
            # The one version this project depends on is checked where it matters
            # (_check_weighted_rrf).
            client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
        except ValueError as exc:  # urllib3's LocationParseError is one
            raise UsageError(f"bad --qdrant-url (QDRANT_URL) {url!r}: {exc}") from None
        return cls(client, collection, f"{url}/{collection}", index, url=url)

    @property
    def location(self) -> str:
        return self._location

    def _metadata(self) -> dict[str, Any] | None:
        """The collection's metadata ({} when it has none); None when there is no collection."""
        with self._server():
            if not self.client.collection_exists(self.collection):
                return None
            return self.client.get_collection(self.collection).config.metadata or {}

    def read_meta(self) -> CollectionMeta | None:
        metadata = self._metadata()
        if metadata is None:
            return None
        meta = metadata.get(META_KEY)
        if meta is None:
            raise CollectionError(
                f"collection '{self.collection}' exists but was not created by shopsearch"
            )
        return CollectionMeta.from_dict(meta)

    def create(self, meta: CollectionMeta) -> None:
        with self._server():
            self._create(meta)

    def _create(self, meta: CollectionMeta) -> None:
        if self.client.collection_exists(self.collection):
            raise CollectionError(f"collection '{self.collection}' already exists")
        self.client.create_collection(
            self.collection,
            vectors_config={
                DENSE_VECTOR: models.VectorParams(
                    size=meta.encoder.dimension, distance=models.Distance.COSINE
                )
            },
            sparse_vectors_config={
                SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)
            },
            metadata={META_KEY: meta.to_dict()},
            hnsw_config=models.HnswConfigDiff(
                m=self.index.hnsw_m,
                ef_construct=self.index.hnsw_ef_construct,
                full_scan_threshold=self.index.full_scan_threshold_kb,
            ),
            quantization_config=models.ScalarQuantization(
                scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8)
            )
            if self.index.int8_quantization
            else None,
        )
        for name, kind in INDEXED_FIELDS.items():
            self.client.create_payload_index(self.collection, name, field_schema=_INDEX_TYPES[kind])

    def write_meta(self, meta: CollectionMeta) -> None:
        with self._server():
            self.client.update_collection(self.collection, metadata={META_KEY: meta.to_dict()})

    def read_vocabulary(self) -> dict[str, int] | None:
        stored = (self._metadata() or {}).get(VOCABULARY_KEY)
        return None if stored is None else dict(stored["words"])

    def write_vocabulary(self, words: dict[str, int]) -> None:
        # Merged into the collection's metadata, beside META_KEY's.
        with self._server():
            self.client.update_collection(
                self.collection, metadata={VOCABULARY_KEY: {"words": words}}
            )

    def read_fusion(self) -> dict[str, Any] | None:
        stored = (self._metadata() or {}).get(FUSION_KEY)
        return None if stored is None else dict(stored)

    def write_fusion(self, model: dict[str, Any]) -> None:
        with self._server():
            self.client.update_collection(self.collection, metadata={FUSION_KEY: model})

    def drop(self) -> None:
        with self._server():
            if self.client.collection_exists(self.collection):
                self.client.delete_collection(self.collection)

    def writing(self) -> AbstractContextManager[None]:
        """No lock: the server serialises writes; two ingests interleave their upserts, as
        any two clients' do."""
        return nullcontext()

    def replacement(self) -> ServerBackend:
        return self

    def replace_with(self, built: Backend) -> None:
        """Built in place."""

    def close(self) -> None:
        self.client.close()

    def finish_writes(self) -> None:
        """The server indexes in the background; upserts already waited for durability."""

    def load_index(self) -> None:
        """The server holds its index loaded."""

    def upsert(self, points: Sequence[ProductPoint]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.id,
                vector={
                    DENSE_VECTOR: p.dense.tolist(),
                    SPARSE_VECTOR: models.SparseVector(
                        indices=p.sparse.indices, values=p.sparse.values
                    ),
                },
                payload=p.payload,
            )
            for p in points
        ]
        with self._server():
            self.client.upsert(self.collection, structs, wait=True)

    def point_ids(self) -> Iterator[str]:
        offset: models.ExtendedPointId | None = None
        while True:
            with self._server():
                records, offset = self.client.scroll(
                    self.collection, limit=ID_PAGE, offset=offset, with_payload=False
                )
            yield from (str(r.id) for r in records)
            if offset is None:
                return

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self._server():
                self.client.delete(
                    self.collection, models.PointIdsList(points=list(ids)), wait=True
                )

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._server():
            records = self.client.retrieve(self.collection, list(ids), with_payload=True)
        return {str(r.id): r.payload or {} for r in records}

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        flt = build_filter(conditions, models)
        with self._server():
            return self.client.count(self.collection, count_filter=flt, exact=True).count

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        flt = build_filter(conditions, models)
        with self._server("rejected the count"):
            response = self.client.facet(
                self.collection, field, facet_filter=flt, limit=limit, exact=True
            )
        return by_count([FacetCount(hit.value, hit.count) for hit in response.hits])

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        flt = build_filter(conditions, models)
        ends = []
        with self._server("rejected the range"):
            for direction in (models.Direction.ASC, models.Direction.DESC):
                records, _ = self.client.scroll(
                    self.collection,
                    scroll_filter=flt,
                    limit=1,
                    order_by=models.OrderBy(key=field, direction=direction),
                    with_payload=[field],
                )
                ends += [r.order_value for r in records]
        return ValueRange(*ends) if ends else None

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        if any(_weighted_rrf(r) for r in requests):
            self._check_weighted_rrf()
        with self._server("rejected the query"):
            responses = self.client.query_batch_points(
                self.collection, [_query_request(r) for r in requests]
            )
        return [hits_by_score(response.points) for response in responses]


def _error_text(exc: UnexpectedResponse) -> str:
    """Qdrant's own message ({"status": {"error": ...}}), else the start of the body."""
    try:
        return str(json.loads(exc.content)["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return exc.content[:200].decode("utf-8", errors="replace") or "(no body)"


def _weighted_rrf(req: SearchRequest) -> bool:
    return (
        req.mode is SearchMode.HYBRID
        and req.fusion is FusionMethod.RRF
        and rrf_weights(req.bm25_weight) is not None
    )


def _query_request(req: SearchRequest) -> models.QueryRequest:
    flt = build_filter(req.conditions, models)
    params = models.SearchParams(
        exact=req.exact,
        hnsw_ef=req.hnsw_ef,
        quantization=models.QuantizationSearchParams(
            rescore=True, oversampling=QUANTIZED_OVERSAMPLING
        ),
    )
    common: dict[str, Any] = {"limit": req.limit, "with_payload": req.with_payload}
    if req.with_terms:
        common["with_vector"] = [SPARSE_VECTOR]
    if req.mode is SearchMode.DENSE:
        return models.QueryRequest(
            query=_dense(req), using=DENSE_VECTOR, params=params, filter=flt, **common
        )
    if req.mode is SearchMode.BM25:
        return models.QueryRequest(
            query=_sparse(req.sparse), using=SPARSE_VECTOR, filter=flt, **common
        )
    if req.fusion is FusionMethod.RRF:
        fusion: Any = models.RrfQuery(rrf=models.Rrf(k=RRF_K, weights=rrf_weights(req.bm25_weight)))
    else:
        fusion = models.FusionQuery(fusion=models.Fusion.DBSF)
    prefetch = [
        models.Prefetch(
            query=_dense(req), using=DENSE_VECTOR, limit=req.candidates, params=params, filter=flt
        ),
        models.Prefetch(
            query=_sparse(req.sparse), using=SPARSE_VECTOR, limit=req.candidates, filter=flt
        ),
    ]
    # Filtered in the prefetches only, as in edge.py: every fused candidate already passed it.
    return models.QueryRequest(query=fusion, prefetch=prefetch, **common)


def _dense(req: SearchRequest) -> list[float]:
    assert req.dense is not None, "dense/hybrid search needs a query vector"
    return req.dense.tolist()


def _sparse(sparse: SparseVec | None) -> models.SparseVector:
    assert sparse is not None, "bm25/hybrid search needs a sparse query vector"
    return models.SparseVector(indices=sparse.indices, values=sparse.values)
