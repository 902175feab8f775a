"""Embedded backend: Qdrant Edge, the real Qdrant engine in-process.

The default because it needs no server and is fast at catalog scale (HNSW, payload
indexes, BM25 with IDF, fusion, WAL). Layout of a collection directory:
    <dir>/shard/            the Edge shard
    <dir>/shopsearch.json   CollectionMeta (encoder, BM25 settings, template)
    <dir>/vocabulary.json   {"words": {word: products using it}}, for typo tolerance
    <dir>/fusion.json       the learned fusion model, once `shopsearch fusion fit` made one
(the JSON files are the collection's `Document`s). `ingest --recreate` builds the new
collection in `.<name>.recreating` beside <dir>, and renames it to <dir> once complete (the
old one passes through `.<name>.replaced`). An ingest holds `.<name>.lock`, beside <dir>
too, as its writer lock (`EdgeBackend.writing`).
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
from shopsearch.store.backend import Hit, IndexSettings, ProductPoint, SearchRequest, hits_by_score
from shopsearch.store.conditions import Condition, build_filter
from shopsearch.store.counts import FacetCount, ValueRange, by_count
from shopsearch.store.documents import write_meta
from shopsearch.store.schema import SPARSE_VECTOR, CollectionMeta, Document, FieldType

try:
    import fcntl
except ImportError:  # Windows: EdgeBackend.writing locks nothing
    fcntl = None  # type: ignore[assignment]

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

    def nearest(self, vector: Any, using: str) -> dict[str, Any]:
        return {"query": qe.Query.Nearest(vector, using=using)}  # the query names its vector

    def rrf(self, k: int, weights: list[float] | None) -> qe.Fusion:
        return qe.Fusion.Rrf(k=k, weights=weights)

    def dbsf(self) -> qe.Fusion:
        return qe.Fusion.Dbsf()

    def int8(self) -> qe.ScalarQuantizationConfig:
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8)

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
                message = f"{self.directory} holds a shard without {path.name}"
                raise CollectionError(message) from None
            return None
        except (OSError, ValueError) as exc:
            raise CollectionError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise CollectionError(f"cannot read {path}: not a JSON object")
        return data

    def write_document(self, document: Document, data: dict[str, Any]) -> None:
        indent = 2 if document is Document.META else None  # the one a person reads
        _write_json(self.directory / document.file, data, indent)

    def create(self, meta: CollectionMeta) -> None:
        shard_dir = self.directory / SHARD_DIR
        if shard_dir.exists():
            raise CollectionError(f"a collection already exists at {self.directory}")
        self.directory.mkdir(parents=True, exist_ok=True)
        config = qe.EdgeConfig(
            **qdrant_requests.collection_config(meta, self.index, EDGE_MODELS),
            max_search_threads=self.index.search_threads,
        )
        self._shard = _edge_call(self.directory, qe.EdgeShard.create, str(shard_dir), config)
        self._changed = True
        for name, schema in qdrant_requests.payload_indexes(EDGE_MODELS).items():
            self._shard.update(qe.UpdateOperation.create_field_index(name, schema))
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
        writes nothing."""
        with self._writer_lock():
            yield
            self._finish_writes()

    @contextlib.contextmanager
    def rebuilding(self) -> Iterator[EdgeBackend]:
        """A fresh collection in `.<name>.recreating`, finished and then swapped in by two
        renames: the old collection steps aside, the new one takes its place. What a killed
        run left there is cleared first (`writing()`, held, keeps other writers out). A build
        that fails is deleted; a block that created nothing leaves the old collection, as a
        server's does."""
        built = EdgeBackend(self._sibling("recreating"), self.index)
        if built.directory.exists():
            shutil.rmtree(built.directory)
        try:
            yield built
            built._finish_writes()
        except BaseException:
            built.drop()
            raise
        if built.directory.exists():
            self._swap_in(built)

    def _swap_in(self, built: EdgeBackend) -> None:
        built.close()
        self.close()
        old = self._sibling("replaced")
        if old.exists():
            shutil.rmtree(old)
        if self.directory.exists():
            self.directory.rename(old)
        built.directory.rename(self.directory)
        shutil.rmtree(old, ignore_errors=True)

    @contextlib.contextmanager
    def _writer_lock(self) -> Iterator[None]:
        """Held from an ingest's start to its end, its `--recreate` build and swap included:
        a second writer would clear the first one's build directory, or write into a
        collection about to be swapped out (Edge's own lock is per shard, and a build is
        another shard). Queries never take it.

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

    def _finish_writes(self) -> None:
        if self._changed or self._shard is not None:
            shard = self.shard()
            shard.flush()
            shard.optimize()
            self._changed = False

    def _sibling(self, purpose: str) -> Path:
        return self.directory.with_name(f".{self.directory.name}.{purpose}")

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

    def rebuild_under_way(self) -> bool:
        """Whether an `ingest --recreate` is building this collection's replacement now: its
        build directory exists and its writer lock is held."""
        if fcntl is None or not self._sibling("recreating").exists():
            return False
        try:
            with self._sibling("lock").open("a+", encoding="utf-8") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def announce_holder(self, description: str) -> None:
        """Say, beside the collection, which process holds its shard open and how to reach
        it, so that a command that finds the shard locked names the holder and what to do
        (`_edge_call`). The note names this process, and outlives a reopening of the
        collection after a reindex; `withdraw_holder` removes it."""
        _write_json(self._sibling("holder"), {"pid": os.getpid(), "holder": description})

    def withdraw_holder(self) -> None:
        """Remove this process's holder note (`announce_holder`)."""
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            note = self._sibling("holder")
            if json.loads(note.read_bytes())["pid"] == os.getpid():
                note.unlink()

    def close(self) -> None:
        if self._shard is not None:
            self._shard.close()
            self._shard = None

    def load_index(self) -> None:
        """Load the shard now (`backend.warm_up`): Edge copies vectors, graph and payload
        indexes into RAM as it loads, holding the GIL."""
        self.shard()

    def shard(self) -> qe.EdgeShard:
        """The Edge shard, loaded on first use. Public for code that measures the engine
        beneath the `Backend` protocol (benchmarks/); the product goes through the protocol."""
        if self._shard is None:
            shard_dir = self.directory / SHARD_DIR
            if not shard_dir.exists():
                raise CollectionError(
                    f"no collection at {self.directory}: run `shopsearch ingest CATALOG` first"
                )
            _read_ahead(shard_dir)
            self._shard = _edge_call(self.directory, qe.EdgeShard.load, str(shard_dir))
        return self._shard

    # -- data --------------------------------------------------------------------
    def upsert(self, points: Sequence[ProductPoint]) -> None:
        if points:
            edge_points = [
                qe.Point(p.id, qdrant_requests.point_vectors(p, EDGE_MODELS), p.payload)
                for p in points
            ]
            self._changed = True
            self.shard().update(qe.UpdateOperation.upsert_points(edge_points))

    def point_ids(self) -> Iterator[str]:
        return qdrant_requests.scrolled_ids(self._scroll)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            self._changed = True
            self.shard().update(qe.UpdateOperation.delete_points(list(ids)))

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = self.shard().retrieve(list(ids), with_payload=True, with_vector=False)
        return {str(r.id): r.payload or {} for r in records}

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        flt = build_filter(conditions, EDGE_MODELS)
        return self.shard().count(qe.CountRequest(exact=True, filter=flt))

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        flt = build_filter(conditions, EDGE_MODELS)
        request = qe.FacetRequest(field, limit=limit, exact=True, filter=flt)
        return by_count(self.shard().facet(request).hits)

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        return qdrant_requests.value_range(self._scroll, field, conditions, EDGE_MODELS)

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        shard = self.shard()
        built = [qdrant_requests.query_request(r, EDGE_MODELS) for r in requests]
        if len(built) == 1:
            results = [shard.query(built[0])]
        else:
            results = shard.query_batch(qe.QueryBatchRequest(built))
        return [hits_by_score(points) for points in results]

    def _scroll(self, **request: Any) -> tuple[list[Any], Any]:
        """`qdrant_requests.Scroll` on this shard."""
        return self.shard().scroll(qe.ScrollRequest(with_vector=False, **request))


