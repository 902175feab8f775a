"""Embedded backend: Qdrant Edge, the real Qdrant engine in-process.

The default because it needs no server and is fast at catalog scale (HNSW, payload
indexes, BM25 with IDF, fusion, WAL). Layout of a collection directory:
    <dir>/shard/            the Edge shard
    <dir>/shopsearch.json   CollectionMeta (encoder, BM25 settings, template)
    <dir>/vocabulary.json   {"words": {word: products using it}}, for typo tolerance
    <dir>/fusion.json       the learned fusion model, once `shopsearch fusion fit` made one
(the JSON files are the collection's `Document`s). A new collection is created in
`.<name>.creating` beside <dir> and renamed to <dir> once it holds its shard, payload indexes
and metadata, so a collection directory is never half made. `ingest --recreate` builds the
new collection in `.<name>.recreating`, and renames it to <dir> once complete (the old one
passes through `.<name>.replaced`). An ingest holds `.<name>.lock`, beside <dir> too, as its
writer lock (`EdgeBackend.writing`).

Concurrency: Edge lets one process open a shard, and its own lock (on the WAL) is taken only
after it has loaded, and repaired, every segment, so a second process opening a shard that
another one is writing rewrites that one's files under it. Every process that opens a shard
therefore first takes an exclusive `flock` on the collection directory (`_hold`) and
holds it until it closes the shard: opening is serialised, waiting a bounded time
(`SHOPSEARCH_LOCK_WAIT`), and a reader yields to an ingest that writes the collection.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from shopsearch.errors import CollectionBusyError, CollectionError, UsageError
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

# How long a command waits for a collection that another process has open before it gives
# up, in seconds (0: not at all): a query holds one for the moment of its search, an ingest
# for its whole run.
LOCK_WAIT_ENV = "SHOPSEARCH_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 10.0
_LOCK_POLL = 0.05

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
        self._unindexed = 0  # `_points_bytes` of the points written since then
        self._lock: int | None = None  # the locked directory's fd, while the shard is open
        self._writer_file: Any = None  # the writer lock's file, while `writing()` holds it
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
        if not isinstance(data, dict):
            raise CollectionError(f"cannot read {path}: not a JSON object")
        return data

    def write_document(self, document: Document, data: dict[str, Any]) -> None:
        indent = 2 if document is Document.META else None  # the one a person reads
        _write_json(self.directory / document.file, data, indent)

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
        self._note_writer(_WRITES)  # readers leave the new collection to this ingest
        self._check_space(_creation_bytes(self.directory), "creating the collection")
        staged = EdgeBackend(self._sibling("creating"), self.index)
        staged._scratch = True
        try:
            shutil.rmtree(staged.directory, ignore_errors=True)
            staged._create_here(meta)
            staged.close()
            needed = _ShardScan.of(staged.directory / SHARD_DIR).load_holes
            self._check_space(needed, "opening the new collection", reserve=_OPEN_RESERVE)
            _rename_into_place(staged.directory, self.directory)
        except BaseException:
            staged.drop()
            raise
        self.shard()
        self._changed = True

    def _create_here(self, meta: CollectionMeta) -> None:
        self._check_space(_creation_bytes(self.directory), "creating a collection")
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CollectionError(f"cannot create {self.directory}: {_os_reason(exc)}") from exc
        self._hold()
        config = qe.EdgeConfig(
            **qdrant_requests.collection_config(meta, self.index, EDGE_MODELS),
            max_search_threads=self.index.search_threads,
        )
        shard_dir = str(self.directory / SHARD_DIR)
        self._shard = _edge_call(self.directory, qe.EdgeShard.create, shard_dir, config)
        self._changed = True
        for name, schema in qdrant_requests.payload_indexes(EDGE_MODELS).items():
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
        with self._writer_lock():
            self._clear_unfinished()
            yield
            self._finish_writes()

    def _clear_unfinished(self) -> None:
        """Remove what an ingest killed while creating the collection left: its staging
        directory, or, where a collection was created in place, a shard without metadata
        that holds no product (a creation cut short before its metadata was written)."""
        shutil.rmtree(self._sibling("creating"), ignore_errors=True)
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
        opens it, so its writer lock never says that it writes it (`_hold`)."""
        built = EdgeBackend(self._sibling("recreating"), self.index)
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
        another shard). Queries never take it, but look at it (`_writer_elsewhere`): once
        an ingest opens the collection's shard, they leave it to that ingest.

        An advisory `flock` on `.<name>.lock` beside the collection, not in its directory,
        which `--recreate` replaces. The kernel releases it when its process dies, so a
        killed ingest leaves no stale lock; the file stays, and names the last holder's pid
        (and `writes` once it opens the collection's shard). A reader that looks holds it
        shared for an instant, which a starting ingest waits out. Windows has no `fcntl`:
        there is no lock, and two ingests must not run at once.
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
            deadline = time.monotonic() + _WRITER_PROBE_GRACE
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() < deadline:
                        time.sleep(_LOCK_POLL / 5)
                        continue
                    lock.seek(0)
                    pid = lock.read().split()[:1]
                    raise CollectionBusyError(
                        f"collection '{self.directory.name}' at {self.directory} is being "
                        f"written by another ingest{f' (process {pid[0]})' if pid else ''}: "
                        f"wait for it to finish (lock file {path})"
                    ) from None
                except OSError as exc:  # a file system without locks
                    raise CollectionError(f"cannot lock {path}: {exc}") from exc
            self._writer_file = lock
            self._note_writer("")
            try:
                yield  # closing the file releases the lock
            finally:
                self._writer_file = None

    def _note_writer(self, mode: str) -> None:
        """Record in the writer lock this process and what it does: `_WRITES` once it opens
        (or creates) the collection's own shard."""
        lock = self._writer_file
        if lock is not None:
            lock.truncate(0)
            lock.write(f"{os.getpid()} {mode}".rstrip() + "\n")
            lock.flush()

    def _finish_writes(self) -> None:
        if self._changed or self._shard is not None:
            shard = self.shard()
            self._edge_op("flushing the collection", shard.flush)
            # The optimiser builds indexed segments from the points written since: a copy of
            # them, with their graph and quantised vectors, before the old segment goes.
            self._check_space(
                self._unindexed,
                "building the search index",
                "the products are stored, unindexed: run the ingest again once there is "
                "room, and it builds the index",
            )
            self._edge_op("building the search index", shard.optimize)
            self._changed = False
            self._unindexed = 0

    def _sibling(self, purpose: str) -> Path:
        return self.directory.with_name(f".{self.directory.name}.{purpose}")

    # -- who has the shard open --------------------------------------------------------
    def _hold(self) -> None:
        """Take the collection directory's lock before Edge touches the shard, and keep it
        until `close()` (see the module docstring). A process that has the shard open is
        waited for, up to `SHOPSEARCH_LOCK_WAIT` seconds, polling; so is an ingest that
        writes the collection, which a reader lets go first even while the shard is free.
        A service, which holds its collection for its life, or this process, is not waited
        for. The lock follows the directory, not its name: one locked just as
        `ingest --recreate` swapped another in is let go, and the new one locked."""
        if fcntl is None or self._lock is not None:
            return
        if self._writer_file is not None:  # an ingest, about to write the collection
            self._note_writer(_WRITES)
        wait = _lock_wait()
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = os.open(self.directory, os.O_RDONLY)
            except FileNotFoundError:
                raise self._missing() from None
            except OSError as exc:
                raise CollectionError(
                    f"cannot open the collection at {self.directory}: {_os_reason(exc)}"
                ) from exc
            holder = self._writer_elsewhere()
            if holder is None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = self._holder(fd)
                except OSError:  # a file system without locks: Edge's own remains
                    os.close(fd)
                    return
                else:
                    if _names(self.directory, fd):
                        self._lock = fd
                        return
                    os.close(fd)
                    continue
            os.close(fd)
            if holder.final or time.monotonic() >= deadline:
                waited = ""
                if wait and not holder.final:
                    waited = f" (waited {wait:g} s; {LOCK_WAIT_ENV} sets how long)"
                raise CollectionBusyError(holder.message + waited)
            time.sleep(_LOCK_POLL)

    def _release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _writer_elsewhere(self) -> _Holder | None:
        """The ingest writing this collection's shard from another process, if one is. The
        shard may be free for the moment (the ingest waits for a reader to close it): a
        reader leaves it to the ingest all the same, else readers arriving one after another
        could keep the ingest from it. An ingest that has not opened the shard yet, or
        never does (`--recreate` builds another), leaves it to readers."""
        writer = _writer_note(self._sibling("lock"))
        if writer is None:
            return None
        pid, mode = writer
        if pid == os.getpid() or mode != _WRITES:
            return None
        return _Holder(self._ingest_message(pid))

    def _holder(self, fd: int) -> _Holder:
        """Who has the locked directory `fd`, as far as can be told."""
        pid = _flock_holder(fd)
        if pid == os.getpid():
            return _Holder(f"the collection at {self.directory} is open in this process", True)
        writer = _writer_note(self._sibling("lock"))
        if (
            writer is not None
            and writer[0] != os.getpid()
            and (writer[1] == _WRITES or pid == writer[0])
            and pid in (None, writer[0])
        ):
            return _Holder(self._ingest_message(writer[0]))
        service = _service_pid(self._sibling("holder"))
        if service is not None and pid in (None, service):
            return _Holder(_busy_message(self.directory), final=True)
        who = f" (process {pid}: {_command_of(pid)})" if pid else ""
        return _Holder(
            f"the collection at {self.directory} is open in another process{who}; embedded "
            "Qdrant Edge lets one process open a collection at a time, and commands take "
            "turns: try again, or use a Qdrant server (--qdrant-url) for many concurrent "
            "readers"
        )

    def _ingest_message(self, pid: int | None) -> str:
        return (
            f"collection '{self.directory.name}' at {self.directory} is being written by an "
            f"ingest{f' (process {pid})' if pid else ''}: try again when it finishes"
        )

    def _missing(self) -> CollectionError:
        writer = _writer_note(self._sibling("lock"))
        if writer is not None and self._sibling("creating").exists():
            pid = f" (process {writer[0]})" if writer[0] else ""
            return CollectionBusyError(
                f"collection '{self.directory.name}' at {self.directory} is being created by "
                f"an ingest{pid}: try again when it finishes"
            )
        return CollectionError(
            f"no collection at {self.directory}: run `shopsearch ingest CATALOG` first"
        )

    # -- room on the disk --------------------------------------------------------------
    def reserve_for(self, points: Sequence[ProductPoint], total: int) -> None:
        """Refuse now, before a new collection is filled, when the disk cannot hold `total`
        products like `points`, rather than part way through."""
        if points and total > len(points):
            needed = 3 * _points_bytes(points) * total // len(points)
            self._check_space(needed, f"ingesting {total} products")

    def _check_space(
        self,
        needed: int,
        doing: str,
        outcome: str = "nothing was written",
        reserve: int | None = None,
    ) -> None:
        """Refuse `doing` when the file system holding the collection has less room than it
        needs: Edge writes through memory maps, and a write the disk has no room for kills
        the process (SIGBUS) with no message and a file half written. Beyond the estimate,
        a write keeps a `reserve` for what an estimate per point does not see: Edge grows
        its files in steps, and the documents beside the shard."""
        where = _existing(self.directory)
        try:
            stat = os.statvfs(where)
        except OSError:
            return
        free = stat.f_bavail * stat.f_frsize
        if reserve is None:
            reserve = _RESERVE_IN_MEMORY if _allocates_on_read(where) else _RESERVE
        if free >= needed + reserve:
            return
        raise CollectionError(
            f"not enough disk space at {self.directory}: {doing} needs about "
            f"{_size(needed + reserve)}, and {_size(free)} is free; {outcome}. Free some space, "
            "or keep the collection on a larger disk (--path, SHOPSEARCH_DATA_DIR)"
        )

    def _check_writable(self, scan: _ShardScan) -> None:
        where = scan.not_writable
        if where is None:
            return
        try:
            read_only_fs = bool(os.statvfs(where).f_flag & os.ST_RDONLY)
        except OSError:
            read_only_fs = False
        if read_only_fs:
            what, fix = "is on a read-only file system", "copy it to a writable disk (--path)"
        else:
            what = "cannot be written"
            fix = f"make it writable (chmod -R u+w {self.directory}), or search a writable copy"
        raise CollectionError(
            f"cannot open the collection at {self.directory}: {where} {what}, and embedded "
            f"Qdrant Edge opens a collection's files for writing, even to search it: {fix}"
        )

    def _edge_op(self, doing: str, fn: Callable[..., Any], *args: Any) -> Any:
        """A write to the shard; Edge raises a bare Exception, which we name."""
        try:
            return fn(*args)
        except Exception as exc:
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
        shard, self._shard = self._shard, None
        try:
            if shard is not None:
                self._edge_op("closing the collection", shard.close)
        finally:
            self._release()  # after Edge has flushed and let go of the files

    def load_index(self) -> None:
        """Load the shard now (`backend.warm_up`): Edge copies vectors, graph and payload
        indexes into RAM as it loads, holding the GIL."""
        self.shard()

    def shard(self) -> qe.EdgeShard:
        """The Edge shard, loaded on first use. Public for code that measures the engine
        beneath the `Backend` protocol (benchmarks/); the product goes through the protocol."""
        if self._shard is None:
            shard_dir = self.directory / SHARD_DIR
            self._hold()
            try:
                if not shard_dir.exists():
                    raise self._missing()
                scan = _ShardScan.of(shard_dir)
                self._check_writable(scan)
                self._check_space(
                    scan.load_holes, "opening the collection", reserve=_OPEN_RESERVE
                )
                _read_ahead(shard_dir)
                self._shard = _edge_call(self.directory, qe.EdgeShard.load, str(shard_dir))
            except BaseException:
                self._release()
                raise
        return self._shard

    # -- data --------------------------------------------------------------------
    def upsert(self, points: Sequence[ProductPoint]) -> None:
        if points:
            shard = self.shard()
            size = _points_bytes(points)
            # In the WAL and the segment now, and in the optimised segment at the end, where
            # those written before go too: a disk that cannot hold that stops the ingest here.
            self._check_space(
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
            self._check_space(0, f"deleting {len(ids)} products")
            self._changed = True
            operation = qe.UpdateOperation.delete_points(list(ids))
            self._edge_op("deleting products", shard.update, operation)

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
        raise _edge_error(directory, "opening the collection", exc) from exc


def _edge_error(directory: Path, doing: str, exc: Exception) -> CollectionError:
    if _disk_full(exc):
        return CollectionError(
            f"not enough disk space at {directory}: {doing} failed ({exc}). Free some space, "
            "and run the command again"
        )
    if doing == "opening the collection":
        return CollectionError(f"cannot open the collection at {directory}: {exc}")
    return CollectionError(f"{doing} failed in the collection at {directory}: {exc}")


def _disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return any(sign in text for sign in ("No space left", "os error 28", "StorageFull",
                                          "Disk quota exceeded", "QuotaExceeded"))  # fmt: skip


def _os_reason(exc: OSError) -> str:
    return "not enough disk space" if _disk_full(exc) else exc.strerror or str(exc)


@dataclass(frozen=True)
class _Holder:
    """Why a collection cannot be opened now; `final`: waiting would not change it."""

    message: str
    final: bool = False


# What the writer lock says of an ingest once it opens (or creates) the collection's shard.
_WRITES = "writes"
# How long a starting ingest waits out a reader that holds the writer lock shared for an
# instant, looking whether an ingest runs, before it concludes that another ingest does.
_WRITER_PROBE_GRACE = 1.0


def _lock_wait() -> float:
    raw = os.environ.get(LOCK_WAIT_ENV, "").strip()
    if not raw:
        return DEFAULT_LOCK_WAIT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UsageError(f"bad {LOCK_WAIT_ENV} {raw!r}: the seconds to wait, a number >= 0")
    return seconds


def _writer_note(path: Path) -> tuple[int | None, str] | None:
    """(pid, what it does) of the ingest holding the writer lock file `path`, None when
    none does. Looking holds the lock shared for an instant (see `_WRITER_PROBE_GRACE`)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            words = os.read(fd, 128).decode("utf-8", "replace").split()
        except OSError:
            return None
        else:
            return None  # free; closing the file lets it go
    finally:
        os.close(fd)
    pid = int(words[0]) if words and words[0].isdigit() else None
    return pid, words[1] if len(words) > 1 else ""


def _service_pid(note_path: Path) -> int | None:
    """The process a holder note (`announce_holder`) names, when it still runs."""
    with contextlib.suppress(OSError, ValueError, TypeError, KeyError):
        pid = int(json.loads(note_path.read_bytes())["pid"])
        os.kill(pid, 0)  # raises when no such process runs
        return pid
    return None


def _flock_holder(fd: int) -> int | None:
    """The process holding a `flock` on the file open as `fd`, from /proc/locks (Linux);
    None where that cannot be told."""
    try:
        inode = os.fstat(fd).st_ino
        lines = Path("/proc/locks").read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue  # a waiter, or another kind of lock
        if fields[5].rsplit(":", 1)[-1] == str(inode) and fields[4].isdigit():
            return int(fields[4])
    return None


def _command_of(pid: int) -> str:
    """A process's command, shortened to what names it (`shopsearch query ...`)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "command unknown"
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    start = next((i for i, a in enumerate(args) if os.path.basename(a) == "shopsearch"), None)
    shown = ["shopsearch", *args[start + 1 : start + 3]] if start is not None else args[:3]
    return " ".join(shown)[:80] or "command unknown"


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the directory open as `fd`."""
    try:
        here, there = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _rename_into_place(staged: Path, target: Path) -> None:
    """Rename a complete new collection to its name; an empty directory there gives way."""
    try:
        staged.rename(target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise CollectionError(
                f"{target} exists and holds no collection: move it away, or name another "
                "collection"
            ) from exc
        raise CollectionError(f"cannot create {target}: {_os_reason(exc)}") from exc


# -- room on the disk -------------------------------------------------------------------
_MIB = 1 << 20
# Kept free beyond each write's estimate. On tmpfs and ramfs more: Edge fills each file it
# reads in whole there, and a segment grows by whole storage files.
_RESERVE = 16 * _MIB
_RESERVE_IN_MEMORY = 48 * _MIB
# Opening writes little beyond the holes it fills: Edge's config file, a WAL file's start.
_OPEN_RESERVE = _MIB
# What creating a shard writes before it can be measured (the payload indexes' flag files,
# each allocated whole where reading allocates).
_CREATION_IN_MEMORY = 32 * _MIB
_TMPFS_MAGIC = 0x01021994
_RAMFS_MAGIC = 0x858458F6


def _creation_bytes(directory: Path) -> int:
    return _CREATION_IN_MEMORY if _allocates_on_read(_existing(directory)) else 0


def _points_bytes(points: Sequence[ProductPoint]) -> int:
    """Roughly what `points` take in one segment: the dense vector in float32 and int8, the
    sparse one, the payload, and room for ids, graph links and index entries. Upserting
    writes them to the WAL and a segment, and optimising to a segment again."""
    return sum(
        5 * len(p.dense) + 8 * len(p.sparse.indices) + len(json.dumps(p.payload)) + 256
        for p in points
    )


def _size(n: int) -> str:
    return f"{n / _MIB:,.0f} MiB" if n >= _MIB else f"{n / 1024:,.0f} KiB"


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: where a new collection will be."""
    return next((p for p in (path, *path.parents) if p.exists()), path)


def _allocates_on_read(path: Path) -> bool:
    """Whether reading a file's holes takes room on the file system holding `path`: on tmpfs
    and ramfs it does, so Edge's load, which reads the files it copies into RAM whole, fills
    their holes (on a disk, holes read as zeros and take nothing)."""
    statfs = _statfs()
    if statfs is None:
        return False
    buf = ctypes.create_string_buffer(256)  # struct statfs; f_type comes first
    if statfs(os.fsencode(path), buf) != 0:
        return False
    return ctypes.c_long.from_buffer(buf).value in (_TMPFS_MAGIC, _RAMFS_MAGIC)


@functools.cache
def _statfs() -> Callable[[bytes, Any], int] | None:
    """libc's statfs(2), on Linux, which names a file system's type (Python's statvfs
    does not)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).statfs
    except (OSError, AttributeError):
        return None


@dataclass
class _ShardScan:
    """What a shard's files say of the room opening it takes, and whether this process may
    write them."""

    load_holes: int = 0  # where reading allocates: unallocated bytes a load reads in
    not_writable: Path | None = None

    @classmethod
    def of(cls, shard_dir: Path) -> _ShardScan:
        scan = cls()
        holes = _allocates_on_read(shard_dir)
        top = len(shard_dir.parts)
        for directory, _subdirs, files in os.walk(shard_dir):
            if scan.not_writable is None and not os.access(directory, os.W_OK):
                scan.not_writable = Path(directory)
            parts = Path(directory).parts[top:]
            read_in = (
                holes
                and len(parts) >= 2
                and parts[0] == "segments"
                and not any(p in _LAZY_STORAGE for p in parts)
            )
            for name in files:
                path = os.path.join(directory, name)
                if scan.not_writable is None and not os.access(path, os.W_OK):
                    scan.not_writable = Path(path)
                if read_in:
                    with contextlib.suppress(OSError):
                        stat = os.stat(path)
                        scan.load_holes += max(0, stat.st_size - stat.st_blocks * 512)
        return scan


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
    """All or nothing: a reader never sees a half-written file, and a disk without room
    for the new one leaves the old."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CollectionError(f"cannot write {path}: {_os_reason(exc)}") from exc
