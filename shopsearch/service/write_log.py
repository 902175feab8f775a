"""The order of a multi-process service's writes, for the workers that hold copies.

`shopsearch serve --workers N` runs one writer, which holds the collection itself, and
followers, each searching its own copy of it (an embedded shard opens in one process only).
The writer applies each write, then appends it here before it answers; a follower applies
what was appended since it last looked before it answers any request. So a search that
starts after a write was acknowledged finds it, whichever worker answers it. A line is one
JSON document: `{"op": "upsert", "payload": [records]}`, `{"op": "delete", "payload":
[ids]}`, or `{"op": "reopen", "generation": N}` once the writer has made each follower a
copy of a reindexed collection (`Followers`).

The log lives for one run of the service: the collection the writer holds is what survives
a restart, and the followers' copies are made again from it.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# A log file is closed, and the next begun, past this size; a file every follower has read
# past is removed, so the log holds about what the slowest follower has yet to read.
SEGMENT_BYTES = 16 * 1024 * 1024


class WriteLog:
    """JSON lines in numbered files under `directory`: one writer appends, and each reader
    (`reader`, a follower's number) reads on from where it stopped. The writer ends a file
    past `segment_bytes` with a `next` line; a reader that reaches it goes on in the next
    file and notes so (`progress-READER`); files every reader has left are removed."""

    def __init__(
        self,
        directory: Path,
        reader: int | None = None,
        readers: int = 0,
        segment_bytes: int = SEGMENT_BYTES,
    ) -> None:
        """`reader`: this reader's number (1, 2, ...); None for the writer, which has
        `readers` of them."""
        self.directory = directory
        self.reader = reader
        self.readers = readers
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segment = 0  # the file the writer appends to, or the reader reads
        self._offset = 0  # where the reader stops in it

    def _file(self, segment: int) -> Path:
        return self.directory / f"writes-{segment}.log"

    def start(self) -> None:
        """An empty log (the supervisor, before any worker)."""
        self._file(0).touch()

    # -- the writer -----------------------------------------------------------------
    def append(self, entry: dict[str, Any]) -> None:
        """Add `entry` as one line, whole before any reader sees its end."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock:
            path = self._file(self._segment)
            with path.open("ab") as file:
                file.write(line)
                full = file.tell() > self.segment_bytes
            if full:
                self._file(self._segment + 1).touch()
                with path.open("ab") as file:
                    file.write(b'{"op":"next"}\n')
                self._segment += 1
                self._remove_read()

    def _remove_read(self) -> None:
        """Remove the files every reader has gone past."""
        reached = []
        for reader in range(1, self.readers + 1):
            try:
                reached.append(int((self.directory / f"progress-{reader}").read_text()))
            except (OSError, ValueError):  # still in the first file, or noting its progress
                return
        for path in self.directory.glob("writes-*.log"):
            segment = int(path.stem.split("-")[1])
            if segment < min(reached, default=0):
                path.unlink(missing_ok=True)

    # -- a reader -------------------------------------------------------------------
    def pending(self) -> bool:
        """Whether there may be lines this reader has not read (one `stat`)."""
        try:
            return os.stat(self._file(self._segment)).st_size != self._offset
        except FileNotFoundError:
            return False

    def read(self) -> list[dict[str, Any]]:
        """The whole lines this reader has not read, in order, across files."""
        entries: list[dict[str, Any]] = []
        while True:
            with self._file(self._segment).open("rb") as file:
                file.seek(self._offset)
                data = file.read()
            end = data.rfind(b"\n") + 1
            self._offset += end
            lines = [json.loads(line) for line in data[:end].splitlines() if line]
            if not lines or lines[-1].get("op") != "next":
                return entries + lines
            entries += lines[:-1]
            self._segment, self._offset = self._segment + 1, 0
            (self.directory / f"progress-{self.reader}").write_text(str(self._segment))


def copy_directory(run_dir: Path, generation: int, follower: int) -> Path:
    """Where follower `follower` keeps its copy of the collection's `generation`-th version
    (the data directory of an Edge `Connection`; the collection is a folder in it)."""
    return run_dir / f"g{generation}-w{follower}"


@dataclass
class Followers:
    """The writer's side: its log, and the copies it makes its followers of a reindexed
    collection (`source`, the collection's directory)."""

    log: WriteLog
    source: Path
    run_dir: Path
    count: int
    generation: int = 0

    def copy(self, generation: int | None = None) -> None:
        """A copy of the collection for each follower, for `generation` (the next one by
        default), while nothing writes to it."""
        generation = self.generation + 1 if generation is None else generation
        for follower in range(1, self.count + 1):
            target = copy_directory(self.run_dir, generation, follower) / self.source.name
            shutil.rmtree(target.parent, ignore_errors=True)
            shutil.copytree(self.source, target)

    def reopen(self, journal: list[tuple[str, Any]]) -> None:
        """Tell the followers to open their copies of the next generation, then apply the
        writes made during its rebuild (`journal`), which the copies lack."""
        self.generation += 1
        self.log.append({"op": "reopen", "generation": self.generation})
        for kind, payload in journal:
            self.log.append(write_entry(kind, payload))


def write_entry(kind: str, payload: Any) -> dict[str, Any]:
    return {"op": kind, "payload": payload}
