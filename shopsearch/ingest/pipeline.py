"""read -> validate -> encode -> upsert, with the three stages overlapped.

Encoding dominates; reading the next batch (a background thread) and upserting the
previous one (another thread) run while the ONNX session, which releases the GIL, encodes
the current one. Upserts are idempotent (UUIDv5 ids), so an interrupted ingest is resumed
by running it again. A product already stored exactly as the catalog gives it (the same
payload, hence the same text, encoded by the same encoder) is not encoded again: a daily
re-ingest of a shop's catalog costs what changed, and a resumed ingest what is left.

A shop's catalog export is the whole shop: `prune` deletes, once every row is upserted, the
products it no longer lists. A rejected row still names its product, whose stored version is
kept; a row too broken to name one leaves the collection unpruned, since that product
cannot be told apart from a discontinued one.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar, runtime_checkable

import qdrant_edge

from shopsearch.encoders.protocol import TextEncoder
from shopsearch.errors import ShopsearchError, UsageError
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.readers import CatalogReader, RawRow
from shopsearch.ingest.validate import Product, Reject, validate
from shopsearch.store.backend import ID_PAGE, Backend, ProductPoint, SparseVec
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.documents import (
    read_meta,
    read_words_and_compounds,
    write_meta,
    write_vocabulary,
)
from shopsearch.store.schema import (
    MATCH_FIELDS,
    RANK_FIELD_RE,
    RESERVED_KEYS,
    CollectionMeta,
    EncoderInfo,
    point_id,
)
from shopsearch.store.vocabulary import (
    catalog_compounds,
    catalog_words,
    kept_compounds,
    merge_vocabularies,
)
from shopsearch.store.word_pairs import WordPairs

T = TypeVar("T")
DEFAULT_BATCH_SIZE = 256
MAX_PENDING_UPSERTS = 2


@dataclass
class IngestReport:
    catalog: str
    collection: str
    read: int = 0
    upserted: int = 0
    unchanged: int = 0  # of `upserted`, already stored as the catalog gives them: not encoded
    rejected: int = 0
    rejects_file: str | None = None
    points_in_collection: int = 0
    created: bool = False
    vocabulary_words: int = 0  # the collection's, for typo tolerance
    pruned: int = 0  # products deleted because the catalog no longer lists them
    not_pruned: str | None = None  # why `prune` deleted nothing, when it could not run
    seconds: float = 0.0
    index_seconds: float = 0.0  # of `seconds`: the final flush + index build

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_catalog(
    reader: CatalogReader,
    backend: Backend,
    encoder: TextEncoder,
    *,
    rejects_path: Path | None = None,
    template: ProductTextTemplate | None = None,
    bm25: Bm25Settings | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    recreate: bool = False,
    prune: bool = False,
    rank_fields: Sequence[str] | None = None,
    on_rows: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest one catalog; `on_rows(n)` is called as each batch of n rows is done.

    Rejected rows and their reasons go to `rejects_path` (default: `<catalog>.rejects.jsonl`
    in the working directory).

    `template` and `bm25` (its k and b; avg_len is fitted to the first batch) shape a new
    collection; an existing one must have been built with the same. The backend's writer
    lock is held throughout: another ingest of the collection raises `CollectionBusyError`.

    `rank_fields` (`--rank-field`): the numeric fields a new collection keeps for business
    ranking (shopsearch.search.business_ranking); None: an existing collection's own. Each
    ingest records each field's scale, the median of this catalog's positive values.
    """
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    if bm25 is not None:
        bm25.check()
    if rejects_path is None:
        rejects_path = Path.cwd() / f"{reader.path.name.split('.')[0]}.rejects.jsonl"
    _RejectsFile.check(rejects_path, reader.path)
    with backend.writing():  # a second ingest fails here, before any work
        started = time.perf_counter()
        report = IngestReport(catalog=str(reader.path), collection=backend.location)
        # --recreate builds a new collection, which replaces the old one once complete.
        rebuild = recreate and read_meta(backend) is not None
        with backend.rebuilding() if rebuild else nullcontext(backend) as target:
            collection = _Collection.open(
                target, encoder, template, bm25, new=rebuild, rank_fields=rank_fields
            )
            reader.read_rank_fields(collection.rank_fields)
            seen: dict[str, int] = {}
            listed = _ListedProducts()
            pending: list[Future[None]] = []
            reserved = False  # whether a new collection's room for the catalog was checked
            with _RejectsFile(rejects_path) as rejects_file, ThreadPoolExecutor(1) as writer:
                for raw_rows in _prefetched(reader.batches(batch_size)):
                    products, rejects = _validate_batch(raw_rows, seen, collection.rank_fields)
                    rejects_file.write(rejects)
                    listed.add_rejects(rejects)
                    points = collection.points(products)
                    if collection.created and not reserved:
                        reserved = _reserve_room(target, points, reader.total_rows)
                    report.unchanged += len(products) - len(points)
                    while len(pending) >= MAX_PENDING_UPSERTS:
                        pending.pop(0).result()
                    pending.append(writer.submit(target.upsert, points))
                    report.read += len(raw_rows)
                    report.upserted += len(products)
                    report.rejected += len(rejects)
                    if on_rows:
                        on_rows(len(raw_rows))
                for fut in pending:
                    fut.result()
            collection.ensure_created([])  # an empty catalog still leaves an empty collection
            collection.record_scales()
            if prune and not collection.created:
                report.not_pruned = listed.why_not_prunable(seen)
                if report.not_pruned is None:
                    report.pruned = listed.prune(target, seen)
                    collection.after_prune(listed.rejected_ids - seen.keys())
            report.vocabulary_words = collection.write_vocabulary(
                replace=prune and report.not_pruned is None
            )
            report.points_in_collection = target.count()
            indexing = time.perf_counter()
        # Leaving rebuilding() swapped a rebuilt collection in; leaving writing() made what
        # was written durable and indexed.
    report.index_seconds = round(time.perf_counter() - indexing, 3)
    report.created = collection.created
    report.rejects_file = str(rejects_path) if report.rejected else None
    report.seconds = round(time.perf_counter() - started, 3)
    return report


