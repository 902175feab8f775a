"""`--sort FIELD:asc|desc`: the relevant products ordered by a number field.

A semantic search ranks every product rather than matching some, so "the products that
match" must be decided before a field can order them: otherwise a price sort shows the
cheapest products of the whole catalog, relevant or not. They are decided by one function,
`relevant`: the best `--candidates` results of the relevance ranking (families, where
variants collapse), and, with a relevance floor (`--min-confidence`, search/confidence.py),
those of them whose calibrated confidence reaches it: a sort then orders only the products
the floor trusts, however few.

The order is total, so pages cut one list: by the field's value (a product without one
last, in either direction), equal values by their relevance rank (as merchandising rules
left it), and then by product id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from shopsearch.errors import UsageError
from shopsearch.store.backend import Hit
from shopsearch.store.schema import INDEXED_FIELDS, FieldType

# Fields a sort may order by: the indexed number fields (`--filter` ranges them too).
SORTABLE_FIELDS = tuple(name for name, kind in INDEXED_FIELDS.items() if kind is FieldType.FLOAT)


@dataclass(frozen=True)
class SortOrder:
    """An order by one number field; `descending` puts the highest value first."""

    field: str
    descending: bool = False

    def __str__(self) -> str:
        return f"{self.field}:{'desc' if self.descending else 'asc'}"


def parse_sort(text: str, where: str = "--sort") -> SortOrder:
    """`price:asc`, `price:desc`, or `price` (ascending). `where` names the flag or request
    parameter in the message of a bad value, so the CLI and the service each say theirs."""
    name, _, direction = text.strip().partition(":")
    name, direction = name.strip(), direction.strip().lower() or "asc"
    if name not in SORTABLE_FIELDS:
        raise UsageError(
            f"{where} {text!r}: {name!r} is not a sortable field "
            f"(sortable: the indexed number fields {', '.join(SORTABLE_FIELDS)})"
        )
    if direction not in ("asc", "desc"):
        raise UsageError(f"{where} {text!r}: the direction is asc or desc, not {direction!r}")
    return SortOrder(name, descending=direction == "desc")


def relevant(ranked: Sequence[Hit], candidates: int, floor: float | None = None) -> list[Hit]:
    """The products a sort orders: the best `candidates` of the relevance ranking, those of
    them at or above `floor` where one is given (their `Hit.confidence` read). The one
    definition of "relevant"."""
    best = ranked[:candidates]
    if floor is None:
        return list(best)
    return [h for h in best if h.confidence is not None and h.confidence >= floor]


def sort_value(payload: dict[str, Any], name: str) -> float | None:
    """The number a product sorts by: its field's value, the lowest of a list's; None when it
    has none (missing, not a number, or not finite)."""
    value = payload.get(name)
    values = value if isinstance(value, list) else [value]
    numbers = [
        float(v)
        for v in values
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    ]
    return min(numbers) if numbers else None


def sort_hits(hits: Sequence[Hit], order: SortOrder) -> list[Hit]:
    """`hits` (in relevance order) by `order`: products without a value last, equal values
    in relevance order, then by product id."""

    def key(item: tuple[int, Hit]) -> tuple[bool, float, int, str]:
        rank, hit = item
        value = sort_value(hit.payload, order.field)
        if value is None:
            return (True, 0.0, rank, hit.product_id)
        return (False, -value if order.descending else value, rank, hit.product_id)

    return [hit for _, hit in sorted(enumerate(hits), key=key)]
