"""What the disk lets the Edge backend write: room for it, and permission to write at all.

Edge writes through memory maps, and a write the disk has no room for kills the process
(SIGBUS) with no message and a file half written. So before creating a collection, opening
one, each batch of upserts and the final index build, the backend compares the file system's
free space with an estimate of what the step writes, plus a reserve, and refuses with the
directory, the room needed and the room free (`check_space`).

Opening a collection writes nothing on a disk, but on tmpfs and ramfs reading a file's holes
allocates them, and Edge reads in whole the files it copies into RAM: there an open needs the
room of those holes (`ShardScan.load_holes`). Edge also opens a collection's files for
writing, even to search it, so a collection its process cannot write is refused with that
reason (`check_writable`) rather than with a raw mmap error.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopsearch.errors import CollectionError
from shopsearch.store.backend import ProductPoint
from shopsearch.store.schema import PAIRS_VECTOR, SPARSE_VECTOR

MIB = 1 << 20
# Kept free beyond each write's estimate. On tmpfs and ramfs more: Edge fills each file it
# reads in whole there, and a segment grows by whole storage files.
RESERVE = 16 * MIB
RESERVE_IN_MEMORY = 48 * MIB
# Opening writes little beyond the holes it fills: Edge's config file, a WAL file's start.
OPEN_RESERVE = MIB
# What creating a shard writes before it can be measured (the payload indexes' flag files,
# each allocated whole where reading allocates).
_CREATION_IN_MEMORY = 32 * MIB
_TMPFS_MAGIC = 0x01021994
_RAMFS_MAGIC = 0x858458F6

# A segment's storage that Edge reads lazily (payloads are stored on disk; sparse vectors are
# searched through their inverted index); the rest it reads in whole as it loads.
LAZY_STORAGE = (
    "payload_storage",
    f"vector_storage-{SPARSE_VECTOR}",
    f"vector_storage-{PAIRS_VECTOR}",
)


def disk_full(exc: BaseException) -> bool:
    """Whether a failure is the disk's (or the quota's) lack of room; Edge reports it only
    in its message."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return any(sign in text for sign in ("No space left", "os error 28", "StorageFull",
                                          "Disk quota exceeded", "QuotaExceeded"))  # fmt: skip


def os_reason(exc: OSError) -> str:
    return "not enough disk space" if disk_full(exc) else exc.strerror or str(exc)


def check_space(
    directory: Path,
    needed: int,
    doing: str,
    outcome: str = "nothing was written",
    reserve: int | None = None,
) -> None:
    """Refuse `doing` when the file system holding the collection at `directory` has less
    room than the `needed` bytes and a reserve: beyond the estimate, a write keeps a
    `reserve` for what an estimate per point does not see (Edge grows its files in steps,
    and the documents beside the shard)."""
    where = _existing(directory)
    try:
        stat = os.statvfs(where)
    except OSError:
        return
    free = stat.f_bavail * stat.f_frsize
    if reserve is None:
        reserve = RESERVE_IN_MEMORY if allocates_on_read(where) else RESERVE
    if free >= needed + reserve:
        return
    raise CollectionError(
        f"not enough disk space at {directory}: {doing} needs about "
        f"{_size(needed + reserve)}, and {_size(free)} is free; {outcome}. Free some space, "
        "or keep the collection on a larger disk (--path, SHOPSEARCH_DATA_DIR)"
    )


def creation_bytes(directory: Path) -> int:
    """What creating a collection at `directory` writes before it can be measured."""
    return _CREATION_IN_MEMORY if allocates_on_read(_existing(directory)) else 0


def points_bytes(points: Sequence[ProductPoint]) -> int:
    """Roughly what `points` take in one segment: the dense vector in float32 and int8, the
    sparse ones, the payload, and room for ids, graph links and index entries. Upserting
    writes them to the WAL and a segment, and optimising to a segment again."""
    return sum(
        5 * len(p.dense)
        + 8 * (len(p.sparse.indices) + (len(p.pairs.indices) if p.pairs else 0))
        + len(json.dumps(p.payload))
        + 256
        for p in points
    )


def _size(n: int) -> str:
    return f"{n / MIB:,.0f} MiB" if n >= MIB else f"{n / 1024:,.0f} KiB"


def _existing(path: Path) -> Path:
    """`path`, or its nearest ancestor that exists: where a new collection will be."""
    return next((p for p in (path, *path.parents) if p.exists()), path)


def allocates_on_read(path: Path) -> bool:
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
class ShardScan:
    """What a shard's files say of the room opening it takes, and whether this process may
    write them."""

    load_holes: int = 0  # where reading allocates: unallocated bytes a load reads in
    not_writable: Path | None = None

    @classmethod
    def of(cls, shard_dir: Path) -> ShardScan:
        scan = cls()
        holes = allocates_on_read(shard_dir)
        top = len(shard_dir.parts)
        for directory, _subdirs, files in os.walk(shard_dir):
            if scan.not_writable is None and not os.access(directory, os.W_OK):
                scan.not_writable = Path(directory)
            parts = Path(directory).parts[top:]
            read_in = (
                holes
                and len(parts) >= 2
                and parts[0] == "segments"
                and not any(p in LAZY_STORAGE for p in parts)
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


def check_writable(directory: Path, scan: ShardScan) -> None:
    """Refuse to open the collection at `directory` when `scan` found a file or directory
    of its shard that this process cannot write, saying whether the file system is
    read-only or the permissions are."""
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
        fix = f"make it writable (chmod -R u+w {directory}), or search a writable copy"
    raise CollectionError(
        f"cannot open the collection at {directory}: {where} {what}, and embedded "
        f"Qdrant Edge opens a collection's files for writing, even to search it: {fix}"
    )
