"""One small interface over the two places a collection can live.

Embedded Qdrant Edge (default: in-process, no server) and a Qdrant server via
qdrant-client implement the same few operations on the same schema, so ingest and search
never branch on where the data is. What the two ask Qdrant for is built once
(`shopsearch.store.qdrant_requests`); what a collection's documents hold is read and written once
(`shopsearch.store.documents`).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from itertools import pairwise
from typing import Any, Protocol, runtime_checkable

import numpy as np

from shopsearch.store.conditions import Condition
from shopsearch.store.counts import FacetCount, ValueRange
from shopsearch.store.schema import PAIRS_VECTOR, SPARSE_VECTOR, CollectionMeta, Document


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
    # The default: both lists' scores combined by weights the query's own lists decide
    # (shopsearch.search.adaptive_fusion); backends see its two plain searches.
    ADAPTIVE = "adaptive"


@dataclass(frozen=True)
class IndexSettings:
    """HNSW graph and vector quantisation: engine tuning, not part of the public contract.

    int8 scalar quantisation is on by default: the graph is walked on int8 copies of the
    vectors and the best `QUANTIZED_OVERSAMPLING` x limit candidates are rescored with the
    float originals, so results keep full-precision scores, while filtered search and the
    HNSW build are faster at the recall of unquantised search. The payload indexes
    keep their HNSW subgraphs (the price index's is much of the build): without them a
    selective price filter disconnects the graph and search misses products it should find.
    benchmarks/RESULTS.md, sections 3-5, and benchmarks/index_build.py measure both.

    The float originals stay in RAM too. Kept on disk (Edge `Memory.Cold`), the shard opens
    faster, but a process's first queries read them from disk, which is what a cold
    `shopsearch query` pays.
    """

    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    full_scan_threshold_kb: int = 10_000
    int8_quantization: bool = True
    # Edge only: threads one query may use across the shard's segments. Nearly all points sit
    # in one optimised segment, so more threads only add a hand-off to a sleeping thread,
    # which a query arriving at an idle CPU pays for (RESULTS.md section 4).
    search_threads: int = 1
    # Server only: how a new collection is spread over a cluster's peers. None leaves it to the
    # server (one shard per peer, one copy of each, a write acknowledged by one copy). An
    # embedded collection is one shard on one machine: the CLI refuses these there.
    shard_number: int | None = None
    replication_factor: int | None = None
    write_consistency_factor: int | None = None


# Rescoring depth for quantised collections (ignored by unquantised ones): rescoring only the
# limit's own candidates loses some of the true top 10 to int8's rounding (RESULTS.md section 4).
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
    # The title's word pairs (`schema.PAIRS_VECTOR`), in a collection that has them.
    pairs: SparseVec | None = None


@dataclass(frozen=True)
class RankFormula:
    """Business terms Qdrant adds to a search's own score by its score formula
    (shopsearch.search.business_ranking says what they mean):

        score + sum(weight * max(f, 0) / (max(f, 0) + scale) for field f)
              - stock_penalty * [in_stock is false]

    over the search's ranking read `depth` deep as a prefetch; a product without the field
    counts 0 for it."""

    terms: tuple[tuple[str, float, float], ...] = ()  # (payload field, weight, scale)
    stock_penalty: float = 0.0
    depth: int = 100


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
    with_pairs: bool = False  # with the terms, each hit's title pairs (Hit.pairs)
    # Business terms added to the score inside Qdrant; None: the search's own score.
    formula: RankFormula | None = None


# Not frozen: a search builds one per candidate it reads, and a frozen dataclass's
# constructor sets each field through object.__setattr__, a slower path.
@dataclass
class Hit:
    point_id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)
    # Product ids of the same family's other variants, when results are collapsed to one per
    # family (shopsearch.search.variants).
    other_variants: tuple[str, ...] = ()
    # The product's BM25 term ids, when the search asked for them (`with_terms`).
    terms: tuple[int, ...] = ()
    # The product's title pairs (store/word_pairs.py), when it asked for them (`with_pairs`).
    pairs: tuple[int, ...] = ()
    # The calibrated probability that the product is relevant to the query, where the search
    # worked it out (shopsearch.search.confidence); None where it did not.
    confidence: float | None = None
    # The share of the query's BM25 terms the product holds, where the ranking worked it out
    # (the default fusion's re-rank): the relevance floor reads it instead of asking again.
    coverage: float | None = None

    @property
    def product_id(self) -> str:
        """The shop's id; the point id when the search read a payload without it."""
        return str(self.payload.get("product_id", self.point_id))


def hits_by_score(points: Iterable[Any]) -> list[Hit]:
    """Either backend's scored points (Edge's and qdrant-client's have the same fields) as
    hits, by score and equal scores by point id. Qdrant orders equal scores arbitrarily, and
    differently from one call to the next: RRF's rank-based scores tie often, and without
    this order the same query's results reorder between calls, and a page's end falls
    inside a tie differently for each page."""
    hits = [Hit(str(p.id), p.score, p.payload or {}, (), *hit_terms(p.vector)) for p in points]
    # Qdrant returns them best first: the sort orders equal scores.
    if not all(a.score > b.score for a, b in pairwise(hits)):
        hits.sort(key=lambda h: (-h.score, h.point_id))
    return hits


def hit_terms(vectors: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The BM25 term ids and the title pairs of a point either backend returned with its
    sparse vectors (a dict of named vectors; Edge's and qdrant-client's sparse vectors both
    have `indices`), each () where it came without."""
    if not isinstance(vectors, dict):
        return (), ()
    sparse, pairs = vectors.get(SPARSE_VECTOR), vectors.get(PAIRS_VECTOR)
    return (
        tuple(sparse.indices) if sparse is not None else (),
        tuple(pairs.indices) if pairs is not None else (),
    )


# RRF's k: Qdrant server's default; both backends set it explicitly so they agree.
RRF_K = 2


def rrf_weights(bm25_weight: float) -> list[float] | None:
    """Qdrant's weights for the (dense, BM25) prefetches; None (unweighted RRF, which every
    Qdrant version accepts) at equal weights. A weight w divides a list's ranks: a hit's
    share is 1 / ((rank + 1) / w + k - 1)."""
    return None if bm25_weight == 1.0 else [1.0, bm25_weight]


class Backend(Protocol):
    """A collection, wherever it lives. Its documents' content is `shopsearch.store.documents`'
    to decide (`read_meta`, `read_vocabulary`, ...); a backend stores them."""

    @property
    def location(self) -> str: ...

    def read_document(self, document: Document) -> dict[str, Any] | None:
        """The JSON object stored as `document`, or None when the collection has none (or
        does not exist). A collection without its `Document.META` is not shopsearch's and
        raises `CollectionError`, as does a document that cannot be read."""
        ...

    def write_document(self, document: Document, data: dict[str, Any]) -> None:
        """Store `data` as the existing collection's `document`, whole or not at all."""
        ...

    def create(self, meta: CollectionMeta) -> None:
        """A new, empty collection: the contract's vectors and payload indexes, the index
        tuning of the backend's `IndexSettings`, and `meta` as its `Document.META`."""
        ...

    def drop(self) -> None: ...

    def writing(self) -> AbstractContextManager[None]:
        """Held by an ingest for its whole run. A second writer fails at once (with
        `CollectionBusyError`) instead of corrupting the first one's work, and leaving it
        without an error makes what was written durable and indexed, so the collection is
        ready to search at full speed. On a server there is nothing to hold or finish: it
        serialises concurrent clients' writes and indexes in the background itself."""
        ...

    def rebuilding(self) -> AbstractContextManager[Backend]:
        """Where `ingest --recreate` builds the new collection (`create` it, then fill it),
        within `writing()`: it becomes the collection when the block ends without an error,
        and a block that fails leaves the old collection as it was. Edge builds beside the
        old collection and swaps it in. A server, whose collections cannot be renamed under
        the services querying them, builds in place: the old collection goes when the new
        one is created, so only a build that fails before that leaves it."""
        ...

    def upsert(self, points: Sequence[ProductPoint]) -> None: ...

    def point_ids(self) -> Iterator[str]:
        """Every point's id, page by page (ingest --prune compares them with a catalog)."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored payloads of those of `ids` that exist (ingest skips unchanged products)."""
        ...

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        """Each request's hits, by score and equal scores by point id (`hits_by_score`)."""
        ...

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        """Products that pass `conditions` (all of them by default), counted exactly."""
        ...

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        """The `limit` values of `field` most products passing `conditions` hold, counted
        exactly, in `counts.by_count` order."""
        ...

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        """The lowest and highest value of a number field among the products passing
        `conditions` (read in its index's order), or None when none has one."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class LoadsIndex(Protocol):
    """A backend that reads its index into this process on first use (Edge: the shard, whose
    load holds the GIL), and can be told to do so earlier: see `warm_up`."""

    def load_index(self) -> None: ...


@runtime_checkable
class Reindexable(Protocol):
    """A backend whose collection `ingest --recreate` can replace under the same name while
    another process holds it open (`shopsearch serve`): that process asks which version the
    name stands for, to notice a swap and reopen, and whether a rebuild is under way, to
    apply its own writes to the new version too."""

    def identity(self) -> Hashable | None: ...

    def rebuild_under_way(self) -> bool: ...


@runtime_checkable
class Placed(Protocol):
    """A backend whose collection is spread over a cluster (a Qdrant server's): its
    shard_number, replication_factor and write_consistency_factor (None: the server's
    default), or None when there is no collection."""

    def placement(self) -> dict[str, int | None] | None: ...


def warm_up(backend: Backend) -> None:
    """Load what searching needs now rather than at the first search, where the backend has
    anything to load, so a caller can overlap it with other start-up work (a forked query
    encoder encodes meanwhile). Not part of `Backend`: a server holds its index loaded.
    Nor is it part of opening a backend: `ingest --recreate` opens a collection only to
    replace it, and would load an index it never reads."""
    if isinstance(backend, LoadsIndex):
        backend.load_index()
