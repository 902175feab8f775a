"""Backend-neutral filter conditions, and each backend's filter model built from them.

Both Qdrant APIs have the same filter shape (must / must_not of field conditions, filters
nest) under different classes, so one function takes the classes to build with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

Scalar = str | float | bool
# Category levels a product's category list must all hold ("footwear > casual shoes").
CategoryPath = tuple[str, ...]


@dataclass(frozen=True)
class Match:
    field: str  # the payload key as Qdrant reads it: attributes."Ideal For"
    values: tuple[Scalar | CategoryPath, ...]  # one value: equality; several: any of them
    negate: bool = False


@dataclass(frozen=True)
class Range:
    field: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True)
class HasId:
    """The points of these ids: a search over products already found, for evidence about
    them (the relevance floor's cosines and BM25 terms, search/confidence.py)."""

    ids: tuple[str, ...]


Condition = Match | Range | HasId


def build_filter(conditions: Sequence[Condition], m: Any) -> Any:
    """Build a filter from `m`, a namespace with Filter, FieldCondition, MatchValue, MatchAny,
    Range and HasIdCondition classes: a backend's `qdrant_requests.Models`, or
    qdrant_client.models."""
    if not conditions:
        return None
    must: list[Any] = []
    must_not: list[Any] = []
    for cond in conditions:
        if isinstance(cond, Range):
            rng = m.Range(gt=cond.gt, gte=cond.gte, lt=cond.lt, lte=cond.lte)
            must.append(m.FieldCondition(key=cond.field, range=rng))
        elif isinstance(cond, HasId):
            must.append(m.HasIdCondition(has_id=list(cond.ids)))
        elif isinstance(cond, Match):
            target = must_not if cond.negate else must
            if any(isinstance(v, tuple) for v in cond.values):
                target.append(_any_path(cond, m))
                continue
            if len(cond.values) == 1:
                match = m.MatchValue(value=cond.values[0])
            else:
                match = m.MatchAny(any=list(cond.values))
            target.append(m.FieldCondition(key=cond.field, match=match))
    return m.Filter(must=must or None, must_not=must_not or None)


def _any_path(cond: Match, m: Any) -> Any:
    """A category path holds when the product's category list holds each of its levels (one
    match per level: a list field matches a value held by any element); several values are
    alternatives."""
    paths = [value if isinstance(value, tuple) else (value,) for value in cond.values]
    alternatives = [
        m.Filter(must=[m.FieldCondition(key=cond.field, match=m.MatchValue(value=v)) for v in path])
        for path in paths
    ]
    return alternatives[0] if len(alternatives) == 1 else m.Filter(should=alternatives)
