"""Workers that search copies of the collection, kept current by the writer's log.

An embedded (Edge) shard opens in one process only, so a service of several processes
(`shopsearch serve --workers N`) gives each follower a copy of the collection. The writer,
which holds the collection itself, logs each write it acknowledges (`WriteLog`), and a
follower applies the log before it answers any request: a search that starts after a write
was acknowledged finds it in every worker. When a reindex swaps in a new collection, the
writer makes each follower a copy of it before opening it, then logs a `reopen` and the
writes made during the rebuild, which the copies lack as the new collection did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from shopsearch.encoders.protocol import TextEncoder
from shopsearch.service.live import LiveCollection
from shopsearch.service.write_log import WriteLog
from shopsearch.store.backend import Backend


class FollowerCollection(LiveCollection):
    """A follower's collection: its copy, brought up to the writer's log before each request
    (`open_copy(generation)` opens its copy of a generation)."""

    def __init__(
        self,
        open_copy: Callable[[int], Backend],
        log: WriteLog,
        encoder: TextEncoder,
        holder: str,
        remove_copy: Callable[[int], None] | None = None,
    ) -> None:
        self.log = log
        self.generation = 0
        self.remove_copy = remove_copy
        self._follow_lock = threading.Lock()
        super().__init__(lambda: open_copy(self.generation), encoder, holder)

    def _notice_reindex(self) -> None:
        """Apply what the writer logged since this follower last looked (one `stat` when
        nothing was)."""
        if not self.log.pending():
            return
        with self._follow_lock:
            for entry in self.log.read():
                if entry["op"] == "reopen":
                    self._reopen(int(entry["generation"]))
                else:
                    with self._write_lock:
                        self._apply(entry["op"], entry["payload"])

    def _reopen(self, generation: int) -> None:
        """Open the copy of `generation` and make it current; the old one closes after its
        last request, and the copy before it is removed."""
        self.generation = generation
        fresh = self._open()
        with self._write_lock, self._lock:
            old, self._current = self._current, fresh
            old.retired = True
            done = old.in_flight == 0
            self.reloads += 1
        if done:
            old.backend.close()
        if self.remove_copy is not None and generation >= 2:
            self.remove_copy(generation - 2)