# Read lazily by Edge (payloads are stored on disk; sparse vectors are searched through their
# inverted index): reading them ahead only adds I/O.
_LAZY_STORAGE = ("payload_storage", f"vector_storage-{SPARSE_VECTOR}")


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
            raise CollectionBusyError(_busy_message(directory)) from exc
        raise CollectionError(f"cannot open the collection at {directory}: {exc}") from exc


def _busy_message(directory: Path) -> str:
    """Why a shard is locked: the holder a long-running process announced beside it
    (`announce_holder`), when that process still runs; else another process unnamed."""
    note_path = directory.with_name(f".{directory.name}.holder")
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        note = json.loads(note_path.read_bytes())
        pid = int(note["pid"])
        os.kill(pid, 0)  # raises when no such process runs
        return (
            f"the collection at {directory} is held by {note['holder']} (process {pid}); "
            "embedded Qdrant Edge lets one process open a collection: send updates to that "
            "service (PUT /products, DELETE /products/ID), run `ingest --recreate` (which "
            "the service picks up), or stop it first"
        )
    return (
        f"the collection at {directory} is open in another process; embedded Qdrant Edge "
        "lets one process open a collection at a time: wait for it, or use a Qdrant server "
        "(--qdrant-url) for concurrent access"
    )


def _write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """All or nothing: a reader never sees a half-written file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)
