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


def existing_meta(backend: Backend) -> CollectionMeta:
    """The collection's metadata; a `CollectionError` saying how to create the collection
    when it does not exist."""
    meta = read_meta(backend)
    if meta is None:
        raise CollectionError(
            f"no collection at {backend.location}: run `shopsearch ingest CATALOG` first"
        )
    return meta


def write_meta(backend: Backend, meta: CollectionMeta) -> None:
    """Replace an existing collection's metadata (ingest updates what it records)."""
    backend.write_document(Document.META, meta.to_dict())


def read_vocabulary(backend: Backend) -> dict[str, int] | None:
    """Catalog word -> products using it, as ingest last wrote it; None when it never did
    (a collection stored without a vocabulary)."""
    stored = read_words_and_compounds(backend)
    return None if stored is None else stored[0]


def read_words_and_compounds(backend: Backend) -> tuple[dict[str, int], dict[str, int]] | None:
    """The vocabulary's words and its hyphenated compounds ("t-shirt" -> products using it;
    empty where the vocabulary holds none), read at once; None when ingest
    never wrote a vocabulary."""
    data = backend.read_document(Document.VOCABULARY)
    if data is None:
        return None
    try:
        return dict(data["words"]), dict(data.get("compounds") or {})
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise CollectionError(
            f"cannot read the vocabulary of the collection at {backend.location}: {exc!r}"
        ) from exc


def write_vocabulary(
    backend: Backend, words: dict[str, int], compounds: dict[str, int] | None = None
) -> None:
    """Store the words, and the compounds when given."""
    data: dict[str, Any] = {"words": words}
    if compounds:
        data["compounds"] = compounds
    backend.write_document(Document.VOCABULARY, data)


def read_fusion(backend: Backend) -> dict[str, Any] | None:
    """The learned fusion `shopsearch fusion fit` stored (FusionModel.to_dict), or None."""
    return backend.read_document(Document.FUSION)


def write_fusion(backend: Backend, model: dict[str, Any]) -> None:
    backend.write_document(Document.FUSION, model)


def read_rules(backend: Backend) -> dict[str, Any] | None:
    """The merchandising rules `shopsearch rules set` stored (`RuleSet.to_dict`), or None:
    kept as plain JSON here, as the learned fusion is, and given meaning by
    shopsearch.search.rules, which checks them as it reads them."""
    return backend.read_document(Document.RULES)


def write_rules(backend: Backend, rules: dict[str, Any]) -> None:
    backend.write_document(Document.RULES, rules)


def read_synonyms(backend: Backend) -> dict[str, Any] | None:
    """The synonyms `shopsearch synonyms set` stored (`SynonymSet.to_dict`), or None: plain
    JSON here, as the rules are, given meaning (and checked) by shopsearch.search.synonyms."""
    return backend.read_document(Document.SYNONYMS)


def write_synonyms(backend: Backend, synonyms: dict[str, Any]) -> None:
    backend.write_document(Document.SYNONYMS, synonyms)


def read_ranking(backend: Backend) -> dict[str, Any] | None:
    """The business ranking `shopsearch ranking set` stored (`BusinessRanking.to_dict`), or
    None: plain JSON here, given meaning (and checked) by shopsearch.search.business_ranking."""
    return backend.read_document(Document.RANKING)


def write_ranking(backend: Backend, ranking: dict[str, Any]) -> None:
    backend.write_document(Document.RANKING, ranking)


def read_confidence(backend: Backend) -> dict[str, Any] | None:
    """The relevance floor's model `fusion fit --confidence` stored
    (`ConfidenceModel.to_dict`), or None: the package's prior applies."""
    return backend.read_document(Document.CONFIDENCE)


def write_confidence(backend: Backend, model: dict[str, Any]) -> None:
    backend.write_document(Document.CONFIDENCE, model)
