"""Collection files and directories replaced whole, so that no reader and no later run finds
one half made.

A JSON document is written beside its name and renamed over it (`write_json`). A new
collection is built in a sibling directory, `.<name>.<purpose>` (`sibling`), and renamed to
its name once complete (`rename_into_place`); a rebuilt one takes the place of the old by two
renames (`swap_in`). A run killed part way leaves only a sibling, which the next run clears.
"""

from __future__ import annotations

import contextlib
import errno
import json
import shutil
from pathlib import Path
from typing import Any

from shopsearch.errors import CollectionError
from shopsearch.store.disk_space import os_reason


def sibling(directory: Path, purpose: str) -> Path:
    """`.<name>.<purpose>` beside the collection `directory`: its staging directories, its
    writer lock and holder note. Beside it, not in it, since `ingest --recreate` replaces the
    directory whole."""
    return directory.with_name(f".{directory.name}.{purpose}")


def write_json(path: Path, data: Any, indent: int | None = None) -> None:
    """All or nothing: a reader never sees a half-written file, and a disk without room
    for the new one leaves the old."""
    tmp = path.with_name(path.name + ".tmp")
    text = json.dumps(data, indent=indent, ensure_ascii=False)
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CollectionError(f"cannot write {path}: {os_reason(exc)}") from exc


def rename_into_place(staged: Path, target: Path) -> None:
    """Rename a complete new collection to its name; an empty directory there gives way."""
    try:
        staged.rename(target)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise CollectionError(
                f"{target} exists and holds no collection: move it away, or name another collection"
            ) from exc
        raise CollectionError(f"cannot create {target}: {os_reason(exc)}") from exc


def swap_in(built: Path, target: Path) -> None:
    """Put the complete collection `built` in the place of `target`: the old one steps aside
    to `.<name>.replaced`, the new one takes its name, and the old one is deleted. What a
    swap killed part way left there is cleared first."""
    old = sibling(target, "replaced")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    built.rename(target)
    shutil.rmtree(old, ignore_errors=True)
