"""The documents a collection keeps beside its points, typed, over any backend.

A backend only stores and returns JSON objects by name (`Backend.read_document`,
`write_document`); what each document holds is decided here, once for both backends, so a
collection's metadata, vocabulary and learned fusion read the same wherever it lives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shopsearch.errors import CollectionError
from shopsearch.store.schema import CollectionMeta, Document

if TYPE_CHECKING:
    from shopsearch.store.backend import Backend


def read_meta(backend: Backend) -> CollectionMeta | None:
    """The collection's metadata, or None when the collection does not exist."""
    data = backend.read_document(Document.META)
    return None if data is None else CollectionMeta.from_dict(data)


def write_meta(backend: Backend, meta: CollectionMeta) -> None:
    """Replace an existing collection's metadata (ingest updates what it records)."""
    backend.write_document(Document.META, meta.to_dict())


def read_vocabulary(backend: Backend) -> dict[str, int] | None:
    """Catalog word -> products using it, as ingest last wrote it; None when it never did
    (collections ingested before typo tolerance)."""
    data = backend.read_document(Document.VOCABULARY)
    if data is None:
        return None
    try:
        return dict(data["words"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CollectionError(
            f"cannot read the vocabulary of the collection at {backend.location}: {exc!r}"
        ) from exc


def write_vocabulary(backend: Backend, words: dict[str, int]) -> None:
    backend.write_document(Document.VOCABULARY, {"words": words})


def read_fusion(backend: Backend) -> dict[str, Any] | None:
    """The learned fusion `shopsearch fusion fit` stored (FusionModel.to_dict), or None."""
    return backend.read_document(Document.FUSION)


def write_fusion(backend: Backend, model: dict[str, Any]) -> None:
    backend.write_document(Document.FUSION, model)
