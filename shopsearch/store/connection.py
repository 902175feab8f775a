"""Where a collection lives: a directory of embedded Qdrant Edge collections, or a Qdrant
server. Flags win over the environment, which wins over the defaults."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shopsearch.errors import UsageError
from shopsearch.store.backend import Backend, IndexSettings

DEFAULT_COLLECTION = "products"
# A collection name is a name, never a path: on Edge it is a directory under the data
# directory, so `.`, `..`, a separator or a leading `/` would put (or `--recreate` delete)
# something outside it. The first character is a letter or digit, which also keeps names
# apart from the hidden `.<name>.<purpose>` directories the Edge backend builds beside them;
# 255 characters is the longest file name most file systems take. A Qdrant server accepts
# every such name.
COLLECTION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
COLLECTION_NAME_RULE = (
    "letters, digits, '.', '_' and '-', starting with a letter or digit (at most 255)"
)
# How a new server collection is spread over a cluster: the `IndexSettings` field, the flag of
# `shopsearch ingest` and the environment variable that set it.
PLACEMENT_OPTIONS = (
    ("shard_number", "--shards", "SHOPSEARCH_SHARDS"),
    ("replication_factor", "--replicas", "SHOPSEARCH_REPLICAS"),
    ("write_consistency_factor", "--write-consistency", "SHOPSEARCH_WRITE_CONSISTENCY"),
)


@dataclass(frozen=True)
class Connection:
    """Where a collection lives: a local Edge directory, or a Qdrant server URL."""

    collection: str = DEFAULT_COLLECTION
    path: Path | None = None
    url: str | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        check_collection_name(self.collection)

    @classmethod
    def from_options(
        cls,
        collection: str | None = None,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Connection:
        if collection is not None:
            check_collection_name(collection, "--collection")
        else:
            collection = os.environ.get("SHOPSEARCH_COLLECTION") or DEFAULT_COLLECTION
            check_collection_name(collection, "SHOPSEARCH_COLLECTION")
        return cls(
            collection=collection,
            path=path,
            url=url or os.environ.get("QDRANT_URL") or None,
            api_key=api_key or os.environ.get("QDRANT_API_KEY") or None,
        )

    def open(self, index: IndexSettings | None = None) -> Backend:
        """The backend; `index` applies when this call creates the collection."""
        if self.url:
            from shopsearch.store.server import ServerBackend

            return ServerBackend.connect(self.url, self.collection, self.api_key, index)
        from shopsearch.store.edge import EdgeBackend

        return EdgeBackend(self.edge_dir(), index)

    @contextlib.contextmanager
    def opened(self) -> Iterator[Backend]:
        """The backend for a block, closed however the block ends."""
        backend = self.open()
        try:
            yield backend
        finally:
            backend.close()

    def index_settings(
        self,
        shards: int | None = None,
        replicas: int | None = None,
        write_consistency: int | None = None,
    ) -> IndexSettings:
        """The `IndexSettings` of a collection created through this connection: each
        placement flag given, else its variable (`PLACEMENT_OPTIONS`). An embedded collection
        is one shard on this machine, so there a placement is refused, naming the flag or
        variable that set it, rather than ignored."""
        chosen: dict[str, tuple[int, str]] = {}
        flags = (shards, replicas, write_consistency)
        for (field, flag, variable), value in zip(PLACEMENT_OPTIONS, flags, strict=True):
            source = flag
            if value is None:
                raw = os.environ.get(variable, "").strip()
                if not raw:
                    continue
                source, value = variable, _count(raw, variable)
            elif value < 1:
                raise UsageError(f"bad {flag} {value}: a whole number >= 1")
            if not self.url:
                unset = f" (unset {variable})" if source == variable else ""
                raise UsageError(
                    f"{source} needs a Qdrant server (--qdrant-url or QDRANT_URL): an embedded "
                    f"collection is one shard on this machine{unset}"
                )
            chosen[field] = (value, source)
        copies, consistency = (
            chosen.get("replication_factor"),
            chosen.get("write_consistency_factor"),
        )
        if copies and consistency and consistency[0] > copies[0]:
            raise UsageError(
                f"{consistency[1]} {consistency[0]} is more than {copies[1]} {copies[0]}: a "
                "write cannot wait for more copies of a shard than there are"
            )
        return IndexSettings(**{field: value for field, (value, _) in chosen.items()})

    def edge_dir(self) -> Path:
        return (self.path or default_data_dir()) / self.collection


def check_collection_name(name: str, source: str = "collection") -> str:
    """`name`, when it is a collection name (`COLLECTION_NAME`); `source` (the flag or the
    variable it came from) is named in the error."""
    if not COLLECTION_NAME.fullmatch(name):
        path = "/" in name or "\\" in name or name in (".", "..")
        what = " (a name, not a path)" if path else ""
        raise UsageError(
            f"bad {source} {name!r}{what}: a collection name is {COLLECTION_NAME_RULE}"
        )
    return name


def _count(raw: str, variable: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise UsageError(f"bad {variable} {raw!r}: a whole number >= 1")
    return value


def default_data_dir() -> Path:
    env = os.environ.get("SHOPSEARCH_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "shopsearch"
