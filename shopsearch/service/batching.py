"""Concurrent requests served together: the encoder and Qdrant do less work per query in a
batch, and a batch holds the interpreter's lock once rather than once per request.

Request threads submit their work at once; the first one that finds no batch running leads:
it runs every waiting item of its kind (the same `key`) in one call, and the others wait for
their results. Nothing waits for a batch to fill: a lone request runs at once, and under
load each batch takes what arrived while the last one ran, so the batch size follows the
load. The leader leaves with its own result: once its batch is done it hands the lead to the
oldest request still waiting, so no request runs other requests' batches after its own.

Two things are batched. Whole searches with the same options (`SearchBatcher`): their texts
are encoded in one call and Qdrant answers them in one batch request. And query encodings
(`BatchingEncoder`), for the paths that encode outside a batched search (facets, /embed).
One `encode_queries` call of many texts runs them side by side on the encoder's worker
threads (one per core), and an int8 query is still encoded alone in its run, so a query's
vector, and so its results, do not depend on the queries it was batched with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from shopsearch.encoders.protocol import TextEncoder

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Pending(Generic[Item, Result]):
    key: Hashable
    items: list[Item]
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set when this request runs the next batch
    results: list[Result] | None = None
    error: BaseException | None = None


class Coalescer(Generic[Item, Result]):
    """Runs `run(key, items) -> results` (one result per item, in order) over the items that
    concurrent `submit` calls of one key bring, at most `max_batch` items a call;
    `on_batch(n)` is told each batch's size."""

    def __init__(
        self,
        run: Callable[[Hashable, list[Item]], Sequence[Result]],
        max_batch: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._waiting: list[_Pending[Item, Result]] = []  # oldest first
        self._running = False

    def submit(self, key: Hashable, items: Sequence[Item]) -> list[Result]:
        mine: _Pending[Item, Result] = _Pending(key, list(items))
        with self._lock:
            self._waiting.append(mine)
            if not self._running:
                self._running = mine.lead = True
        if not mine.lead:
            mine.wake.wait()  # done by another's batch, or handed the lead
        if mine.lead:
            self._run_next_batch()
        if mine.error is not None:
            raise mine.error
        assert mine.results is not None
        return mine.results

    def _run_next_batch(self) -> None:
        """Run the oldest waiting request's key (the leader's own), then pass the lead on."""
        with self._lock:
            key = self._waiting[0].key
            batch: list[_Pending[Item, Result]] = []
            size = 0
            for pending in list(self._waiting):
                if pending.key != key:
                    continue
                if batch and size + len(pending.items) > self.max_batch:
                    break
                batch.append(pending)
                size += len(pending.items)
                self._waiting.remove(pending)
        items = [item for pending in batch for item in pending.items]
        try:
            results = list(self.run(key, items))
            start = 0
            for pending in batch:
                pending.results = results[start : start + len(pending.items)]
                start += len(pending.items)
            if self.on_batch is not None:
                self.on_batch(size)
        except BaseException as exc:  # each request of the batch gets the error
            for pending in batch:
                pending.error = exc
        with self._lock:
            if self._waiting:
                self._waiting[0].lead = True
                self._waiting[0].wake.set()
            else:
                self._running = False
        for pending in batch:
            pending.lead = False
            pending.wake.set()


class BatchingEncoder:
    """A `TextEncoder` whose concurrent `encode_queries` calls are encoded together (at most
    `max_batch` texts a call); documents are encoded as they come."""

    def __init__(
        self,
        encoder: TextEncoder,
        max_batch: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self._batches: Coalescer[str, np.ndarray] = Coalescer(
            lambda _, texts: list(encoder.encode_queries(texts)), max_batch, on_batch
        )

    @property
    def on_batch(self) -> Callable[[int], None] | None:
        return self._batches.on_batch

    @on_batch.setter
    def on_batch(self, observe: Callable[[int], None] | None) -> None:
        self._batches.on_batch = observe

    @property
    def name(self) -> str:
        return self.encoder.name

    @property
    def dimension(self) -> int:
        return self.encoder.dimension

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.encoder.encode_documents(texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        rows = self._batches.submit(None, texts)
        return np.stack(rows) if rows else np.zeros((0, self.dimension), dtype=np.float32)


def options_key(options: Any) -> Hashable:
    """A hashable key for a `SearchOptions` (its list field makes it unhashable)."""
    return repr(options)
