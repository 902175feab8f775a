"""One small interface over the two places a collection can live.

Embedded Qdrant Edge (default: in-process, no server) and a Qdrant server via
qdrant-client implement the same few operations on the same schema, so ingest and search
never branch on where the data is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

import numpy as np

from shopsearch.store.conditions import Condition
from shopsearch.store.counts import FacetCount, ValueRange
from shopsearch.store.schema import SPARSE_VECTOR, CollectionMeta


class SearchMode(str, Enum):
    HYBRID = "hybrid"
    DENSE = "dense"
    BM25 = "bm25"


class FusionMethod(str, Enum):
    RRF = "rrf"
    DBSF = "dbsf"
    # A model fit on the shop's judgments scores both lists' candidates
    # (shopsearch.search.learned_fusion); backends see its two plain searches.
    LEARNED = "learned"


@dataclass(frozen=True)
class IndexSettings:
    """HNSW graph and vector quantisation: engine tuning, not part of the public contract.

    int8 scalar quantisation is on by default: the graph is walked on int8 copies of the
    vectors and the best `QUANTIZED_OVERSAMPLING` x limit candidates are rescored with the
    float originals, so results keep full-precision scores. On the 55k Home Depot catalog it
    halved filtered dense search (1.0 -> 0.5 ms p50) and the HNSW build (39 -> 22 s) at the
    same recall@10 of exact search (0.987). At 1M products, hnsw_ef=160 reaches recall@10 0.983
    with a filtered hybrid query at 7.6 ms p50; RESULTS.md sections 3-5 have the figures.
    Half of the 55k build is the price index's payload subgraph: without it a price filter
    matching 20% of the catalog found 0.60 of the exact top 10 (benchmarks/index_build.py).

    The float originals stay in RAM too. Kept on disk (Edge `Memory.Cold`), they made opening
    the 55k shard faster (0.50 -> 0.33 s) but the first queries of a process read them from
    disk (0.2-0.7 s for the first), which is what a cold `shopsearch query` pays.
    """

    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    full_scan_threshold_kb: int = 10_000
    int8_quantization: bool = True
    # Edge only: threads one query may use across the shard's segments. Nearly all points sit
    # in one optimised segment (55k and 1M catalogs alike), so Edge's pool only adds a hand-off
    # to a sleeping thread: filtered hybrid query 3.7 -> 1.7 ms when queries arrive with the
    # CPU idle in between; no change right after an encode (RESULTS.md section 4).
    search_threads: int = 1


# Rescoring depth for quantised collections (ignored by unquantised ones): without it, recall@10
# on the 55k catalog falls from 0.987 to 0.962.
QUANTIZED_OVERSAMPLING = 2.0

# Points per page when listing a collection's ids.
ID_PAGE = 1024


@dataclass(frozen=True)
class SparseVec:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class ProductPoint:
    id: str
    dense: np.ndarray
    sparse: SparseVec
    payload: dict[str, Any]


@dataclass(frozen=True)
class SearchRequest:
    dense: np.ndarray | None
    sparse: SparseVec | None
    conditions: Sequence[Condition] = ()
    mode: SearchMode = SearchMode.HYBRID
    fusion: FusionMethod = FusionMethod.RRF
    bm25_weight: float = 1.0  # RRF only: BM25's weight against the dense list's 1
    limit: int = 10
    candidates: int = 100  # per-retriever prefetch depth before fusion
    exact: bool = False
    hnsw_ef: int | None = None  # None: the engine's default
    with_payload: bool | list[str] = True
    with_terms: bool = False  # each hit's BM25 term ids (Hit.terms), for learned fusion


@dataclass(frozen=True)
class Hit:
    point_id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    # Product ids of the same family's other variants, when results are collapsed to one per
    # family (shopsearch.search.variants).
    other_variants: tuple[str, ...] = ()
    # The product's BM25 term ids, when the search asked for them (`with_terms`).
    terms: tuple[int, ...] = ()

    @property
    def product_id(self) -> str:
        """The shop's id; the point id when the search read a payload without it."""
        return str(self.payload.get("product_id", self.point_id))


