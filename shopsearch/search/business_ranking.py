"""Business ranking: a shop's numeric catalog fields (popularity, rating, margin, stock ...)
blended with relevance by one formula, and in-stock products first as an option.

The fields are those ingest keeps as rank fields (`ingest --rank-field NAME`: a top-level
float payload key with a float index, and a scale recorded in the collection's metadata,
`CollectionMeta.rank_fields`). A ranking gives some of them a weight:

    final = relevance + sum_i w_i * f_i / (f_i + k_i)   [- 1000 if in_stock is false]

where f_i is the product's value of field i (negative or missing: 0), k_i the field's
recorded scale (the catalog's median positive value, at which the term is half its
weight), and w_i the weight (from -10 to 10). Each term is saturated into [0, w_i): a
best seller cannot outrank every relevant product by its sales alone, however many they
are, and a weight says at most how much of the relevance score a field may add. With
`in_stock_first`, products whose `in_stock` is false lose 1000, more than any relevance or
business score spans, so they follow every other product in the same total order, which
pages cut as they cut any ranking (a product without `in_stock` is not known to be out of
stock and is not moved).

"relevance" is the search's own score, and the weights are in its units. The default
fusion's (shopsearch.search.adaptive_fusion) is `2 * coverage + 0.5 * DBSF`, spanning
about 3: the formula runs inside Qdrant on the DBSF-fused list (`candidates` deep), adding
`(1 / 0.5) * sum_i ...`, so that the re-rank's `0.5 * score` adds exactly the business
terms, and the re-rank's window is chosen from the list they reordered. RRF and DBSF add
them to their fused score, a dense or BM25 search to its own, in the same formula query,
`candidates` deep; the learned fusion adds them in Python to its model's score. Both
backends run the formula (qdrant_edge's `Formula`, qdrant-client's `FormulaQuery`, which
`QdrantClient(":memory:")` evaluates too).

A ranking is stored with the collection (`shopsearch ranking set FILE`, the RANKING
document: `{"format": 1, "weights": {"popularity": 0.3}, "in_stock_first": true}`) and
applies to every search that applies the collection's merchandising rules (not
`--no-rules`, not `eval`); weights set by hand (`query --boost-field popularity:0.3
--in-stock-first`, the service's `ranking` parameter) override the stored ones field by
field. With no weight above or below 0 and in-stock first off, a search sends Qdrant the
request it sends without a ranking.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopsearch.errors import CollectionError, InputFileError, UsageError
from shopsearch.search.json_files import read_json_file
from shopsearch.store.backend import RankFormula
from shopsearch.store.documents import read_ranking

if TYPE_CHECKING:
    from shopsearch.search.product_search import ProductSearch, SearchOptions
    from shopsearch.store.backend import Backend
    from shopsearch.store.schema import CollectionMeta

RANKING_FORMAT = 1
MAX_WEIGHT = 10.0
# What an out-of-stock product loses with in-stock first: more than any score spans.
STOCK_PENALTY = 1000.0
_KEYS = ("format", "weights", "in_stock_first")


@dataclass(frozen=True)
class BusinessRanking:
    """Weights by rank field, and whether in-stock products come first. `over_stored`: the
    weights are set by hand over the collection's stored ranking (which applies under the
    search's merchandising rules); false, they are the whole ranking."""

    weights: tuple[tuple[str, float], ...] = ()
    in_stock_first: bool = False
    over_stored: bool = True

    def __bool__(self) -> bool:
        """Whether the ranking changes a search at all."""
        return self.in_stock_first or any(w != 0 for _, w in self.weights)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields it weighs (other than 0)."""
        return tuple(name for name, w in self.weights if w != 0)

    def over(self, stored: BusinessRanking) -> BusinessRanking:
        """This ranking set by hand over `stored`: its weights replace the stored weights of
        the same fields, and in-stock first holds where either asks for it."""
        weights = dict(stored.weights)
        weights.update(self.weights)
        first = self.in_stock_first or stored.in_stock_first
        return BusinessRanking(tuple(weights.items()), first, over_stored=False)

    def to_dict(self) -> dict[str, Any]:
        """The stored form, and what answers show."""
        return {
            "format": RANKING_FORMAT,
            "weights": dict(self.weights),
            "in_stock_first": self.in_stock_first,
        }

    @classmethod
    def from_dict(cls, data: Any, where: str = "ranking") -> BusinessRanking:
        """A ranking checked key by key; a problem is an `InputFileError` naming `where` and
        the key."""
        if not isinstance(data, dict):
            raise InputFileError(f'{where}: expected {{"weights": {{FIELD: WEIGHT}}, ...}}')
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise InputFileError(
                f"{where}: unknown key {unknown[0]!r} (a ranking has {', '.join(_KEYS)})"
            )
        if data.get("format", RANKING_FORMAT) != RANKING_FORMAT:
            raise InputFileError(f"{where}: format {data['format']!r} is not {RANKING_FORMAT}")
        weights = data.get("weights", {})
        if not isinstance(weights, dict):
            raise InputFileError(f"{where}: weights: expected an object of FIELD: WEIGHT")
        checked = []
        for name, weight in weights.items():
            try:
                checked.append((check_name(name), check_weight(weight)))
            except UsageError as exc:
                raise InputFileError(f"{where}: weights.{name}: {exc}") from None
        first = data.get("in_stock_first", False)
        if not isinstance(first, bool):
            raise InputFileError(f"{where}: in_stock_first: expected true or false")
        return cls(tuple(checked), first, over_stored=False)

    @classmethod
    def from_file(cls, path: Path) -> BusinessRanking:
        return cls.from_dict(read_json_file(path), path.name)

    @classmethod
    def stored(cls, backend: Backend) -> BusinessRanking:
        """The collection's stored ranking (none when it has no ranking document)."""
        data = read_ranking(backend)
        if data is None:
            return cls(over_stored=False)
        where = f"the ranking of the collection at {backend.location}"
        try:
            return cls.from_dict(data, where)
        except InputFileError as exc:
            raise CollectionError(f"{exc} (store it again with `shopsearch ranking set`)") from None

    def check(self, meta: CollectionMeta, where: str = "--boost-field") -> None:
        """UsageError naming `where` unless every weighed field is a rank field of the
        collection: a weight on a field the collection does not hold would do nothing."""
        for name in self.fields:
            if name not in meta.rank_fields:
                held = ", ".join(meta.rank_fields) or "none: ingest with --rank-field NAME"
                raise UsageError(
                    f"{where} {name!r}: not a rank field of this collection (rank fields: {held})"
                )

    def formula(self, meta: CollectionMeta, depth: int, unit: float = 1.0) -> RankFormula | None:
        """The Qdrant formula of this ranking over a search's ranking `depth` deep, its terms
        in `unit`s of the search's score (module docstring); None where it changes nothing."""
        if not self:
            return None
        self.check(meta)
        terms = tuple(
            (name, unit * w, meta.rank_fields[name]) for name, w in self.weights if w != 0
        )
        penalty = unit * STOCK_PENALTY if self.in_stock_first else 0.0
        return RankFormula(terms, penalty, depth)

    def bonus(self, payload: Mapping[str, Any], meta: CollectionMeta) -> float:
        """What the formula adds to a product's score, from its payload: the learned fusion
        ranks in Python and adds it there."""
        total = 0.0
        for name, weight in self.weights:
            if weight == 0:
                continue
            value = payload.get(name)
            number = (
                float(value)
                if isinstance(value, int | float) and not isinstance(value, bool)
                else 0.0
            )
            number = max(number, 0.0) if math.isfinite(number) else 0.0
            total += weight * number / (number + meta.rank_fields[name])
        if self.in_stock_first and payload.get("in_stock") is False:
            total -= STOCK_PENALTY
        return total

    def payload_keys(self) -> list[str]:
        """The payload keys `bonus` reads."""
        return [*self.fields, *(["in_stock"] if self.in_stock_first else [])]


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not name.strip():
        raise UsageError(f"expected a field name, not {name!r}")
    return name.strip()


