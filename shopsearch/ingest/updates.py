"""Product updates one record at a time: what a live shop sends between catalog ingests.

A record is validated exactly as a catalog row is (`validate`), so a product written
through the service is stored as an ingest would store it; a record with a field the catalog
format does not know is refused rather than silently dropped, since a client that misspells
`price` would otherwise never learn its prices are missing. Like an ingest, an update
encodes only the products whose stored payload differs, keeps the collection's vocabulary
and its record of variant families current, and deletes by product id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shopsearch.encoders.protocol import TextEncoder
from shopsearch.errors import CollectionError
from shopsearch.ingest.fields import CATALOG_FIELDS
from shopsearch.ingest.pipeline import _Collection, _validate_batch
from shopsearch.ingest.readers import RawRow
from shopsearch.ingest.validate import Product, Reject
from shopsearch.store.backend import Backend
from shopsearch.store.documents import read_words_and_compounds, write_vocabulary
from shopsearch.store.schema import point_id
from shopsearch.store.vocabulary import kept_compounds, merge_vocabularies


@dataclass
class UpdateReport:
    received: int = 0
    upserted: int = 0  # accepted records, stored (the unchanged ones included)
    unchanged: int = 0  # of `upserted`, already stored as given: not encoded again
    rejects: list[Reject] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "received": self.received,
            "upserted": self.upserted,
            "unchanged": self.unchanged,
            "rejected": len(self.rejects),
            "rejects": [r.to_dict() for r in self.rejects],
        }


class ProductWriter:
    """Upserts and deletes products in one existing collection. Not thread-safe: a service
    sends every write through one writer (`shopsearch.service`)."""

    def __init__(self, backend: Backend, encoder: TextEncoder) -> None:
        self.backend = backend
        self._collection = _Collection.open(backend, encoder, None, None, new=False)
        if self._collection.meta is None:
            raise CollectionError(
                f"no collection at {backend.location}: run `shopsearch ingest CATALOG` first"
            )
        # The stored vocabulary and compounds, kept here and written back only when an
        # update adds to them.
        self.vocabulary, self.compounds = read_words_and_compounds(backend) or ({}, {})

    def upsert(self, records: Sequence[Mapping[str, Any]]) -> UpdateReport:
        """Store the valid records (`records[i]` is row i in the rejects); a record whose id
        repeats an earlier one in the same batch is rejected, naming the first."""
        report = UpdateReport(received=len(records))
        ranked = self._collection.rank_fields
        rows = [_raw_row(i, record, ranked) for i, record in enumerate(records)]
        products, rejects = _validate_batch(rows, {}, ranked)
        report.rejects = sorted(rejects, key=lambda r: r.row)
        points = self._collection.points(products)
        self.backend.upsert(points)
        merged = merge_vocabularies(self.vocabulary, self._collection.words)
        compounds = kept_compounds(merge_vocabularies(self.compounds, self._collection.compounds))
        self._collection.words.clear()
        self._collection.compounds.clear()
        if merged != self.vocabulary or compounds != self.compounds:
            write_vocabulary(self.backend, merged, compounds)
            self.vocabulary, self.compounds = merged, compounds
        report.upserted = len(products)
        report.unchanged = len(products) - len(points)
        return report

    def delete(self, product_ids: Sequence[str]) -> list[str]:
        """Delete these products; returns the ids that were stored (the others are no-ops)."""
        ids = {point_id(pid): pid for pid in product_ids}
        stored = self.backend.payloads(list(ids))
        self.backend.delete(list(stored))
        return [ids[pid] for pid in stored]

    def product(self, product_id: str) -> dict[str, Any] | None:
        """The stored payload of one product, or None."""
        return self.backend.payloads([point_id(product_id)]).get(point_id(product_id))


def _raw_row(row: int, record: Mapping[str, Any], rank_fields: Sequence[str] = ()) -> RawRow:
    """`rank_fields`: the collection's, which a record may give besides the catalog's."""
    if not isinstance(record, Mapping):
        return RawRow(row, None, error=f"a product is a JSON object, not {type(record).__name__}")
    known = [*CATALOG_FIELDS, *(f for f in rank_fields if f not in CATALOG_FIELDS)]
    unknown = sorted(set(record) - set(known))
    if unknown:
        return RawRow(
            row,
            None,
            error=f"unknown field '{unknown[0]}' (fields: {', '.join(known)})",
            id=record.get("id") if isinstance(record.get("id"), str | int) else None,
            field=unknown[0],
        )
    return RawRow(row, dict(record))


__all__ = ["Product", "ProductWriter", "UpdateReport"]
