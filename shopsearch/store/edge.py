"""Embedded backend: Qdrant Edge, the real Qdrant engine in-process.

The default because it needs no server and is fast at catalog scale (HNSW, payload
indexes, BM25 with IDF, fusion, WAL). Layout of a collection directory:
    <dir>/shard/            the Edge shard
    <dir>/shopsearch.json   CollectionMeta (encoder, BM25 settings, template)
    <dir>/vocabulary.json   {"words": {word: products using it}}, for typo tolerance
    <dir>/fusion.json       the learned fusion model, once `shopsearch fusion fit` made one
`ingest --recreate` builds the new collection in `.<name>.recreating` beside <dir>, and
renames it to <dir> once complete (the old one passes through `.<name>.replaced`). An
ingest holds `.<name>.lock`, beside <dir> too, as its writer lock (`EdgeBackend.writing`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import qdrant_edge as qe

from shopsearch.errors import CollectionBusyError, CollectionError
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
    INDEXED_FIELDS,
    SPARSE_VECTOR,
    CollectionMeta,
    FieldType,
)

try:
    import fcntl
except ImportError:  # Windows: EdgeBackend.writing locks nothing
    fcntl = None  # type: ignore[assignment]

META_FILE = "shopsearch.json"
VOCABULARY_FILE = "vocabulary.json"
FUSION_FILE = "fusion.json"
SHARD_DIR = "shard"


def _match_value(value: str | int | bool) -> qe.MatchValue:
    # qdrant-edge-py 0.9 reads a Python bool as the integer 1/0 (bool subclasses int), so
    # `in_stock=true` would match nothing; numpy's bool is not an int and arrives as a bool.
    return qe.MatchValue(np.bool_(value) if isinstance(value, bool) else value)


_MODELS = SimpleNamespace(
    Filter=qe.Filter,
    FieldCondition=qe.FieldCondition,
    MatchValue=_match_value,
    MatchAny=qe.MatchAny,
    Range=qe.RangeFloat,
)
_INDEX_TYPES = {
    FieldType.KEYWORD: qe.PayloadSchemaType.Keyword,
    FieldType.FLOAT: qe.PayloadSchemaType.Float,
    FieldType.BOOL: qe.PayloadSchemaType.Bool,
}

# One value per product: an in-RAM index of these is rebuilt on every shard load (0.06-0.08 s of
# a cold `shopsearch query` on the 55k catalog) for lookups no shopper filter makes; served
# from the page cache instead, filtered search latency did not change measurably.
_CACHED_INDEX_FIELDS = ("product_id", "parent_id")
_CACHED_INDEX = qe.KeywordIndexParams(memory=qe.Memory.Cached)


class EdgeBackend:
    def __init__(self, directory: Path, index: IndexSettings | None = None) -> None:
        self.directory = Path(directory)
        self.index = index or IndexSettings()
        self._shard: qe.EdgeShard | None = None

    @property
    def location(self) -> str:
        return str(self.directory)

    # -- lifecycle ---------------------------------------------------------------
    def read_meta(self) -> CollectionMeta | None:
        meta_file = self.directory / META_FILE
        if not meta_file.exists():
            if (self.directory / SHARD_DIR).exists():
                raise CollectionError(f"{self.directory} holds a shard without {META_FILE}")
            return None
        try:
            data = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise CollectionError(f"cannot read {meta_file}: {exc}") from exc
        return CollectionMeta.from_dict(data)

    def create(self, meta: CollectionMeta) -> None:
        if (self.directory / SHARD_DIR).exists():
            raise CollectionError(f"a collection already exists at {self.directory}")
        self.directory.mkdir(parents=True, exist_ok=True)
        index = self.index
        config = qe.EdgeConfig(
            vectors={
                DENSE_VECTOR: qe.EdgeVectorParams(
                    size=meta.encoder.dimension, distance=qe.Distance.Cosine
                )
            },
            sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
            hnsw_config=qe.HnswIndexConfig(
                m=index.hnsw_m,
                ef_construct=index.hnsw_ef_construct,
                full_scan_threshold=index.full_scan_threshold_kb,
            ),
            quantization_config=qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8)
            if index.int8_quantization
            else None,
            max_search_threads=index.search_threads,
        )
        self._shard = _edge_call(
            self.directory, qe.EdgeShard.create, str(self.directory / SHARD_DIR), config
        )
        for name, kind in INDEXED_FIELDS.items():
            schema = _CACHED_INDEX if name in _CACHED_INDEX_FIELDS else _INDEX_TYPES[kind]
            self._shard.update(qe.UpdateOperation.create_field_index(name, schema))
        # Metadata last: a directory with metadata always holds a complete empty collection.
        self.write_meta(meta)

    def write_meta(self, meta: CollectionMeta) -> None:
        _write_json(self.directory / META_FILE, meta.to_dict(), indent=2)

    def read_vocabulary(self) -> dict[str, int] | None:
        path = self.directory / VOCABULARY_FILE
        try:
            return dict(json.loads(path.read_bytes())["words"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CollectionError(f"cannot read {path}: {exc}") from exc

    def write_vocabulary(self, words: dict[str, int]) -> None:
        _write_json(self.directory / VOCABULARY_FILE, {"words": words})

    def read_fusion(self) -> dict[str, Any] | None:
        path = self.directory / FUSION_FILE
        try:
            return dict(json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise CollectionError(f"cannot read {path}: {exc}") from exc

    def write_fusion(self, model: dict[str, Any]) -> None:
        _write_json(self.directory / FUSION_FILE, model)

    def drop(self) -> None:
        self.close()
        if self.directory.exists():
            shutil.rmtree(self.directory)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The writer lock, which an ingest holds from start to end, its `--recreate` build
        and swap included: a second writer would clear the first one's build directory, or
        write into a collection about to be swapped out (Edge's own lock is per shard, and
        a build is another shard). Queries never take it.

        An advisory `flock` on `.<name>.lock` beside the collection, not in its directory,
        which `--recreate` replaces. The kernel releases it when its process dies, so a
        killed ingest leaves no stale lock; the file stays, and names the last holder's pid.
        Windows has no `fcntl`: there is no lock, and two ingests must not run at once.
        """
        if fcntl is None:
            yield
            return
        path = self._sibling("lock")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = path.open("a+", encoding="utf-8")
        except OSError as exc:
            raise CollectionError(f"cannot create the lock file {path}: {exc}") from exc
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.seek(0)
                pid = lock.read().strip()
                raise CollectionBusyError(
                    f"collection '{self.directory.name}' at {self.directory} is being written "
                    f"by another ingest{f' (process {pid})' if pid else ''}: wait for it to "
                    f"finish (lock file {path})"
                ) from None
            except OSError as exc:  # a file system without locks
                raise CollectionError(f"cannot lock {path}: {exc}") from exc
            lock.truncate(0)
            lock.write(f"{os.getpid()}\n")
            lock.flush()
            yield  # closing the file releases the lock

    def replacement(self) -> EdgeBackend:
        staging = self._sibling("recreating")
        if staging.exists():  # left by a --recreate that was killed: writing() is held
            shutil.rmtree(staging)
        return EdgeBackend(staging, self.index)

    def replace_with(self, built: Backend) -> None:
        """Two renames: the old collection steps aside, the new one takes its place."""
        assert isinstance(built, EdgeBackend)
        built.close()
        self.close()
        old = self._sibling("replaced")
        if old.exists():
            shutil.rmtree(old)
        if self.directory.exists():
            self.directory.rename(old)
        built.directory.rename(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    def _sibling(self, purpose: str) -> Path:
        return self.directory.with_name(f".{self.directory.name}.{purpose}")

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def finish_writes(self) -> None:
        shard = self._open()
        shard.flush()
        shard.optimize()

    def load_index(self) -> None:
        self._open()

    # -- data --------------------------------------------------------------------
    def upsert(self, points: Sequence[ProductPoint]) -> None:
        if not points:
            return
        edge_points = [
            qe.Point(
                p.id,
                {
                    DENSE_VECTOR: p.dense.tolist(),
                    SPARSE_VECTOR: qe.SparseVector(p.sparse.indices, p.sparse.values),
                },
                p.payload,
            )
            for p in points
        ]
        self._open().update(qe.UpdateOperation.upsert_points(edge_points))

    def point_ids(self) -> Iterator[str]:
        shard, offset = self._open(), None
        while True:
            page = qe.ScrollRequest(offset, ID_PAGE, with_payload=False, with_vector=False)
            records, offset = shard.scroll(page)
            yield from (str(r.id) for r in records)
            if offset is None:
                return

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._open().update(qe.UpdateOperation.delete_points(list(ids)))

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = self._open().retrieve(list(ids), with_payload=True, with_vector=False)
        return {str(r.id): r.payload or {} for r in records}

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        flt = build_filter(conditions, _MODELS)
        return self._open().count(qe.CountRequest(exact=True, filter=flt))

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        flt = build_filter(conditions, _MODELS)
        response = self._open().facet(qe.FacetRequest(field, limit=limit, exact=True, filter=flt))
        return by_count([FacetCount(hit.value, hit.count) for hit in response.hits])

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        flt = build_filter(conditions, _MODELS)
        ends = []
        for direction in (qe.Direction.Asc, qe.Direction.Desc):
            order = qe.OrderBy(field, direction=direction)
            request = qe.ScrollRequest(
                limit=1, filter=flt, with_payload=[field], with_vector=False, order_by=order
            )
            records, _ = self._open().scroll(request)
            ends += [r.order_value for r in records]
        return ValueRange(*ends) if ends else None

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        shard = self._open()
        built = [_query_request(r) for r in requests]
        if len(built) == 1:
            results = [shard.query(built[0])]
        else:
            results = shard.query_batch(qe.QueryBatchRequest(built))
        return [hits_by_score(points) for points in results]

    def _open(self) -> qe.EdgeShard:
        if self._shard is None:
            shard_dir = self.directory / SHARD_DIR
            if not shard_dir.exists():
                raise CollectionError(
                    f"no collection at {self.directory}: run `shopsearch ingest CATALOG` first"
                )
            _read_ahead(shard_dir)
            self._shard = _edge_call(self.directory, qe.EdgeShard.load, str(shard_dir))
        return self._shard


# Read lazily by Edge (payloads are stored on disk; sparse vectors are searched through their
# inverted index): reading them ahead only adds I/O.
_LAZY_STORAGE = ("payload_storage", f"vector_storage-{SPARSE_VECTOR}")


# Linux reads at most the device's read-ahead window for one POSIX_FADV_WILLNEED call (the
# larger of read_ahead_kb and max_sectors_kb): a whole-file advice read only the first 8 MB of
# each file on this project's machine, and can read as little as 128 KB (the default
# read_ahead_kb) elsewhere. Advising step by step reads every byte.
_READ_AHEAD_STEP = 128 * 1024


def _read_ahead(shard_dir: Path) -> None:
    """Ask the kernel to start reading the shard's files before Edge loads them.

    Edge copies vectors, the HNSW graph and payload indexes into RAM, then drops each file
    from the page cache (posix_fadvise DONTNEED), and drops the rest when it closes the
    shard. Every process start therefore reads them from disk again, page fault by page
    fault. Read ahead first, the faults find the pages cached: a cold `shopsearch query` on
    the 55k catalog takes 0.38 s, against 0.64 with one whole-file advice per file (medians
    of 10 interleaved runs; benchmarks/RESULTS.md section 4). Best effort: a file the
    kernel cannot read ahead is left to Edge, which reports what it cannot read.
    """
    if not hasattr(os, "posix_fadvise"):  # not on macOS
        return
    for directory, subdirs, files in os.walk(shard_dir / "segments"):
        subdirs[:] = [d for d in subdirs if d not in _LAZY_STORAGE]
        for name in files:
            try:
                fd = os.open(os.path.join(directory, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                with contextlib.suppress(OSError):
                    for offset in range(0, os.fstat(fd).st_size, _READ_AHEAD_STEP):
                        os.posix_fadvise(fd, offset, _READ_AHEAD_STEP, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)


def _edge_call(directory: Path, fn: Callable[..., qe.EdgeShard], *args: Any) -> qe.EdgeShard:
    """Open or create a shard; Edge raises a bare Exception, which we name."""
    try:
        return fn(*args)
    except Exception as exc:
        if "WouldBlock" in str(exc):
            raise CollectionBusyError(
                f"the collection at {directory} is open in another process (an ingest?); "
                "embedded Qdrant Edge allows one process at a time: wait for it, or use a "
                "Qdrant server (--qdrant-url) for concurrent access"
            ) from exc
        raise CollectionError(f"cannot open the collection at {directory}: {exc}") from exc


def _query_request(req: SearchRequest) -> qe.QueryRequest:
    flt = build_filter(req.conditions, _MODELS)
    params = qe.SearchParams(
        exact=req.exact,
        hnsw_ef=req.hnsw_ef,
        quantization=qe.QuantizationSearchParams(rescore=True, oversampling=QUANTIZED_OVERSAMPLING),
    )
    common: dict[str, Any] = {"limit": req.limit, "with_payload": req.with_payload}
    if req.with_terms:
        common["with_vector"] = [SPARSE_VECTOR]
    if req.mode is SearchMode.DENSE:
        return qe.QueryRequest(query=_dense(req), params=params, filter=flt, **common)
    if req.mode is SearchMode.BM25:
        return qe.QueryRequest(query=_sparse(req.sparse), filter=flt, **common)
    if req.fusion is FusionMethod.RRF:
        fusion = qe.Fusion.Rrf(k=RRF_K, weights=rrf_weights(req.bm25_weight))
    else:
        fusion = qe.Fusion.Dbsf()
    prefetches = [
        qe.Prefetch(limit=req.candidates, query=_dense(req), params=params, filter=flt),
        qe.Prefetch(limit=req.candidates, query=_sparse(req.sparse), filter=flt),
    ]
    # The filter goes into the prefetches only: every fused candidate already passed it, and
    # the same filter at the root as well made each prefetch check it twice (+0.12 ms a query).
    return qe.QueryRequest(query=fusion, prefetches=prefetches, **common)


def _dense(req: SearchRequest) -> qe.Query:
    assert req.dense is not None, "dense/hybrid search needs a query vector"
    return qe.Query.Nearest(req.dense.tolist(), using=DENSE_VECTOR)


def _sparse(sparse: SparseVec | None) -> qe.Query:
    assert sparse is not None, "bm25/hybrid search needs a sparse query vector"
    return qe.Query.Nearest(qe.SparseVector(sparse.indices, sparse.values), using=SPARSE_VECTOR)


def _write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """All or nothing: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
