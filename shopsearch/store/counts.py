"""What the backends count: the products holding each value of a field, and a number
field's lowest and highest value."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FacetCount:
    value: str | bool
    count: int  # products holding the value (a category counts each level of its path)


@dataclass(frozen=True)
class ValueRange:
    low: float
    high: float


def by_count(hits: Iterable[Any]) -> list[FacetCount]:
    """Facet hits (either backend's, or FacetCounts: each has a `value` and a `count`) as
    counts, most products first and equal counts by value: Qdrant's order, made the same on
    both backends."""
    counts = [FacetCount(h.value, h.count) for h in hits]
    return sorted(counts, key=lambda h: (-h.count, str(h.value)))