def check_weight(weight: Any) -> float:
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not math.isfinite(weight)
        or abs(weight) > MAX_WEIGHT
    ):
        raise UsageError(
            f"a weight is a number from {-MAX_WEIGHT:g} to {MAX_WEIGHT:g}, not {weight!r}"
        )
    return float(weight)


def parse_boosts(
    items: Iterable[str], in_stock_first: bool = False, where: str = "--boost-field"
) -> BusinessRanking | None:
    """`["popularity:0.3", ...]` as a ranking set by hand (None: nothing set). `where` names
    the flag or request parameter in the message of a bad value."""
    weights: dict[str, float] = {}
    for item in items:
        name, sep, value = item.partition(":")
        try:
            number = float(value) if sep else math.nan
        except ValueError:
            number = math.nan
        try:
            if not sep or not name.strip():
                raise UsageError("expected FIELD:WEIGHT, e.g. popularity:0.3")
            weights[check_name(name)] = check_weight(number)
        except UsageError as exc:
            raise UsageError(f"{where} {item!r}: {exc}") from None
    if not weights and not in_stock_first:
        return None
    return BusinessRanking(tuple(weights.items()), in_stock_first)


def effective(
    stored: BusinessRanking | None, chosen: BusinessRanking | None
) -> BusinessRanking | None:
    """The ranking a search applies: `chosen` over `stored` (None: the collection's is not
    read), or `chosen` alone where it is the whole ranking."""
    if chosen is not None and not chosen.over_stored:
        return chosen
    if stored is None:
        return None if chosen is None else chosen.over(BusinessRanking())
    return stored if chosen is None else chosen.over(stored)


def resolved(search: ProductSearch, options: SearchOptions) -> SearchOptions:
    """`options` with the ranking the search applies as the whole ranking: decided once, at
    the search's start, so that the searches merchandising rules make (without rules) apply
    it as well. The stored ranking is read where rules apply."""
    chosen = options.ranking
    if chosen is not None and not chosen.over_stored:
        return options
    stored = search.ranking.get() if options.rules else None
    ranking = effective(stored, chosen) or BusinessRanking(over_stored=False)
    return replace(options, ranking=ranking)