class _Collection:
    """The target collection; a new one is created from the first batch, whose texts
    fit BM25's average document length."""

    def __init__(
        self,
        backend: Backend,
        encoder: TextEncoder,
        template: ProductTextTemplate,
        bm25: qdrant_edge.Bm25 | None,
        new_bm25: Bm25Settings | None = None,
        meta: CollectionMeta | None = None,
        rank_fields: Sequence[str] = (),
    ) -> None:
        self.backend = backend
        self.encoder = encoder
        self.template = template
        self.bm25 = bm25  # None until the collection exists
        self.pairs: WordPairs | None = None  # made with the first points it has pairs for
        self.new_bm25 = new_bm25 or Bm25Settings()
        self.created = False
        self.words: Counter[str] = Counter()
        self.compounds: Counter[str] = Counter()  # hyphenated: "t-shirt" (store.vocabulary)
        self.meta = meta  # None until the collection exists
        self.families = False  # whether this catalog's products make a family of several
        self.rank_fields = tuple(meta.rank_fields) if meta is not None else tuple(rank_fields)
        # Each rank field's positive values in this catalog, for its scale.
        self.rank_values: dict[str, list[float]] = {n: [] for n in self.rank_fields}

    @classmethod
    def open(
        cls,
        backend: Backend,
        encoder: TextEncoder,
        template: ProductTextTemplate | None,
        bm25: Bm25Settings | None,
        new: bool,
        rank_fields: Sequence[str] | None = None,
    ) -> _Collection:
        """`new`: create the collection, whether or not `backend` holds one (a rebuild)."""
        meta = None if new else read_meta(backend)
        if rank_fields is not None:
            check_rank_fields(rank_fields)
        if meta is None:
            template = template or ProductTextTemplate()
            return cls(backend, encoder, template, None, bm25, rank_fields=rank_fields or ())
        meta.check_encoder(EncoderInfo.of(encoder))
        stored = ProductTextTemplate(meta.product_text_template)
        if template is not None and template != stored:
            raise UsageError(
                f"this collection's product text template is {stored.template!r}; "
                "re-ingest with --recreate to change it"
            )
        settings = Bm25Settings.from_dict(meta.bm25)
        if bm25 is not None and (bm25.k, bm25.b) != (settings.k, settings.b):
            raise UsageError(
                f"this collection's BM25 has k {settings.k:g}, b {settings.b:g}; "
                "re-ingest with --recreate to change them"
            )
        if rank_fields is not None and set(rank_fields) != set(meta.rank_fields):
            held = ", ".join(meta.rank_fields) or "none"
            raise UsageError(
                f"this collection's rank fields are {held}; re-ingest with --recreate to "
                "change them (or leave --rank-field out to keep them)"
            )
        return cls(backend, encoder, stored, settings.model(), meta=meta)

    def ensure_created(self, texts: Sequence[str]) -> qdrant_edge.Bm25:
        if self.bm25 is None:
            settings = self.new_bm25.fitted(texts) if texts else self.new_bm25
            # No families yet: `note_variants` records the first before it is upserted.
            meta = CollectionMeta(
                EncoderInfo.of(self.encoder),
                settings.to_dict(),
                self.template.template,
                variants=False,
                match_fields=MATCH_FIELDS,
                rank_fields={n: 1.0 for n in self.rank_fields},  # scales: `record_scales`
                word_pairs=True,
            )
            self.backend.create(meta)
            self.created = True
            self.bm25 = settings.model()
            self.meta = meta
        return self.bm25

    def note_variants(self, products: Sequence[Product]) -> None:
        """Record in the metadata, before they are upserted, that these products make
        families of several variants, if the collection does not say so already: a search
        collapses results to one per family only where the metadata says it may need to."""
        assert self.meta is not None, "the collection exists once ensure_created has run"
        if _has_variants(products):
            self.families = True
            if self.meta.variants is not True:
                self._record_variants(True)

    def record_scales(self) -> None:
        """Record each rank field's scale: the median of this catalog's positive values (kept
        where it has none)."""
        if self.meta is None or not self.rank_fields:
            return
        scales = dict(self.meta.rank_fields)
        for name, values in self.rank_values.items():
            if values:
                scales[name] = float(f"{statistics.median(values):.6g}")
        if scales != self.meta.rank_fields:
            self.meta = replace(self.meta, rank_fields=scales)
            write_meta(self.backend, self.meta)

    def _record_variants(self, variants: bool) -> None:
        assert self.meta is not None
        self.meta = replace(self.meta, variants=variants)
        write_meta(self.backend, self.meta)

    def write_vocabulary(self, replace: bool = False) -> int:
        """Store this catalog's words with those already stored, or in their place (a new
        or pruned collection holds this catalog alone)."""
        stored = None if self.created or replace else read_words_and_compounds(self.backend)
        old_words, old_compounds = stored or ({}, {})
        words = merge_vocabularies(old_words, self.words)
        compounds = kept_compounds(merge_vocabularies(old_compounds, self.compounds))
        write_vocabulary(self.backend, words, compounds)
        return len(words)

    def after_prune(self, kept_ids: Iterable[str]) -> None:
        """A pruned collection holds this catalog alone, with the stored versions of the
        products whose rows were rejected (`kept_ids`): its vocabulary is theirs, and whether
        it has families is now known, whatever the metadata says (nothing, in metadata
        without the key; a family the catalog no longer lists)."""
        ids = [point_id(pid) for pid in kept_ids]
        families = self.families
        for start in range(0, len(ids), ID_PAGE):
            stored = self.backend.payloads(ids[start : start + ID_PAGE]).values()
            kept = [Product.from_payload(p) for p in stored]
            self._count_words([self.template.render(p) for p in kept])
            families = families or _has_variants(kept)
        assert self.meta is not None
        if self.meta.variants is not families:
            self._record_variants(families)

    def _count_words(self, texts: list[str]) -> None:
        self.words.update(itertools.chain.from_iterable(map(catalog_words, texts)))
        self.compounds.update(itertools.chain.from_iterable(map(catalog_compounds, texts)))

    def points(self, products: list[Product]) -> list[ProductPoint]:
        if not products:
            return []
        texts = [self.template.render(p) for p in products]
        bm25 = self.ensure_created(texts)
        self.note_variants(products)  # unchanged products too: they may be new to the metadata
        for product in products:
            held = dict(product.ranks, price=product.price)
            for name in self.rank_fields:
                value = held.get(name)
                if value is not None and value > 0:
                    self.rank_values[name].append(value)
        self._count_words(texts)
        ids = [point_id(p.id) for p in products]
        # The normalised copies this collection's metadata records (none, where it records none).
        assert self.meta is not None, "ensure_created has run"
        payloads = [p.payload(self.meta.match_fields) for p in products]
        if not self.created:  # an existing collection may hold some of these already
            stored = self.backend.payloads(ids)
            changed = [i for i, pid in enumerate(ids) if stored.get(pid) != payloads[i]]
            if not changed:
                return []
            ids, texts, payloads = ([items[i] for i in changed] for items in (ids, texts, payloads))
        dense = self.encoder.encode_documents(texts)
        # The title's word pairs, where the collection has the vector (`CollectionMeta.word_pairs`).
        if self.meta.word_pairs and self.pairs is None:
            self.pairs = WordPairs(bm25)
        points = []
        for pid, text, vector, payload in zip(ids, texts, dense, payloads, strict=True):
            sparse = bm25.embed_document(text)
            pairs = None
            if self.pairs is not None:
                held = self.pairs.of(payload["title"])
                pairs = SparseVec(held, [1.0] * len(held))
            points.append(
                ProductPoint(
                    id=pid,
                    dense=vector,
                    sparse=SparseVec(list(sparse.indices), list(sparse.values)),
                    payload=payload,
                    pairs=pairs,
                )
            )
        return points


