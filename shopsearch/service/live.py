"""The collection a running service searches and writes, kept current across reindexes.

The service owns its collection for its whole life: an embedded (Edge) shard can be open in
one process only, so every search and every write of that collection goes through it.
`shopsearch ingest --recreate` still runs beside it: it builds the new collection in another
directory and swaps it in under the collection's name (`EdgeBackend.rebuilding`). Each
request first checks, with one `stat`, whether the name now points at another directory;
if so a background thread opens the new collection while requests go on being answered from
the old one, then makes it current. Requests in flight finish on the generation they
started on, which is closed when the last of them ends: no request fails because of a swap.

Writes go through one lock, one at a time. A write made while a rebuild is under way lands
in the old collection, which the rebuild is about to replace with the catalog, so it is
also kept in a journal and applied again to the new collection before that one is made
current: a write the service acknowledged is never lost to a reindex.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shopsearch.encoders.protocol import TextEncoder
from shopsearch.ingest.updates import ProductWriter, UpdateReport
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.spelling import TypoCorrector
from shopsearch.service.batching import Coalescer, options_key
from shopsearch.service.write_log import Followers, write_entry
from shopsearch.store.backend import Backend, Hit, Reindexable
from shopsearch.store.edge import EdgeBackend

# How often a request looks whether the collection was reindexed.
CHECK_SECONDS = 0.2


@dataclass
class Generation:
    """One opening of the collection: what requests search and write until a reindex."""

    backend: Backend
    search: ProductSearch
    identity: Hashable | None  # the version of the collection opened (`Reindexable`)
    in_flight: int = 0
    retired: bool = False
    _writer: ProductWriter | None = field(default=None, repr=False)

    def writer(self) -> ProductWriter:
        if self._writer is None:
            self._writer = ProductWriter(self.backend, self.search.encoder)  # type: ignore[arg-type]
        return self._writer


class LiveCollection:
    """The current generation of one collection, its reopening after a reindex, and its
    single writer. `open_backend` opens the collection (`Connection.open`); `holder`
    describes the service in the note other commands read when they find the collection
    held (`EdgeBackend.announce_holder`)."""

    def __init__(
        self,
        open_backend: Callable[[], Backend],
        encoder: TextEncoder,
        holder: str,
        followers: Followers | None = None,
    ) -> None:
        self.open_backend = open_backend
        self.encoder = encoder
        self.holder = holder
        self.followers = followers  # workers searching copies (`shopsearch serve --workers`)
        self._lock = threading.Lock()  # guards the current generation and its counts
        self._write_lock = threading.Lock()  # one write at a time
        self._journal: list[tuple[str, Any]] = []  # writes made during a rebuild
        self._reloading = False
        self._checked = 0.0  # when the collection's version was last looked at
        self.reloads = 0
        self._current = self._open()
        self._searches: Coalescer[tuple[Query, SearchOptions], list[Hit]] = Coalescer(
            self._search_batch
        )

    def _open(self) -> Generation:
        backend = self.open_backend()
        try:
            search = ProductSearch(backend, self.encoder)
        except BaseException:
            backend.close()
            raise
        identity = backend.identity() if isinstance(backend, Reindexable) else None
        if isinstance(backend, EdgeBackend):
            backend.announce_holder(self.holder)
        return Generation(backend, search, identity)

    @property
    def current(self) -> Generation:
        return self._current

    @contextmanager
    def reading(self) -> Iterator[ProductSearch]:
        """The current generation's search, held open until the block ends."""
        self._notice_reindex()
        with self._lock:
            generation = self._current
            generation.in_flight += 1
        try:
            yield generation.search
        finally:
            self._release(generation)

    def search(self, query: Query, options: SearchOptions) -> list[Hit]:
        """One query's page of results, searched in one batch with the concurrent queries
        of the same options."""
        return self._searches.submit(options_key(options), [(query, options)])[0]

    def _search_batch(
        self, _: Hashable, items: list[tuple[Query, SearchOptions]]
    ) -> list[list[Hit]]:
        with self.reading() as search:
            return search.search_batch([query for query, _ in items], items[0][1])

    def _release(self, generation: Generation) -> None:
        with self._lock:
            generation.in_flight -= 1
            done = generation.retired and generation.in_flight == 0
        if done:
            generation.backend.close()

    def _notice_reindex(self) -> None:
        """Start reopening the collection if its name now stands for another version: looked
        at most every `CHECK_SECONDS` (on a server, looking is a request)."""
        now_s = time.monotonic()
        if self._reloading or now_s - self._checked < CHECK_SECONDS:
            return
        self._checked = now_s
        generation = self._current
        backend = generation.backend
        if not isinstance(backend, Reindexable):
            return
        now = backend.identity()
        if now is None or now == generation.identity:
            return
        with self._lock:
            if self._reloading:
                return
            self._reloading = True
        threading.Thread(target=self._reload, name="shopsearch-reload", daemon=True).start()

    def _reload(self) -> None:
        try:
            if self.followers is not None:  # their copies, before this process writes to it
                self.followers.copy()
            fresh = self._open()
        except Exception:
            # Caught mid-swap (the name briefly points nowhere) or not yet complete: the next
            # request looks again.
            with self._lock:
                self._reloading = False
            return
        with self._write_lock:
            if self.followers is not None:
                self.followers.reopen(self._journal)
            for kind, payload in self._journal:
                if kind == "upsert":
                    fresh.writer().upsert(payload)
                else:
                    fresh.writer().delete(payload)
            self._journal.clear()
            with self._lock:
                old, self._current = self._current, fresh
                old.retired = True
                done = old.in_flight == 0
                self._reloading = False
                self.reloads += 1
        if done:
            old.backend.close()

    def _write(self, kind: str, payload: Any) -> Any:
        self._notice_reindex()
        with self._write_lock:
            return self._apply(kind, payload)

    def _apply(self, kind: str, payload: Any) -> Any:
        """One write to the current generation, the write lock held; kept in the journal
        during a rebuild, and logged for the followers."""
        with self._lock:
            generation = self._current
            generation.in_flight += 1
        try:
            writer = generation.writer()
            result = writer.upsert(payload) if kind == "upsert" else writer.delete(payload)
            backend = generation.backend
            if isinstance(backend, Reindexable) and backend.rebuild_under_way():
                self._journal.append((kind, payload))
            if self.followers is not None:
                self.followers.log.append(write_entry(kind, payload))
            if kind == "upsert" and writer.vocabulary is not generation.search.typos.vocabulary:
                # New words become correctable at once.
                generation.search.typos = TypoCorrector(writer.vocabulary, writer.compounds)
            return result
        finally:
            self._release(generation)

    def upsert(self, records: Sequence[Mapping[str, Any]]) -> UpdateReport:
        return self._write("upsert", list(records))

    def delete(self, product_ids: Sequence[str]) -> list[str]:
        return self._write("delete", list(product_ids))

    def close(self) -> None:
        """Close the current generation (the service is stopping; nothing is in flight)."""
        with self._write_lock, self._lock:
            generation = self._current
            generation.retired = True
            backend = generation.backend
            if isinstance(backend, EdgeBackend):
                backend.withdraw_holder()
            if generation.in_flight == 0:
                backend.close()
