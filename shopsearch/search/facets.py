"""How many products hold each value of a field: a filter sidebar's counts ("Brand: DeWalt
(12)").

Two sets of products are counted. A category page counts those passing its filters
(`shopsearch facets`): Qdrant counts them from the field's payload index (its facet API,
on Edge and on a server alike), and they show the values as the catalog spells them (the
original fields; `--filter` matches them in any case through their normalised copies,
shopsearch.search.filters, or exactly in a collection ingested before those). A results
page counts a query's best results (`shopsearch query --facet`), from their payloads.
Either way only the indexed keyword and boolean fields can be counted, and
`attributes.<key>` has no index. A number (`price`) is not counted but bounded: its lowest
and highest value, a price slider's ends.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shopsearch.errors import UsageError
from shopsearch.store.counts import FacetCount, ValueRange, by_count
from shopsearch.store.schema import ATTRIBUTES_FIELD, INDEXED_FIELDS, FieldType

# Every product has its own product_id: counting those would list the catalog.
FACET_FIELDS = tuple(
    name
    for name, kind in INDEXED_FIELDS.items()
    if kind is not FieldType.FLOAT and name != "product_id"
)

# Numbers get their range instead of counts.
RANGE_FIELDS = tuple(name for name, kind in INDEXED_FIELDS.items() if kind is FieldType.FLOAT)


@dataclass(frozen=True)
class Facets:
    products: int  # the products counted: those passing the filters, or a query's best
    counts: dict[str, list[FacetCount]]  # field -> its most held values
    # number field -> its lowest and highest value; None where no counted product has one
    ranges: dict[str, ValueRange | None]


def check_facet_fields(fields: Sequence[str]) -> list[str]:
    """The fields, each once, in the order given; a field Qdrant cannot count is refused
    with what it can."""
    known = ", ".join(FACET_FIELDS + RANGE_FIELDS)
    if not fields:
        raise UsageError(f"name a field to count: {known}")
    for name in fields:
        if name in FACET_FIELDS or name in RANGE_FIELDS:
            continue
        if name == "product_id":
            why = "every product has its own product_id"
        elif name.startswith(f"{ATTRIBUTES_FIELD}."):
            why = f"'{name}' has no payload index, and Qdrant counts only indexed fields"
        else:
            why = f"unknown field '{name}'"
        raise UsageError(f"cannot count values of {name}: {why} (countable: {known})")
    return list(dict.fromkeys(fields))


def count_values(payloads: Iterable[dict[str, Any]], name: str, limit: int) -> list[FacetCount]:
    """The `limit` values of field `name` most held among these payloads, counted as Qdrant counts
    them (a list counts each of its values once; products without the field do not count).
    For a query's facets, among its best hits: Qdrant's facet API walks the field's whole
    index even to count a hundred products given by id, while counting their payloads here
    is far cheaper (RESULTS.md section 9)."""
    counts: Counter[str | bool] = Counter()
    for payload in payloads:
        value = payload.get(name)
        values = value if isinstance(value, list) else [value]
        counts.update({v for v in values if isinstance(v, str | bool)})
    return by_count([FacetCount(v, n) for v, n in counts.items()])[:limit]


def payload_range(payloads: Iterable[dict[str, Any]], name: str) -> ValueRange | None:
    """The lowest and highest number field `name` holds among these payloads."""
    numbers = [
        p[name]
        for p in payloads
        if isinstance(p.get(name), int | float) and not isinstance(p[name], bool)
    ]
    return ValueRange(min(numbers), max(numbers)) if numbers else None