@runtime_checkable
class _ChecksRoom(Protocol):
    """A backend that can tell, before it is filled, whether its disk has room (Edge: a
    full disk kills a process writing through memory maps, with no message)."""

    def reserve_for(self, points: Sequence[ProductPoint], total: int) -> None: ...


def check_rank_fields(names: Sequence[str]) -> None:
    """UsageError unless each name can be a rank field: a top-level payload key a formula
    reads, none the schema gives a meaning (but `price`, a number already)."""
    for name in names:
        if name == "price":
            continue
        if not RANK_FIELD_RE.fullmatch(name) or name in RESERVED_KEYS:
            raise UsageError(
                f"--rank-field {name!r}: a rank field is a name of letters, digits and _ "
                "(not starting with a digit), and not a field the catalog format has "
                "(price excepted)"
            )


def _reserve_room(backend: Backend, points: Sequence[ProductPoint], rows: int | None) -> bool:
    """Refuse a new collection's ingest when the disk cannot hold the whole catalog, before
    encoding it, rather than when the disk fills part way (each write checks again).
    Whether the check was made: it needs points to measure."""
    if not points:
        return False
    if rows and isinstance(backend, _ChecksRoom):
        backend.reserve_for(points, rows)
    return True


def _has_variants(products: Iterable[Product]) -> bool:
    """Whether a product names a parent other than itself (a catalog may give every product
    its own id as parent_id): only then can two products share a family."""
    return any(p.parent_id and p.parent_id != p.id for p in products)


