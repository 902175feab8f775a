"""Where a collection lives: a directory of embedded Qdrant Edge collections, or a Qdrant
server. Flags win over the environment, which wins over the defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from shopsearch.store.backend import Backend, IndexSettings

DEFAULT_COLLECTION = "products"


@dataclass(frozen=True)
class Connection:
    """Where a collection lives: a local Edge directory, or a Qdrant server URL."""

    collection: str = DEFAULT_COLLECTION
    path: Path | None = None
    url: str | None = None
    api_key: str | None = None

    @classmethod
    def from_options(
        cls,
        collection: str | None = None,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
    ) -> Connection:
        return cls(
            collection=collection or os.environ.get("SHOPSEARCH_COLLECTION") or DEFAULT_COLLECTION,
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

    def edge_dir(self) -> Path:
        return (self.path or default_data_dir()) / self.collection


def default_data_dir() -> Path:
    env = os.environ.get("SHOPSEARCH_DATA_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "shopsearch"
