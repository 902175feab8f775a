"""The collection schema: a public contract.

Other services query a shopsearch collection directly with qdrant-client or curl, so the
vector names, payload fields, their index types and the point-id scheme below are stable
API. Changing or removing any of them is a breaking change and bumps `SCHEMA_VERSION`.
Adding one (a payload key, an index, a metadata key whose absence keeps the meaning it had)
is not: a reader that ignores what it does not know reads the collection as before, and a
collection made before the addition stays readable (the `match` copies: docs/collection.md).
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from shopsearch.errors import CollectionError, EncoderMismatchError

if TYPE_CHECKING:
    from shopsearch.encoders.protocol import TextEncoder

SCHEMA_VERSION = 1
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"
# The title's adjacent word pairs (shopsearch.store.word_pairs), where the collection has them
# (`CollectionMeta.word_pairs`).
PAIRS_VECTOR = "pairs"


class Document(Enum):
    """A JSON object a collection keeps beside its points, under `key` in a server
    collection's metadata and as `file` beside an Edge shard (`Backend.read_document`).

    META: the `CollectionMeta`. VOCABULARY: `{"words": {word: products using it}}`, the
    catalog vocabulary typo tolerance corrects to. FUSION: the learned fusion model
    (shopsearch.search.learned_fusion), once `shopsearch fusion fit` made one. RULES: the
    merchandising rules (shopsearch.search.rules). SYNONYMS: the synonym list
    (shopsearch.search.synonyms), once `shopsearch synonyms set` stored one. RANKING: the
    business ranking (shopsearch.search.business_ranking). CONFIDENCE: the relevance floor's
    model fit on the shop's judgments (shopsearch.search.confidence), once `shopsearch
    fusion fit --confidence` made one; without it, the package's prior.
    """

    META = ("shopsearch", "shopsearch.json")
    VOCABULARY = ("shopsearch_vocabulary", "vocabulary.json")
    FUSION = ("shopsearch_fusion", "fusion.json")
    RULES = ("shopsearch_rules", "rules.json")
    SYNONYMS = ("shopsearch_synonyms", "synonyms.json")
    RANKING = ("shopsearch_ranking", "ranking.json")
    CONFIDENCE = ("shopsearch_confidence", "confidence.json")

    def __init__(self, key: str, file: str) -> None:
        self.key = key
        self.file = file


# Point id = UUIDv5(PRODUCT_NAMESPACE, product id): re-ingesting a product overwrites it.
PRODUCT_NAMESPACE = uuid.uuid5(
    uuid.NAMESPACE_URL, "https://github.com/shopsearch/shopsearch/product"
)


class FieldType(str, Enum):
    KEYWORD = "keyword"
    FLOAT = "float"
    BOOL = "bool"


# Payload fields with an index, i.e. the fields `--filter` accepts. `attributes.<key>`
# may be filtered too (unindexed keyword match).
INDEXED_FIELDS: dict[str, FieldType] = {
    "product_id": FieldType.KEYWORD,
    "brand": FieldType.KEYWORD,
    "category": FieldType.KEYWORD,
    "color": FieldType.KEYWORD,
    "size": FieldType.KEYWORD,
    "parent_id": FieldType.KEYWORD,
    "currency": FieldType.KEYWORD,
    "price": FieldType.FLOAT,
    "in_stock": FieldType.BOOL,
}
ATTRIBUTES_FIELD = "attributes"

# Keyword fields a filter matches whatever the case: each point holds a normalised copy of
# them under MATCH_KEY (`"match": {"brand": "nike", "category": ["footwear"], ...}`), made
# at ingest by `match_copy`, which such a filter compares instead of the original, kept as
# the catalog spelled it for display and facet counts. A copy, not a full-text index: a
# keyword index of the copy keeps a filter an exact, indexed lookup of the whole value
# ("nike" never matches "nike air"), and the original stays what results show.
# `attributes`: the attribute map's values, keys as they are; unindexed, like the map.
# Identifiers (product_id, parent_id) stay exact. A collection records in its metadata
# which fields have the copy (`CollectionMeta.match_fields`); one that records none matches
# exactly.
MATCH_KEY = "match"
MATCH_FIELDS: tuple[str, ...] = ("brand", "category", "color", "size", "currency", ATTRIBUTES_FIELD)


def normalise(value: str) -> str:
    """The form a case-forgiving filter compares, for stored values and filter values alike:
    NFKC (full-width and compatibility forms as their plain letters), casefolded (Unicode's
    caseless matching: "NIKE" and "Nike" as "nike", "ß" as "ss"), whitespace runs as one
    space, no spaces at the ends. Another service filtering the copy normalises its values
    the same way; for ASCII text that is lowercasing and collapsing spaces."""
    return " ".join(unicodedata.normalize("NFKC", value).casefold().split())


def match_copy(
    payload: Mapping[str, Any], fields: Collection[str] = MATCH_FIELDS
) -> dict[str, Any]:
    """The normalised copy of `payload`'s `fields` that is stored under MATCH_KEY: text
    normalised, a list (category) element by element, the attribute map value by value.
    Empty where the payload holds none of the fields."""
    copy: dict[str, Any] = {}
    for name in fields:
        value = payload.get(name)
        if isinstance(value, str):
            copy[name] = normalise(value)
        elif isinstance(value, list):
            copy[name] = [normalise(v) for v in value]
        elif isinstance(value, Mapping):
            copy[name] = {k: normalise(v) for k, v in value.items()}
    return copy


def match_indexes(fields: Collection[str]) -> dict[str, FieldType]:
    """The keyword indexes of the copies of `fields` (`match.brand`, ...): those of the
    indexed keyword fields among them, by their path in the payload."""
    return {
        f"{MATCH_KEY}.{name}": FieldType.KEYWORD
        for name in MATCH_FIELDS
        if name in fields and INDEXED_FIELDS.get(name) is FieldType.KEYWORD
    }


# A rank field's name: a top-level payload key a formula can read, and none the schema uses.
RANK_FIELD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Payload keys the schema gives a meaning (a rank field may not take one), but `price`, a
# number every product may have, which a rank field may name to use as it is.
RESERVED_KEYS = frozenset(
    {"product_id", "title", "description", "brand", "category", "category_path", "currency",
     "color", "size", "in_stock", "parent_id", ATTRIBUTES_FIELD, "url", "image_url", MATCH_KEY,
     "ranks"}
)  # fmt: skip


def rank_indexes(rank_fields: Collection[str]) -> dict[str, FieldType]:
    """The float indexes of a collection's rank fields (`price` has its own already)."""
    return {name: FieldType.FLOAT for name in rank_fields if name not in INDEXED_FIELDS}


def point_id(product_id: str) -> str:
    return str(uuid.uuid5(PRODUCT_NAMESPACE, product_id))


@dataclass(frozen=True)
class EncoderInfo:
    """The encoder identity a collection records, so vectors of two embedding spaces are
    never mixed."""

    name: str
    dimension: int
    fingerprint: str

    @classmethod
    def of(cls, encoder: TextEncoder) -> EncoderInfo:
        return cls(encoder.name, encoder.dimension, encoder.fingerprint)


@dataclass(frozen=True)
class CollectionMeta:
    """What built the collection; stored with it (Edge: a JSON file; server: its metadata).

    `variants`: whether some product names a parent other than itself, so that results may
    need collapsing to one per family (shopsearch.search.variants). Ingest records it; once
    true it stays true until an ingest with `--prune` or `--recreate` leaves the collection
    holding one catalog, as deletes are not traced back to families. None (metadata without
    the key, until such an ingest) reads as "maybe".

    `match_fields`: the fields whose normalised copy (`match_copy`) every point holds under
    MATCH_KEY, indexed (`match_indexes`), which filters on them compare instead of the
    original. Ingest creates a collection with MATCH_FIELDS and writes each product with the
    copies its collection records, so a collection whose metadata lacks the key (none)
    keeps matching exactly, and is not re-encoded product by product for
    a copy its filters would not read; `ingest --recreate` gives it the copies. Empty unless
    said, so that no collection claims copies its points may lack.

    `rank_fields`: the numeric catalog fields ingest keeps as top-level float payload keys
    (`ingest --rank-field`), each with a float index, and each with its scale: the median of
    the catalog's positive values, at which a business ranking term is half its weight
    (shopsearch.search.business_ranking). Absent: none.

    `word_pairs`: whether the collection has the `pairs` sparse vector (each product's title
    pairs, `PAIRS_VECTOR`), which the default fusion's re-rank compares with the query's. A
    collection whose metadata lacks the key (false) has no such vector and ranks without it;
    `ingest --recreate` gives it one.
    """

    encoder: EncoderInfo
    bm25: dict[str, Any]
    product_text_template: str
    schema_version: int = SCHEMA_VERSION
    created_by: str = field(default_factory=lambda: f"shopsearch {_version()}")
    variants: bool | None = None
    match_fields: tuple[str, ...] = ()
    rank_fields: dict[str, float] = field(default_factory=dict)
    word_pairs: bool = False

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["match_fields"] = list(self.match_fields)  # as JSON holds it, and reads back
        if not self.rank_fields:
            del data["rank_fields"]  # absent rather than empty, where there are none
        if not self.word_pairs:
            del data["word_pairs"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionMeta:
        try:
            version = int(data["schema_version"])
            if version != SCHEMA_VERSION:
                raise CollectionError(
                    f"collection schema version {version} is not supported by this shopsearch "
                    f"(expects {SCHEMA_VERSION}); re-ingest with --recreate"
                )
            return cls(
                encoder=EncoderInfo(**data["encoder"]),
                bm25=dict(data["bm25"]),
                product_text_template=str(data["product_text_template"]),
                schema_version=version,
                created_by=str(data.get("created_by", "")),
                variants=_optional_bool(data.get("variants")),
                match_fields=_names(data.get("match_fields", [])),
                rank_fields=_scales(data.get("rank_fields", {})),
                word_pairs=_optional_bool(data.get("word_pairs")) is True,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectionError(f"collection metadata is unreadable ({exc!r})") from exc

    def check_encoder(self, encoder: EncoderInfo) -> None:
        mine = self.encoder
        if encoder.fingerprint != mine.fingerprint or encoder.dimension != mine.dimension:
            raise EncoderMismatchError(
                f"this collection was built with encoder '{mine.name}' "
                f"(dim {mine.dimension}, fingerprint {mine.fingerprint[:12]}) but the encoder "
                f"in use is '{encoder.name}' (dim {encoder.dimension}, fingerprint "
                f"{encoder.fingerprint[:12]}); use the model that built it, or re-ingest "
                f"with --recreate"
            )


def _optional_bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"expected true, false or null, got {value!r}")


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError(f"expected a list of field names, got {value!r}")


def _scales(value: Any) -> dict[str, float]:
    if isinstance(value, dict) and all(
        isinstance(k, str) and isinstance(v, int | float) and not isinstance(v, bool) and v > 0
        for k, v in value.items()
    ):
        return {k: float(v) for k, v in value.items()}
    raise ValueError(f"expected rank fields as {{name: scale above 0}}, got {value!r}")


def _version() -> str:
    from shopsearch import __version__

    return __version__
