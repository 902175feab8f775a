"""What the backends count: the products holding each value of a field, and a number
field's lowest and highest value."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FacetCount:
    value: str | bool
    count: int  # products holding the value (a category counts each level of its path)


@dataclass(frozen=True)
class ValueRange:
    low: float
    high: float


def by_count(hits: Sequence[FacetCount]) -> list[FacetCount]:
    """Most products first, equal counts by value: Qdrant's order, made the same on both
    backends."""
    return sorted(hits, key=lambda h: (-h.count, str(h.value)))
