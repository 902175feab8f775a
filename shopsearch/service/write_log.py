"""The order of a multi-process service's writes, for the workers that hold copies.

`shopsearch serve --workers N` runs one writer, which holds the collection itself, and
followers, each searching its own copy of it (an embedded shard opens in one process only).
The writer applies each write, then appends it here before it answers; a follower applies
what was appended since it last looked before it answers any request. So a search that
starts after a write was acknowledged finds it, whichever worker answers it. A line is one
JSON document: `{"op": "upsert", "records": [...]}`, `{"op": "delete", "ids": [...]}`, or
`{"op": "reopen", "directory": ...}` when the writer has swapped in a reindexed collection
and made the follower a copy of it.

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


class WriteLog:
    """An append-only file of JSON lines, one writer and any number of readers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def append(self, entry: dict[str, Any]) -> None:
        """Add `entry` as one line, whole before any reader sees its end."""
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        with self._lock, self.path.open("ab") as file:
            file.write(line)

    def size(self) -> int:
        try:
            return os.stat(self.path).st_size
        except FileNotFoundError:
            return 0

    def read_from(self, offset: int) -> tuple[list[dict[str, Any]], int]:
        """The whole lines after byte `offset`, and the offset after the last of them."""
        with self.path.open("rb") as file:
            file.seek(offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        entries = [json.loads(line) for line in data[:end].splitlines() if line]
        return entries, offset + end


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
