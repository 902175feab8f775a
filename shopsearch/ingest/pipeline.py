"""read -> validate -> encode -> upsert, with the three stages overlapped.

Encoding dominates; reading the next batch (a background thread) and upserting the
previous one (another thread) run while the ONNX session, which releases the GIL, encodes
the current one. Upserts are idempotent (UUIDv5 ids), so an interrupted ingest is resumed
by running it again.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TypeVar

import qdrant_edge

from shopsearch.encoders.protocol import TextEncoder
from shopsearch.errors import UsageError
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.readers import CatalogReader
from shopsearch.ingest.validate import Product, Reject, validate
from shopsearch.qdrant.backend import Backend, ProductPoint, SparseVec
from shopsearch.qdrant.bm25 import Bm25Settings
from shopsearch.qdrant.schema import CollectionMeta, point_id
from shopsearch.qdrant.search import encoder_info

T = TypeVar("T")
DEFAULT_BATCH_SIZE = 256
MAX_PENDING_UPSERTS = 2


@dataclass
class IngestReport:
    catalog: str
    collection: str
    read: int = 0
    upserted: int = 0
    rejected: int = 0
    rejects_file: str | None = None
    points_in_collection: int = 0
    created: bool = False
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


def ingest_catalog(
    reader: CatalogReader,
    backend: Backend,
    encoder: TextEncoder,
    *,
    rejects_path: Path,
    template: ProductTextTemplate | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    recreate: bool = False,
    on_rows: Callable[[int], None] | None = None,
) -> IngestReport:
    """Ingest one catalog; `on_rows(n)` is called as each batch of n rows is done."""
    if batch_size < 1:
        raise UsageError(f"--batch-size must be at least 1 (got {batch_size})")
    started = time.perf_counter()
    report = IngestReport(catalog=str(reader.path), collection=backend.location)
    meta = backend.read_meta()
    if meta is not None and recreate:
        backend.drop()
        meta = None
    if meta is not None:
        meta.check_encoder(encoder_info(encoder))
        stored = ProductTextTemplate(meta.product_text_template)
        if template is not None and template != stored:
            raise UsageError(
                f"this collection's product text template is {stored.template!r}; "
                "re-ingest with --recreate to change it"
            )
        template = stored
    template = template or ProductTextTemplate()
    bm25 = Bm25Settings.from_dict(meta.bm25).model() if meta else None

    seen: dict[str, int] = {}
    rejects_path.unlink(missing_ok=True)
    rejects_fh: IO[str] | None = None
    pending: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upsert") as writer:
        try:
            for raw_rows in _prefetched(reader.batches(batch_size)):
                products: list[Product] = []
                rejects: list[Reject] = []
                for raw in raw_rows:
                    item = validate(raw)
                    if isinstance(item, Product) and item.id in seen:
                        first = seen[item.id]
                        item = Reject(
                            raw.row, item.id, "id", f"duplicate id (first at row {first})"
                        )
                    if isinstance(item, Reject):
                        rejects.append(item)
                    else:
                        seen[item.id] = raw.row
                        products.append(item)
                if rejects:
                    if rejects_fh is None:
                        rejects_path.parent.mkdir(parents=True, exist_ok=True)
                        rejects_fh = rejects_path.open("w", encoding="utf-8")
                    for rej in rejects:
                        rejects_fh.write(json.dumps(rej.to_dict(), ensure_ascii=False) + "\n")
                    rejects_fh.flush()
                texts = [template.render(p) for p in products]
                if bm25 is None:
                    settings = Bm25Settings.fitted(texts) if texts else Bm25Settings()
                    backend.create(
                        CollectionMeta(encoder_info(encoder), settings.to_dict(), template.template)
                    )
                    report.created = True
                    bm25 = settings.model()
                points = _points(products, texts, encoder, bm25)
                while len(pending) >= MAX_PENDING_UPSERTS:
                    pending.pop(0).result()
                pending.append(writer.submit(backend.upsert, points))
                report.read += len(raw_rows)
                report.upserted += len(points)
                report.rejected += len(rejects)
                if on_rows:
                    on_rows(len(raw_rows))
            for fut in pending:
                fut.result()
        finally:
            if rejects_fh is not None:
                rejects_fh.close()
    if bm25 is None:  # an empty catalog still leaves a (queryable, empty) collection
        backend.create(
            CollectionMeta(encoder_info(encoder), Bm25Settings().to_dict(), template.template)
        )
        report.created = True
    backend.finish_writes()
    report.points_in_collection = backend.count()
    report.rejects_file = str(rejects_path) if report.rejected else None
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _points(
    products: list[Product], texts: list[str], encoder: TextEncoder, bm25: qdrant_edge.Bm25
) -> list[ProductPoint]:
    if not products:
        return []
    dense = encoder.encode_documents(texts)
    points = []
    for product, text, vector in zip(products, texts, dense, strict=True):
        sparse = bm25.embed_document(text)
        points.append(
            ProductPoint(
                id=point_id(product.id),
                dense=vector,
                sparse=SparseVec(list(sparse.indices), list(sparse.values)),
                payload=product.payload(),
            )
        )
    return points


_DONE = object()


def _prefetched(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a background thread, keeping up to `depth` ready ahead."""
    buffer: queue.Queue = queue.Queue(maxsize=depth)
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
