"""Embedded backend: Qdrant Edge, the real Qdrant engine in-process.

The default because it needs no server and is fast at catalog scale (HNSW, payload
indexes, BM25 with IDF, fusion, WAL). Layout of a collection directory:
    <dir>/shard/            the Edge shard
    <dir>/shopsearch.json   CollectionMeta (encoder, BM25 settings, template)
    <dir>/vocabulary.json   {"words": {word: products using it}}, for typo tolerance
    <dir>/fusion.json       the learned fusion model, once `shopsearch fusion fit` made one
(the JSON files are the collection's `Document`s, each replaced whole). A new collection is
created in `.<name>.creating` beside <dir> and renamed to <dir> once it holds its shard,
payload indexes and metadata, so a collection directory is never half made
(`shopsearch.store.atomic`). `ingest --recreate` builds the new collection in
`.<name>.recreating`, and renames it to <dir> once complete (the old one passes through
`.<name>.replaced`).

This module drives Edge: creating, opening, writing and searching a shard, and naming what
Edge reports as a `CollectionError`. Two neighbours keep what Edge leaves to its caller:
- `shopsearch.store.edge_lock`: one process at a time opens a shard (Edge's own lock comes
  too late to protect it), and an ingest holds `.<name>.lock` as its writer lock;
- `shopsearch.store.disk_space`: a write the disk has no room for is refused before Edge
  makes it, since Edge writes through memory maps and dies of SIGBUS on a full disk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from shopsearch.errors import CollectionBusyError, CollectionError
from shopsearch.store import qdrant_requests
from shopsearch.store.atomic import rename_into_place, sibling, swap_in, write_json
from shopsearch.store.backend import Hit, IndexSettings, ProductPoint, SearchRequest, hits_by_score
from shopsearch.store.conditions import Condition, build_filter
from shopsearch.store.counts import FacetCount, ValueRange, by_count
from shopsearch.store.disk_space import (
    LAZY_STORAGE,
    OPEN_RESERVE,
    ShardScan,
    check_space,
    check_writable,
    creation_bytes,
    disk_full,
    os_reason,
    points_bytes,
)
from shopsearch.store.documents import write_meta
from shopsearch.store.edge_lock import CollectionLock, busy_message
from shopsearch.store.schema import CollectionMeta, Document, FieldType

META_FILE = Document.META.file
VOCABULARY_FILE = Document.VOCABULARY.file
FUSION_FILE = Document.FUSION.file
SHARD_DIR = "shard"

# One value per product: an in-RAM index of these would be rebuilt on every shard load, a
# cost of every cold `shopsearch query`, for lookups no shopper filter makes. Served from the
# page cache instead, they leave filtered search as fast.
_CACHED_INDEX_FIELDS = ("product_id", "parent_id")
_CACHED_INDEX = qe.KeywordIndexParams(memory=qe.Memory.Cached)


class EdgeModels(qdrant_requests.Models):
    """qdrant_edge's spelling of the requests `shopsearch.store.qdrant_requests` builds."""

    Range = qe.RangeFloat
    VectorParams = qe.EdgeVectorParams
    SparseVectorParams = qe.EdgeSparseVectorParams
    HnswConfigDiff = qe.HnswIndexConfig

    @staticmethod
    def MatchValue(value: str | int | bool) -> qe.MatchValue:
        # qdrant-edge-py reads a Python bool as the integer 1/0 (bool subclasses int), so
        # `in_stock=true` would match nothing; numpy's bool is not an int and arrives as a bool.
        return qe.MatchValue(np.bool_(value) if isinstance(value, bool) else value)

    @staticmethod
    def HasIdCondition(has_id: list[str]) -> qe.HasIdCondition:
        return qe.HasIdCondition(point_ids=set(has_id))  # qdrant_edge takes a set

    def nearest(self, vector: Any, using: str) -> dict[str, Any]:
        return {"query": qe.Query.Nearest(vector, using=using)}  # the query names its vector

    def rrf(self, k: int, weights: list[float] | None) -> qe.Fusion:
        return qe.Fusion.Rrf(k=k, weights=weights)

    def dbsf(self) -> qe.Fusion:
        return qe.Fusion.Dbsf()

    def int8(self) -> qe.ScalarQuantizationConfig:
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8)

    def expression(self, op: str, *args: Any) -> Any:
        build = {
            "variable": qe.Expression.Variable,
            "constant": qe.Expression.Constant,
            "sum": qe.Expression.Sum,
            "mult": qe.Expression.Mult,
            "max": qe.Expression.Max,
            "div": qe.Expression.Div,
            "condition": qe.Expression.Condition,
        }
        return build[op](*args)

    def formula(self, expression: Any, defaults: dict[str, float]) -> qe.Formula:
        return qe.Formula(expression, defaults=defaults)

    def index_schema(self, field: str, kind: FieldType) -> Any:
        return _CACHED_INDEX if field in _CACHED_INDEX_FIELDS else super().index_schema(field, kind)


