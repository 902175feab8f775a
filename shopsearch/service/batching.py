"""Concurrent queries encoded together: the encoder is the hot part of a search on a CPU.

Request threads call `encode_queries` at once; the first caller that finds no batch running
becomes the batch's leader and encodes every text waiting at that moment in one call, the
others wait for their rows. Nothing waits for a batch to fill: a lone query is encoded at
once, and under load each batch takes whatever arrived while the last one ran, so the batch
size follows the load. One `encode_queries` call of many texts runs them side by side on
the encoder's worker threads (one per core), and an int8 query is still encoded alone in
its run, so a query's vector does not depend on the queries it was batched with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from shopsearch.encoders.protocol import TextEncoder


@dataclass
class _Pending:
    texts: list[str]
    wake: threading.Event = field(default_factory=threading.Event)
    lead: bool = False  # set when this request encodes the next batch
    vectors: np.ndarray | None = None
    error: BaseException | None = None


class BatchingEncoder:
    """A `TextEncoder` that coalesces concurrent `encode_queries` calls into batches of at
    most `max_batch` texts; documents are encoded as they come. `on_batch(n)` is told each
    batch's size (the service's metrics).

    The request that encodes a batch is the oldest waiting one, and it leaves with its own
    rows: once its batch is done it hands the lead to the oldest request still waiting, so no
    request encodes other requests' batches after its own."""

    def __init__(
        self,
        encoder: TextEncoder,
        max_batch: int = 32,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.encoder = encoder
        self.max_batch = max_batch
        self.on_batch = on_batch
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []  # oldest first; non-empty only while one leads
        self._running = False

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
        mine = _Pending(list(texts))
        with self._lock:
            self._waiting.append(mine)
            if not self._running:
                self._running = mine.lead = True
        if not mine.lead:
            mine.wake.wait()  # done by another's batch, or handed the lead
        if mine.lead:
            self._encode_next_batch()
        if mine.error is not None:
            raise mine.error
        assert mine.vectors is not None
        return mine.vectors

    def _encode_next_batch(self) -> None:
        """Encode the oldest waiting requests (the leader's first), then pass the lead on."""
        with self._lock:
            batch, size = [], 0
            while self._waiting and (
                not batch or size + len(self._waiting[0].texts) <= self.max_batch
            ):
                pending = self._waiting.pop(0)
                batch.append(pending)
                size += len(pending.texts)
        texts = [t for pending in batch for t in pending.texts]
        try:
            vectors = self.encoder.encode_queries(texts)
            start = 0
            for pending in batch:
                pending.vectors = vectors[start : start + len(pending.texts)]
                start += len(pending.texts)
            if self.on_batch is not None:
                self.on_batch(size)
        except BaseException as exc:  # each request of the batch gets the encoder's error
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