def hits_by_score(points: Iterable[Any]) -> list[Hit]:
    """Either backend's scored points (Edge's and qdrant-client's have the same fields) as
    hits, by score and equal scores by point id. Qdrant orders equal scores arbitrarily, and
    differently from one call to the next: RRF's rank-based scores tie often (42% of the
    filtered Home Depot dev queries hold a tie in their top 20), and without this order the
    same query's results reorder between calls, and a page's end falls inside a tie
    differently for each page."""
    hits = [
        Hit(str(p.id), float(p.score), p.payload or {}, terms=hit_terms(p.vector)) for p in points
    ]
    return sorted(hits, key=lambda h: (-h.score, h.point_id))


def hit_terms(vectors: Any) -> tuple[int, ...]:
    """The BM25 term ids of a point either backend returned with its sparse vector (a dict of
    named vectors; Edge's and qdrant-client's sparse vectors both have `indices`), else ()."""
    sparse = vectors.get(SPARSE_VECTOR) if isinstance(vectors, dict) else None
    return tuple(sparse.indices) if sparse is not None else ()


# RRF's k: Qdrant server's default; both backends set it explicitly so they agree.
RRF_K = 2


def rrf_weights(bm25_weight: float) -> list[float] | None:
    """Qdrant's weights for the (dense, BM25) prefetches; None (unweighted RRF, which every
    Qdrant version accepts) at equal weights. A weight w divides a list's ranks: a hit's
    share is 1 / ((rank + 1) / w + k - 1)."""
    return None if bm25_weight == 1.0 else [1.0, bm25_weight]


class Backend(Protocol):
    @property
    def location(self) -> str: ...

    def read_meta(self) -> CollectionMeta | None:
        """The collection's metadata, or None when the collection does not exist."""
        ...

    def create(self, meta: CollectionMeta) -> None: ...

    def write_meta(self, meta: CollectionMeta) -> None:
        """Replace an existing collection's metadata (ingest updates what it records)."""
        ...

    def read_vocabulary(self) -> dict[str, int] | None:
        """Catalog word -> products using it, as ingest last wrote it; None when it never
        did (collections ingested before typo tolerance)."""
        ...

    def write_vocabulary(self, words: dict[str, int]) -> None: ...

    def read_fusion(self) -> dict[str, Any] | None:
        """The learned fusion `shopsearch fusion fit` stored (FusionModel.to_dict), or None."""
        ...

    def write_fusion(self, model: dict[str, Any]) -> None: ...

    def drop(self) -> None: ...

    def writing(self) -> AbstractContextManager[None]:
        """Held by an ingest for its whole run, so that a second one fails at once (with
        `CollectionBusyError`) instead of corrupting the first's work. Edge: a file lock; a
        server: nothing, as it serialises concurrent clients' writes itself."""
        ...

    def replacement(self) -> Backend:
        """Where `ingest --recreate` builds the new collection, so that a run that fails
        leaves the old one as it was: Edge, an empty sibling directory; a server, whose
        collections cannot be renamed under the services querying them, this backend
        itself (ingest drops the old collection just before creating the new one)."""
        ...

    def replace_with(self, built: Backend) -> None:
        """Make `built`, this backend's complete `replacement()`, the collection."""
        ...

    def upsert(self, points: Sequence[ProductPoint]) -> None: ...

    def point_ids(self) -> Iterator[str]:
        """Every point's id, page by page (ingest --prune compares them with a catalog)."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored payloads of those of `ids` that exist (ingest skips unchanged products)."""
        ...

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]: ...

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        """Products that pass `conditions` (all of them by default), counted exactly."""
        ...

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        """The `limit` values of `field` most products passing `conditions` hold, counted
        exactly, in `facets.by_count` order."""
        ...

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        """The lowest and highest value of a number field among the products passing
        `conditions` (read in its index's order), or None when none has one."""
        ...

    def finish_writes(self) -> None:
        """Make everything upserted durable and indexed (Edge: flush + optimise)."""
        ...

    def load_index(self) -> None:
        """Load what searching needs now rather than at the first search (Edge: the shard), so
        a caller can overlap it with other start-up work."""
        ...

    def close(self) -> None: ...