# Public for code that measures the engine beneath the protocol (benchmarks/): the filter
# models `build_filter` needs to query an Edge shard directly.
EDGE_MODELS = EdgeModels(qe, prefetch_field="prefetches")


class EdgeBackend:
    def __init__(self, directory: Path, index: IndexSettings | None = None) -> None:
        self.directory = Path(directory)
        self.index = index or IndexSettings()
        self._shard: qe.EdgeShard | None = None
        self._changed = False  # written since the shard was last flushed and optimised
        self._unindexed = 0  # `points_bytes` of the points written since then
        self._locks = CollectionLock(self.directory)
        # A directory no one else knows of (`rebuilding`'s, `create`'s own): created in place.
        self._scratch = False

    @property
    def location(self) -> str:
        return str(self.directory)

    # -- documents and lifecycle -------------------------------------------------
    def read_document(self, document: Document) -> dict[str, Any] | None:
        path = self.directory / document.file
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            if document is Document.META and (self.directory / SHARD_DIR).exists():
                message = (
                    f"{self.directory} holds a shard without {path.name}: not a collection "
                    "shopsearch made, or one whose creation was cut short by an older "
                    "version (an ingest clears it when its shard is empty)"
                )
                raise CollectionError(message) from None
            return None
        except (OSError, ValueError) as exc:
            raise CollectionError(f"cannot read {path}: {exc}") from exc
        except RecursionError:  # JSON nested deeper than the parser recurses
            raise CollectionError(f"cannot read {path}: JSON nested too deeply") from None
        if not isinstance(data, dict):
            raise CollectionError(f"cannot read {path}: not a JSON object")
        return data

    def write_document(self, document: Document, data: dict[str, Any]) -> None:
        indent = 2 if document is Document.META else None  # the one a person reads
        write_json(self.directory / document.file, data, indent)

    def create(self, meta: CollectionMeta) -> None:
        """Whole or not at all: the shard, its payload indexes and the metadata are made in
        `.<name>.creating` and renamed to the collection's name once complete, so that an
        ingest killed while creating leaves nothing under the name (the next one clears the
        leftover directory). Refused before anything is written when the disk cannot hold
        a new collection, and before the rename when it cannot hold one opened again."""
        if (self.directory / SHARD_DIR).exists():
            raise CollectionError(f"a collection already exists at {self.directory}")
        if self._scratch:
            self._create_here(meta)
            return
        self._locks.note_writes()  # readers leave the new collection to this ingest
        check_space(self.directory, creation_bytes(self.directory), "creating the collection")
        staged = EdgeBackend(sibling(self.directory, "creating"), self.index)
        staged._scratch = True
        try:
            shutil.rmtree(staged.directory, ignore_errors=True)
            staged._create_here(meta)
            staged.close()
            needed = ShardScan.of(staged.directory / SHARD_DIR).load_holes
            doing = "opening the new collection"
            check_space(self.directory, needed, doing, reserve=OPEN_RESERVE)
            rename_into_place(staged.directory, self.directory)
        except BaseException:
            staged.drop()
            raise
        self.shard()
        self._changed = True

    def _create_here(self, meta: CollectionMeta) -> None:
        check_space(self.directory, creation_bytes(self.directory), "creating a collection")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CollectionError(f"cannot create {self.directory}: {os_reason(exc)}") from exc
        self._locks.hold()
        config = qe.EdgeConfig(
            **qdrant_requests.collection_config(meta, self.index, EDGE_MODELS),
            max_search_threads=self.index.search_threads,
        )
        shard_dir = str(self.directory / SHARD_DIR)
        self._shard = _edge_call(self.directory, qe.EdgeShard.create, shard_dir, config)
        self._changed = True
        for name, schema in qdrant_requests.payload_indexes(EDGE_MODELS, meta).items():
            self._edge_op("creating the payload indexes", self._shard.update,
                          qe.UpdateOperation.create_field_index(name, schema))  # fmt: skip
        # Metadata last: a directory with metadata always holds a complete empty collection.
        write_meta(self, meta)

    def drop(self) -> None:
        self.close()
        self._changed = False
        if self.directory.exists():
            shutil.rmtree(self.directory)

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """The writer lock, then, once the block succeeds, a flush and an optimise of the
        shard this backend wrote or opened: Edge builds the HNSW graph and the quantised
        vectors then, not at each upsert, so the collection searches at full speed from its
        next load. A shard only read is finished too, since what an interrupted ingest
        upserted is left for the run that resumes it, which finds those products stored and
        writes nothing. What a killed creation left is cleared first."""
        with self._locks.writer():
            self._clear_unfinished()
            yield
            self._finish_writes()

    def _clear_unfinished(self) -> None:
        """Remove what an ingest killed while creating the collection left: its staging
        directory, or, where a collection was created in place, a shard without metadata
        that holds no product (a creation cut short before its metadata was written)."""
        shutil.rmtree(sibling(self.directory, "creating"), ignore_errors=True)
        if self._shard is not None or (self.directory / META_FILE).exists():
            return
        if not (self.directory / SHARD_DIR).exists():
            return
        try:
            empty = self.count() == 0
        except CollectionBusyError:
            raise
        except Exception:  # a shard that cannot be read is left to the error that names it
            empty = False
        self.close()
        if empty:
            shutil.rmtree(self.directory)

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[EdgeBackend]:
        """A fresh collection in `.<name>.recreating`, finished and then swapped in by two
        renames: the old collection steps aside, the new one takes its place. What a killed
        run left there is cleared first (`writing()`, held, keeps other writers out). A build
        that fails is deleted; a block that created nothing leaves the old collection, as a
        server's does. Readers go on opening the old collection meanwhile: this ingest never
        opens it, so its writer lock never says that it writes it."""
        built = EdgeBackend(sibling(self.directory, "recreating"), self.index)
        built._scratch = True
        if built.directory.exists():
            shutil.rmtree(built.directory)
        try:
            yield built
            built._finish_writes()
        except BaseException:
            built.drop()
            raise
        if built.directory.exists():
            built.close()
            self.close()
            swap_in(built.directory, self.directory)

    def _finish_writes(self) -> None:
        if self._changed or self._shard is not None:
            shard = self.shard()
            self._edge_op("flushing the collection", shard.flush)
            # The optimiser builds indexed segments from the points written since: a copy of
            # them, with their graph and quantised vectors, before the old segment goes.
            check_space(
                self.directory,
                self._unindexed,
                "building the search index",
                "the products are stored, unindexed: run the ingest again once there is "
                "room, and it builds the index",
            )
            self._edge_op("building the search index", shard.optimize)
            self._changed = False
            self._unindexed = 0

    def reserve_for(self, points: Sequence[ProductPoint], total: int) -> None:
        """Refuse now, before a new collection is filled, when the disk cannot hold `total`
        products like `points`, rather than part way through."""
        if points and total > len(points):
            needed = 3 * points_bytes(points) * total // len(points)
            check_space(self.directory, needed, f"ingesting {total} products")

    def _edge_op(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A write to the shard; Edge raises a bare Exception, or panics, which we name."""
        try:
            return fn(*args)
        except BaseException as exc:
            if not _edge_failed(exc):
                raise
            raise _edge_error(self.directory, doing, exc) from exc

    def _edge_read(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A read of the shard: its errors pass as Edge raises them (a search's own, such as
        a filter on a field of another type), but a panic on damaged files is named as
        `_edge_op` names it, not left to escape `except Exception` as a traceback."""
        try:
            return fn(*args)
        except BaseException as exc:
            if isinstance(exc, Exception) or not _edge_failed(exc):
                raise
            raise _edge_error(self.directory, doing, exc) from exc

    # -- a long-running holder (`shopsearch serve`) ---------------------------------
    def identity(self) -> tuple[int, int] | None:
        """Which directory holds the collection now (device, inode), None while none does:
        `ingest --recreate` swaps another one in under the same name, and a process that
        holds the collection open notices the change and reopens it."""
        try:
            stat = os.stat(self.directory)
        except FileNotFoundError:
            return None
        return (stat.st_dev, stat.st_ino)

    # The rest of `Reindexable` is the collection lock's to say (`CollectionLock`).
    def rebuild_under_way(self) -> bool:
        return self._locks.rebuild_under_way()

    def announce_holder(self, description: str) -> None:
        self._locks.announce_holder(description)

    def withdraw_holder(self) -> None:
        self._locks.withdraw_holder()

    def close(self) -> None:
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                self._edge_op("closing the collection", shard.close)
        finally:
            self._locks.release()  # after Edge has flushed and let go of the files

    def load_index(self) -> None:
        """Load the shard now (`backend.warm_up`): Edge copies vectors, graph and payload
        indexes into RAM as it loads, holding the GIL."""
        self.shard()

    def shard(self) -> qe.EdgeShard:
        """The Edge shard, loaded on first use. Public for code that measures the engine
        beneath the `Backend` protocol (benchmarks/); the product goes through the protocol."""
        if self._shard is None:
            shard_dir = self.directory / SHARD_DIR
            self._locks.hold()
            try:
                if not shard_dir.exists():
                    raise self._locks.missing()
                scan = ShardScan.of(shard_dir)
                check_writable(self.directory, scan)
                doing = "opening the collection"
                check_space(self.directory, scan.load_holes, doing, reserve=OPEN_RESERVE)
                _read_ahead(shard_dir)
                self._shard = _edge_call(self.directory, qe.EdgeShard.load, str(shard_dir))
            except BaseException:
                self._locks.release()
                raise
        return self._shard

    # -- data --------------------------------------------------------------------
    def upsert(self, points: Sequence[ProductPoint]) -> None:
        if points:
            shard = self.shard()
            size = points_bytes(points)
            # In the WAL and the segment now, and in the optimised segment at the end, where
            # those written before go too: a disk that cannot hold that stops the ingest here.
            check_space(
                self.directory,
                3 * size + self._unindexed,
                f"writing {len(points)} products",
                "what was written before is stored: run the ingest again once there is room, "
                "and it carries on",
            )
            edge_points = [
                qe.Point(p.id, qdrant_requests.point_vectors(p, EDGE_MODELS), p.payload)
                for p in points
            ]
            self._changed = True
            self._unindexed += size
            operation = qe.UpdateOperation.upsert_points(edge_points)
            self._edge_op("writing products", shard.update, operation)

    def point_ids(self) -> Iterator[str]:
        return qdrant_requests.scrolled_ids(self._scroll)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            shard = self.shard()
            check_space(self.directory, 0, f"deleting {len(ids)} products")
            self._changed = True
            operation = qe.UpdateOperation.delete_points(list(ids))
            self._edge_op("deleting products", shard.update, operation)

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        shard = self.shard()
        records = self._edge_read(
            "reading products",
            lambda: shard.retrieve(list(ids), with_payload=True, with_vector=False),
        )
        return {str(r.id): r.payload or {} for r in records}

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        flt = build_filter(conditions, EDGE_MODELS)
        request = qe.CountRequest(exact=True, filter=flt)
        return self._edge_read("counting products", self.shard().count, request)

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        flt = build_filter(conditions, EDGE_MODELS)
        request = qe.FacetRequest(field, limit=limit, exact=True, filter=flt)
        return by_count(self._edge_read("counting values", self.shard().facet, request).hits)

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        return qdrant_requests.value_range(self._scroll, field, conditions, EDGE_MODELS)

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        shard = self.shard()
        built = [qdrant_requests.query_request(r, EDGE_MODELS) for r in requests]
        if len(built) == 1:
            results = [self._edge_read("searching", shard.query, built[0])]
        else:
            batch = qe.QueryBatchRequest(built)
            results = self._edge_read("searching", shard.query_batch, batch)
        return [hits_by_score(points) for points in results]

    def _scroll(self, **request: Any) -> tuple[list[Any], Any]:
        """`qdrant_requests.Scroll` on this shard."""
        scroll = qe.ScrollRequest(with_vector=False, **request)
        return self._edge_read("reading products", self.shard().scroll, scroll)


# Linux reads at most the device's read-ahead window for one POSIX_FADV_WILLNEED call (the
# larger of read_ahead_kb and max_sectors_kb), which can be as little as read_ahead_kb's
# default of 128 KB: a whole-file advice reads the start of each file. Advising step by step
# reads every byte.
_READ_AHEAD_STEP = 128 * 1024


def _read_ahead(shard_dir: Path) -> None:
    """Ask the kernel to start reading the shard's files before Edge loads them.

    Edge copies vectors, the HNSW graph and payload indexes into RAM, then drops each file
    from the page cache (posix_fadvise DONTNEED), and drops the rest when it closes the
    shard. Every process start therefore reads them from disk again, page fault by page
    fault. Read ahead first, the faults find the pages cached, which is much of a cold
    `shopsearch query`'s time (benchmarks/RESULTS.md section 4). Best effort: a file the
    kernel cannot read ahead is left to Edge, which reports what it cannot read.
    """
    if not hasattr(os, "posix_fadvise"):  # not on macOS
        return
    for directory, subdirs, files in os.walk(shard_dir / "segments"):
        subdirs[:] = [d for d in subdirs if d not in LAZY_STORAGE]  # reading them only adds I/O
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
    """Open or create a shard; Edge raises a bare Exception, or panics, which we name."""
    try:
        return fn(*args)
    except BaseException as exc:
        if not _edge_failed(exc):
            raise
        if "WouldBlock" in str(exc):
            raise CollectionBusyError(busy_message(directory)) from exc
        raise _edge_error(directory, "opening the collection", exc) from exc


def _edge_failed(exc: BaseException) -> bool:
    """Whether `exc` is Edge's report of a failure: an Exception, or a panic. Edge panics on
    some damaged files (an emptied `status.dat` of a vector storage) rather than return an
    error, and pyo3 raises a panic as `pyo3_runtime.PanicException`, which derives from
    BaseException so that `except Exception` lets it through, and which no importable
    module exports: it is known by its type's module and name. KeyboardInterrupt and
    SystemExit are neither, and pass."""
    if isinstance(exc, Exception):
        return True
    kind = type(exc)
    return kind.__module__ == "pyo3_runtime" and kind.__name__ == "PanicException"


def _edge_error(directory: Path, doing: str, exc: BaseException) -> CollectionError:
    if not isinstance(exc, Exception):  # a panic: Edge could not make sense of its files
        said = (str(exc).strip().splitlines() or ["no message"])[0][:200]
        where = f"collection '{directory.name}' at {directory}"
        failed = (
            f"cannot open {where}"
            if doing == "opening the collection"
            else f"{doing} failed in {where}"
        )
        return CollectionError(
            f"{failed}: Qdrant Edge panicked on its files ({said}), which are damaged; "
            f"rebuild it from its catalog (`shopsearch ingest CATALOG -c {directory.name} "
            f"--recreate`), or remove {directory}"
        )
    if disk_full(exc):
        return CollectionError(
            f"not enough disk space at {directory}: {doing} failed ({exc}). Free some space, "
            "and run the command again"
        )
    if doing == "opening the collection":
        return CollectionError(f"cannot open the collection at {directory}: {exc}")
    return CollectionError(f"{doing} failed in the collection at {directory}: {exc}")
