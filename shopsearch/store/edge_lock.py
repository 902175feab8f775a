"""Who may open an Edge collection's shard, and who holds it: one process at a time.

Edge lets one process open a shard, and takes its own lock (on the WAL) only after it has
loaded, and repaired, every segment, so a second process opening a shard that another one is
writing rewrites that one's files under it. Every process that opens a shard therefore first
takes an exclusive `flock` on the collection directory (`CollectionLock.hold`) and holds it
until it closes the shard: opening is serialised, waiting a bounded time
(`SHOPSEARCH_LOCK_WAIT`).

Beside the collection, two files say who holds it, so that a command finding it taken names
the holder and what to do rather than "locked":
- `.<name>.lock`, an ingest's writer lock (`CollectionLock.writer`), which also says once
  the ingest opens the collection's shard; a reader then leaves the shard to it, even while
  it is free for a moment, so that a stream of queries cannot keep the ingest waiting.
- `.<name>.holder`, the note of a process that holds its collection for its life
  (`shopsearch serve`, `CollectionLock.announce_holder`), which is not waited for.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopsearch.errors import CollectionBusyError, CollectionError, UsageError
from shopsearch.store.atomic import sibling, write_json
from shopsearch.store.disk_space import os_reason

try:
    import fcntl
except ImportError:  # Windows: nothing is locked
    fcntl = None  # type: ignore[assignment]

# How long a command waits for a collection that another process has open before it gives
# up, in seconds (0: not at all): a query holds one for the moment of its search, an ingest
# for its whole run.
LOCK_WAIT_ENV = "SHOPSEARCH_LOCK_WAIT"
DEFAULT_LOCK_WAIT = 10.0
_LOCK_POLL = 0.05
# What the writer lock says of an ingest once it opens (or creates) the collection's shard.
_WRITES = "writes"
# How long a starting ingest waits out a reader that holds the writer lock shared for an
# instant, looking whether an ingest runs, before it concludes that another ingest does.
_WRITER_PROBE_GRACE = 1.0


class CollectionLock:
    """The locks of the collection at `directory`, as one process holds them: the
    directory's `flock` while the shard is open, and an ingest's writer lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd: int | None = None  # the locked directory's fd, while the shard is open
        self._writer_file: Any = None  # the writer lock's file, while `writer()` holds it

    def hold(self) -> None:
        """Take the collection directory's lock before Edge touches the shard, and keep it
        until `release()`. A process that has the shard open is waited for, up to
        `SHOPSEARCH_LOCK_WAIT` seconds, polling; so is an ingest that writes the collection,
        which a reader lets go first even while the shard is free. A service, which holds its
        collection for its life, or this process, is not waited for. The lock follows the
        directory, not its name: one locked just as `ingest --recreate` swapped another in is
        let go, and the new one locked."""
        if fcntl is None or self._fd is not None:
            return
        if self._writer_file is not None:  # an ingest, about to write the collection
            self.note_writes()
        wait = _lock_wait()
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = os.open(self.directory, os.O_RDONLY)
            except FileNotFoundError:
                raise self.missing() from None
            except OSError as exc:
                raise CollectionError(
                    f"cannot open the collection at {self.directory}: {os_reason(exc)}"
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
                        self._fd = fd
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

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @contextlib.contextmanager
    def writer(self) -> Iterator[None]:
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
        path = sibling(self.directory, "lock")
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

    def note_writes(self) -> None:
        """Say in the writer lock, when this process holds it, that this ingest opens (or
        creates) the collection's own shard: readers leave the shard to it from now on."""
        self._note_writer(_WRITES)

    def _note_writer(self, mode: str) -> None:
        """Record in the writer lock this process and what it does."""
        lock = self._writer_file
        if lock is not None:
            lock.truncate(0)
            lock.write(f"{os.getpid()} {mode}".rstrip() + "\n")
            lock.flush()

    def missing(self) -> CollectionError:
        """The error for a collection that is not there: busy while an ingest creates it."""
        writer = _writer_note(sibling(self.directory, "lock"))
        if writer is not None and sibling(self.directory, "creating").exists():
            pid = f" (process {writer[0]})" if writer[0] else ""
            return CollectionBusyError(
                f"collection '{self.directory.name}' at {self.directory} is being created by "
                f"an ingest{pid}: try again when it finishes"
            )
        return CollectionError(
            f"no collection at {self.directory}: run `shopsearch ingest CATALOG` first"
        )

    def rebuild_under_way(self) -> bool:
        """Whether an `ingest --recreate` is building this collection's replacement now: its
        build directory exists and its writer lock is held."""
        if fcntl is None or not sibling(self.directory, "recreating").exists():
            return False
        try:
            with sibling(self.directory, "lock").open("a+", encoding="utf-8") as lock:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        return False

    def announce_holder(self, description: str) -> None:
        """Say, beside the collection, which process holds its shard open and how to reach
        it, so that a command that finds the shard locked names the holder and what to do
        (`busy_message`). The note names this process, and outlives a reopening of the
        collection after a reindex; `withdraw_holder` removes it."""
        note = {"pid": os.getpid(), "holder": description}
        write_json(sibling(self.directory, "holder"), note)

    def withdraw_holder(self) -> None:
        """Remove this process's holder note (`announce_holder`)."""
        with contextlib.suppress(OSError, ValueError, RecursionError, KeyError, TypeError):
            note = sibling(self.directory, "holder")
            if json.loads(note.read_bytes())["pid"] == os.getpid():
                note.unlink()

    def _writer_elsewhere(self) -> _Holder | None:
        """The ingest writing this collection's shard from another process, if one is. The
        shard may be free for the moment (the ingest waits for a reader to close it): a
        reader leaves it to the ingest all the same, else readers arriving one after another
        could keep the ingest from it. An ingest that has not opened the shard yet, or
        never does (`--recreate` builds another), leaves it to readers."""
        writer = _writer_note(sibling(self.directory, "lock"))
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
        writer = _writer_note(sibling(self.directory, "lock"))
        if (
            writer is not None
            and writer[0] != os.getpid()
            and (writer[1] == _WRITES or pid == writer[0])
            and pid in (None, writer[0])
        ):
            return _Holder(self._ingest_message(writer[0]))
        service = _holder_note(self.directory)
        if service is not None and pid in (None, service[0]):
            return _Holder(busy_message(self.directory), final=True)
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


def busy_message(directory: Path) -> str:
    """Why a shard is locked: the holder a long-running process announced beside it
    (`announce_holder`), when that process still runs; else another process unnamed."""
    note = _holder_note(directory)
    if note is not None:
        pid, holder = note
        return (
            f"the collection at {directory} is held by {holder} (process {pid}); "
            "embedded Qdrant Edge lets one process open a collection: send updates to that "
            "service (PUT /products, DELETE /products/ID), run `ingest --recreate` (which "
            "the service picks up), or stop it first"
        )
    return (
        f"the collection at {directory} is open in another process; embedded Qdrant Edge "
        "lets one process open a collection at a time: wait for it, or use a Qdrant server "
        "(--qdrant-url) for concurrent access"
    )


@dataclass(frozen=True)
class _Holder:
    """Why a collection cannot be opened now; `final`: waiting would not change it."""

    message: str
    final: bool = False


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


def _holder_note(directory: Path) -> tuple[int, str] | None:
    """(pid, holder) of the holder note beside `directory` (`announce_holder`), when the
    process it names still runs."""
    note_path = sibling(directory, "holder")
    with contextlib.suppress(OSError, ValueError, RecursionError, TypeError, KeyError):
        note = json.loads(note_path.read_bytes())
        pid = int(note["pid"])
        os.kill(pid, 0)  # raises when no such process runs
        return pid, str(note["holder"])
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
