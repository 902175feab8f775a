"""The collection schema: a public contract.

Other services query a shopsearch collection directly with qdrant-client or curl, so the
vector names, payload fields, their index types and the point-id scheme below are stable
API. Changing any of them is a breaking change and bumps `SCHEMA_VERSION`.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from shopsearch.errors import CollectionError, EncoderMismatchError

if TYPE_CHECKING:
    from shopsearch.encoders.protocol import TextEncoder

SCHEMA_VERSION = 1
DENSE_VECTOR = "dense"
SPARSE_VECTOR = "bm25"


class Document(Enum):
    """A JSON object a collection keeps beside its points, under `key` in a server
    collection's metadata and as `file` beside an Edge shard (`Backend.read_document`).

    META: the `CollectionMeta`. VOCABULARY: `{"words": {word: products using it}}`, the
    catalog vocabulary typo tolerance corrects to. FUSION: the learned fusion model
    (shopsearch.search.learned_fusion), once `shopsearch fusion fit` made one.
    """

    META = ("shopsearch", "shopsearch.json")
    VOCABULARY = ("shopsearch_vocabulary", "vocabulary.json")
    FUSION = ("shopsearch_fusion", "fusion.json")

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
    holding one catalog, as deletes are not traced back to families. None (collections
    ingested before it was recorded, until such an ingest) reads as "maybe".
    """

    encoder: EncoderInfo
    bm25: dict[str, Any]
    product_text_template: str
    schema_version: int = SCHEMA_VERSION
    created_by: str = field(default_factory=lambda: f"shopsearch {_version()}")
    variants: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

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


def _version() -> str:
    from shopsearch import __version__

    return __version__