def _validate_batch(
    raw_rows: list[RawRow], seen: dict[str, int], rank_fields: Sequence[str] = ()
) -> tuple[list[Product], list[Reject]]:
    """Validate rows; a repeated id is rejected, pointing at the row that was kept."""
    products: list[Product] = []
    rejects: list[Reject] = []
    for raw in raw_rows:
        item = validate(raw, rank_fields)
        if isinstance(item, Product) and item.id in seen:
            item = Reject(raw.row, item.id, "id", f"duplicate id (first at row {seen[item.id]})")
        if isinstance(item, Reject):
            rejects.append(item)
        else:
            seen[item.id] = raw.row
            products.append(item)
    return products, rejects


class _ListedProducts:
    """What a catalog says about the products in the collection, for `prune`."""

    def __init__(self) -> None:
        self.rejected_ids: set[str] = set()  # kept as stored: their rows are bad, not gone
        self.unnamed_row: int | None = None  # the first rejected row without a product id

    def add_rejects(self, rejects: list[Reject]) -> None:
        for rej in rejects:
            if rej.id:
                self.rejected_ids.add(rej.id)
            elif self.unnamed_row is None:
                self.unnamed_row = rej.row

    def why_not_prunable(self, upserted: dict[str, int]) -> str | None:
        if self.unnamed_row is not None:
            return (
                f"row {self.unnamed_row} has no product id: its product cannot be told "
                "from a discontinued one"
            )
        if not upserted and not self.rejected_ids:
            return "the catalog lists no products; --recreate empties a collection"
        return None

    def prune(self, backend: Backend, upserted: dict[str, int]) -> int:
        keep = {point_id(pid) for pid in itertools.chain(upserted, self.rejected_ids)}
        stale = [pid for pid in backend.point_ids() if pid not in keep]
        for start in range(0, len(stale), ID_PAGE):
            backend.delete(stale[start : start + ID_PAGE])
        return len(stale)


class _RejectsFile:
    """One JSON line per rejected row, written as they come; no file when none is rejected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    @staticmethod
    def check(path: Path, catalog: Path) -> None:
        """Refuse, before any work, a path whose file cannot be replaced: a stale rejects file
        is deleted at the start, so the catalog itself would be lost, and a path that cannot
        be written would otherwise fail at the first bad row, mid-ingest."""
        if path.is_dir():
            raise UsageError(f"--rejects {path} is a directory: name a file")
        if _same_file(path, catalog):
            raise UsageError(f"--rejects {path} is the catalog itself: name another file")
        existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
        writable = existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)
        if not writable:
            raise UsageError(
                f"--rejects {path} cannot be written: {existing} is not a writable directory"
            )
        if path.exists() and not os.access(path, os.W_OK):
            raise UsageError(f"--rejects {path} cannot be written")

    def __enter__(self) -> _RejectsFile:
        self.path.unlink(missing_ok=True)  # a stale file would describe another run
        return self

    def write(self, rejects: list[Reject]) -> None:
        if not rejects:
            return
        try:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = self.path.open("w", encoding="utf-8")
            for rej in rejects:
                self._fh.write(json.dumps(rej.to_dict(), ensure_ascii=False) + "\n")
            self._fh.flush()
        except OSError as exc:  # a full disk, most likely
            raise ShopsearchError(
                f"cannot write the rejects file {self.path}: {exc.strerror or exc}"
            ) from exc

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            self._fh.close()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


_DONE = object()


def _prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a background thread, keeping up to `depth` ready ahead."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                buffer.put(item)
            buffer.put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            buffer.put(exc)

    thread = threading.Thread(target=produce, name="catalog-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full buffer
            try:
                buffer.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
