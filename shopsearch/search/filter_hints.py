"""Why a filtered search found nothing: the keyword filter that matches no product, and the
stored values nearest to what it asked for ("brand=Nikee matches no product; stored brands
near it: nike, nikon").

A shopper's filter usually comes from a page's own facet values, but one typed by hand (or
by a script written against another catalog) misses on a spelling the catalog does not use.
The hint is worked out only when a search returned nothing, so it costs a search that found
something nothing: a count per filter to find the one that matches nothing, then the stored
values of its field from Qdrant's facet API (the field's payload index), ranked here. The
values offered are the originals, as results show them and as a collection that matches
exactly (one ingested before the normalised copies) needs them typed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from shopsearch.search.filters import for_collection
from shopsearch.store.backend import Backend
from shopsearch.store.conditions import Condition, Match, Range
from shopsearch.store.counts import FacetCount
from shopsearch.store.schema import (
    INDEXED_FIELDS,
    MATCH_FIELDS,
    CollectionMeta,
    FieldType,
    normalise,
)

# Values a hint offers at most.
NEAR_VALUES = 5
# Stored values of a field read to find the nearest: a field holding more (a catalog of that
# many brands) is ranked among its most held ones.
STORED_VALUES = 10_000
# Identifiers: every product has its own, and a near id is no suggestion.
_UNLISTED = ("product_id", "parent_id")
_PLURAL = {
    "brand": "brands",
    "category": "categories",
    "color": "colors",
    "size": "sizes",
    "currency": "currencies",
}


@dataclass(frozen=True)
class FilterHint:
    """One filter that matches no product (`field` None: the filters together match none),
    with the stored values nearest to those it asked for, most alike first."""

    filter: str  # the filter as written in --filter's grammar: "brand=Nikee"
    field: str | None
    values: tuple[str, ...]  # the values it asked for
    near: tuple[str, ...]  # stored values (as stored) nearest to them
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "filter": self.filter,
            "field": self.field,
            "values": list(self.values),
            "near": list(self.near),
            "message": self.message,
        }


def filter_hints(
    backend: Backend, meta: CollectionMeta, conditions: Sequence[Condition]
) -> list[FilterHint]:
    """The hints for a search under `conditions` (as parsed, not yet `for_collection`) that
    returned nothing: each filter that on its own matches no product (a keyword filter with
    the stored values nearest to it, a number filter with the stored range); failing that,
    one saying the filters match no product together, when they do not. No hints when the
    filters match products (the query text, or the page, found nothing among them). Ask
    only after a search came back empty: each filter costs a count."""
    hints: list[FilterHint] = []
    for cond in conditions:
        if isinstance(cond, Match) and cond.negate:
            continue  # what it leaves out is the rest of the catalog, not a misspelling
        if backend.count(for_collection([cond], meta)) == 0:
            hints.append(_hint(backend, meta, cond))
    if hints or len(conditions) < 2:
        return hints
    if backend.count(for_collection(conditions, meta)) > 0:
        return []
    together = " and ".join(_written(c) for c in conditions)
    message = f"{together} match no product together; each matches some on its own"
    return [FilterHint(together, None, (), (), message)]


def _hint(backend: Backend, meta: CollectionMeta, cond: Condition) -> FilterHint:
    written = _written(cond)
    if isinstance(cond, Range):
        span = backend.value_range(cond.field, [])
        message = f"{written} matches no product"
        if span is not None:
            message += f"; stored {cond.field} values run from {span.low:g} to {span.high:g}"
        return FilterHint(written, cond.field, (), (), message)
    asked = tuple(_levels(cond.values))
    what = _PLURAL.get(cond.field, f"{cond.field} values")
    if INDEXED_FIELDS.get(cond.field) is not FieldType.KEYWORD or cond.field in _UNLISTED:
        # An attribute key has no payload index to list its values from; a near id, or
        # true for false, is no suggestion.
        message = f"{written} matches no product"
        return FilterHint(written, cond.field, asked, (), message)
    stored = backend.facet(cond.field, [], STORED_VALUES)
    # Values as this collection's filter compares them: normalised where it has the copy.
    forgiving = cond.field in meta.match_fields
    held = {
        normalise(h.value) if forgiving else h.value for h in stored if isinstance(h.value, str)
    }
    missing = [a for a in asked if (normalise(a) if forgiving else a) not in held]
    if not missing:  # a category path whose every level is stored, though not together
        message = f"{written} matches no product; no product's {cond.field} holds all its levels"
        return FilterHint(written, cond.field, asked, (), message)
    near = nearest(missing, stored)
    if not near:
        message = f"{written} matches no product; no stored {what} are near it"
        return FilterHint(written, cond.field, asked, (), message)
    message = f"{written} matches no product; stored {what} near it: {', '.join(near)}"
    typed = {normalise(a) for a in asked}
    exact = cond.field in MATCH_FIELDS and cond.field not in meta.match_fields
    if exact and any(normalise(v) in typed for v in near):
        message += (
            " (this collection's filters match case exactly; `shopsearch ingest "
            "--recreate` rebuilds it with filters that forgive case)"
        )
    return FilterHint(written, cond.field, asked, near, message)


def nearest(
    asked: Sequence[str], stored: Iterable[FacetCount], limit: int = NEAR_VALUES
) -> tuple[str, ...]:
    """The stored values most like any asked value, at most `limit`: equal but for case and
    spacing first, then one a prefix of the other, then within a few edits (a third of the
    asked value's length, at least 2); each group by fewest edits, then most products."""
    typed = [normalise(a) for a in asked]
    ranked = []
    for hit in stored:
        if not isinstance(hit.value, str):
            continue
        value = normalise(hit.value)
        keys = [k for k in (_likeness(t, value) for t in typed) if k is not None]
        if keys:
            ranked.append((min(keys), -hit.count, hit.value))
    ranked.sort()
    return tuple(dict.fromkeys(value for _, _, value in ranked))[:limit]


def _likeness(typed: str, value: str) -> tuple[int, int] | None:
    """(group, edits) of a stored value against a typed one, both normalised; None: not
    alike enough to offer."""
    if value == typed:
        return (0, 0)
    most = max(2, len(typed) // 3)
    edits = _edits(typed, value, most)
    if typed and (value.startswith(typed) or typed.startswith(value)):
        return (1, edits if edits is not None else abs(len(value) - len(typed)))
    return None if edits is None else (2, edits)


def _edits(a: str, b: str, most: int) -> int | None:
    """Levenshtein distance between a and b, or None when it exceeds `most` (rows stop early
    once every cell does)."""
    if abs(len(a) - len(b)) > most:
        return None
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        if min(current) > most:
            return None
        previous = current
    return previous[-1] if previous[-1] <= most else None


def _levels(values: Iterable[Any]) -> Iterable[str]:
    """The asked values, a category path as its levels."""
    for value in values:
        if isinstance(value, tuple):
            yield from value
        else:
            yield str(value)


def _written(cond: Condition) -> str:
    """A condition as --filter's grammar writes it."""
    if not isinstance(cond, Match):
        if cond.gte is not None and cond.gte == cond.lte:
            return f"{cond.field}={cond.gte:g}"
        bounds = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        parts = [
            f"{cond.field}{op}{getattr(cond, key):g}"
            for key, op in bounds.items()
            if getattr(cond, key) is not None
        ]
        return " and ".join(parts)
    shown = [" > ".join(v) if isinstance(v, tuple) else _scalar(v) for v in cond.values]
    if len(shown) == 1:
        return f"{cond.field}{'!=' if cond.negate else '='}{shown[0]}"
    return f"{cond.field} {'not in' if cond.negate else 'in'} ({', '.join(shown)})"


def _scalar(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)
