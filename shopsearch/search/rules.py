"""Merchandising rules: a shop's pins, hides, boosts and buries, stored with the collection.

A rules file (JSON) is `{"rules": [RULE, ...]}` (or the bare list). A RULE is an object:

    "name":  optional, unique: how the answer names the rule (else its index, from 0)
    "when":  optional; without it the rule is a catch-all and fires on every query.
             "exact": PHRASE(S)    the query is the phrase (one of them)
             "contains": PHRASE(S) the query holds the phrase's words, in a row
             "category": NAME(S)   the query filters on the category: `category=NAME`,
                                   `category in (NAME, ...)`, or a path naming NAME as a level
             Several keys must all hold. Phrases compare by words, case-folded, with the query
             as typed and as searched (typos corrected): either may match.
    "pin":   [{"product_id": ID, "position": N}]  show the product at position N (from 1)
    "hide":  [ID, ...]                            never show the product
    "boost": [{"filter": EXPR(S), "by": N}]       a product the `--filter` expression(s)
    "bury":  [{"filter": EXPR(S), "by": N}]       match ranks N places earlier (later)

Rules apply after retrieval and before the page is cut, in one deterministic order
(`arrange_batch`):

1. The fired rules' hidden products are left out of retrieval (a filter of the query): a
   family whose shown variant is hidden is shown by another, and a hidden product never
   appears, pinned or not.
2. The ranking is read as deep as the page can draw from: the page's end plus the fired
   rules' boosts and buries summed (a product further down cannot reach the page), so a
   catch-all boost reads the list a search without rules reads; `--candidates` deep (or to
   the page's end, if deeper) where a query is sorted, pins, or has a relevance floor.
3. Boosts and buries move each matching product by their `by`, summed over the rules that
   match it (a rank shift, whatever the fusion's score scale): products are ordered by rank
   - boosts + buries, equal values by rank.
4. A sort (shopsearch.search.sorting) orders the relevant products, equal values in the
   order step 3 left.
5. Pins, in rule order and each rule's order: a pinned product takes its position; a position
   an earlier pin took passes to the next free one; a product already pinned keeps its first
   position. A pinned product the search did not rank is looked up, and shown only when it
   passes the query's filters (hidden products included), with score 0: a pin never shows
   what a shopper's filter excludes. A pinned variant is shown for its family. A position
   past the list's end puts the product last.
6. The page is cut.

Each search's answer lists what fired (`Arranged.fired`). Rules cost one deeper search and
a few payload reads, only for queries a rule fires on (catch-all rules fire on all).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopsearch.errors import CollectionError, FilterError, InputFileError
from shopsearch.search.filters import for_collection, parse_filters
from shopsearch.search.json_files import read_json_file
from shopsearch.search.sorting import relevant, sort_hits
from shopsearch.search.variants import FAMILY_FIELDS
from shopsearch.store.backend import Hit
from shopsearch.store.conditions import Condition, Match, Range
from shopsearch.store.documents import read_rules
from shopsearch.store.schema import point_id

if TYPE_CHECKING:
    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
    from shopsearch.store.backend import Backend
    from shopsearch.store.schema import CollectionMeta

RULES_FORMAT = 1
MAX_POSITION = 1_000
MAX_SHIFT = 10_000
_RULE_KEYS = ("name", "when", "pin", "hide", "boost", "bury")
_WHEN_KEYS = ("exact", "contains", "category")
_WORD_RE = re.compile(r"\w+")


def words(text: str) -> tuple[str, ...]:
    """A phrase as rules compare it: its words, case-folded."""
    return tuple(_WORD_RE.findall(text.casefold()))


@dataclass(frozen=True)
class Shift:
    """A boost (`by` > 0 moves earlier) or bury over the products its filters match."""

    filters: tuple[str, ...]
    conditions: tuple[Condition, ...]
    by: int


@dataclass(frozen=True)
class Rule:
    index: int
    name: str | None = None
    exact: tuple[tuple[str, ...], ...] = ()
    contains: tuple[tuple[str, ...], ...] = ()
    categories: tuple[str, ...] = ()
    pins: tuple[tuple[str, int], ...] = ()
    hide: tuple[str, ...] = ()
    boosts: tuple[Shift, ...] = ()
    buries: tuple[Shift, ...] = ()
    source: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str | int:
        """How answers name the rule: its name, else its index."""
        return self.name if self.name is not None else self.index

    @property
    def catch_all(self) -> bool:
        return not (self.exact or self.contains or self.categories)

    def fires(self, query: Query) -> bool:
        """Whether the query meets every condition the rule has (a catch-all: always)."""
        said = {words(query.text), words(query.searched or query.text)}
        if self.exact and not any(p in said for p in self.exact):
            return False
        if self.contains and not any(_holds(q, p) for q in said for p in self.contains):
            return False
        return not self.categories or bool(
            {_folded(c) for c in self.categories} & filtered_categories(query.conditions)
        )


def _holds(query: tuple[str, ...], phrase: tuple[str, ...]) -> bool:
    n = len(phrase)
    return any(query[i : i + n] == phrase for i in range(len(query) - n + 1))


def _folded(text: str) -> str:
    return " ".join(text.casefold().split())


def filtered_categories(conditions: Sequence[Condition]) -> set[str]:
    """The categories (case-folded) a query's filters name: each value of a category match
    that is not negated, every level of a path; on the category or its case-forgiving copy."""
    named: set[str] = set()
    for cond in conditions:
        if (
            isinstance(cond, Match)
            and not cond.negate
            and _segments(cond.field)[-1:] == ("category",)
        ):
            for value in cond.values:
                levels = value if isinstance(value, tuple) else (value,)
                named |= {_folded(str(level)) for level in levels}
    return named


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.rules)

    def firing(self, query: Query) -> list[Rule]:
        return [r for r in self.rules if r.fires(query)]

    def to_dict(self) -> dict[str, Any]:
        """The stored form: the rules as given (checked), under a format number."""
        return {"format": RULES_FORMAT, "rules": [r.source for r in self.rules]}

    @classmethod
    def from_dict(cls, data: Any, where: str = "rules") -> RuleSet:
        """Rules checked field by field; a problem is an `InputFileError` naming `where`,
        the rule's index (and name) and the field."""
        if isinstance(data, dict):
            unknown = sorted(set(data) - {"rules", "format"})
            if unknown:
                raise InputFileError(f"{where}: unknown key {unknown[0]!r} (expected 'rules')")
            if data.get("format", RULES_FORMAT) != RULES_FORMAT:
                raise InputFileError(f"{where}: format {data['format']!r} is not {RULES_FORMAT}")
            data = data.get("rules")
        if not isinstance(data, list):
            raise InputFileError(f'{where}: expected {{"rules": [RULE, ...]}} or a list of rules')
        rules = tuple(_rule(where, i, item) for i, item in enumerate(data))
        names = [r.name for r in rules if r.name is not None]
        for rule in rules:
            if rule.name is not None and names.count(rule.name) > 1:
                raise InputFileError(
                    f"{where}: rule {rule.index} field name: {rule.name!r} names another "
                    "rule too (names must be unique)"
                )
        return cls(rules)

    @classmethod
    def from_file(cls, path: Path) -> RuleSet:
        return cls.from_dict(read_json_file(path), path.name)

    @classmethod
    def stored(cls, backend: Backend) -> RuleSet:
        """The collection's rules (none when it has no rules document)."""
        data = read_rules(backend)
        if data is None:
            return cls()
        where = f"the rules of the collection at {backend.location}"
        try:
            return cls.from_dict(data, where)
        except InputFileError as exc:
            raise CollectionError(f"{exc} (store them again with `shopsearch rules set`)") from None


class _Bad(Exception):
    """A problem in one field of one rule; `_rule` names them in the message."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _rule(where: str, index: int, item: Any) -> Rule:
    name = item.get("name") if isinstance(item, dict) else None
    named = f" ({name!r})" if isinstance(name, str) else ""
    try:
        return _parse_rule(index, item)
    except _Bad as bad:
        raise InputFileError(
            f"{where}: rule {index}{named} field {bad.field}: {bad.problem}"
        ) from None


def _parse_rule(index: int, item: Any) -> Rule:
    if not isinstance(item, dict):
        raise _Bad("(the rule)", f"expected an object, not {type(item).__name__}")
    unknown = sorted(set(item) - set(_RULE_KEYS))
    if unknown:
        raise _Bad(unknown[0], f"unknown field (a rule has {', '.join(_RULE_KEYS)})")
    name = item.get("name")
    if name is not None and not (isinstance(name, str) and name.strip()):
        raise _Bad("name", "expected a non-empty string")
    when = item.get("when", {})
    if not isinstance(when, dict) or ("when" in item and not when):
        raise _Bad("when", "expected an object with exact, contains or category")
    unknown = sorted(set(when) - set(_WHEN_KEYS))
    if unknown:
        raise _Bad(f"when.{unknown[0]}", f"unknown condition (use {', '.join(_WHEN_KEYS)})")
    exact = tuple(_phrase("when.exact", p) for p in _strings("when.exact", when.get("exact")))
    contains = tuple(
        _phrase("when.contains", p) for p in _strings("when.contains", when.get("contains"))
    )
    categories = tuple(c.strip() for c in _strings("when.category", when.get("category")))
    pins = tuple(_pin(f"pin[{i}]", p) for i, p in enumerate(_list("pin", item.get("pin"))))
    hide = tuple(_strings("hide", item.get("hide")))
    boosts = tuple(
        _shift(f"boost[{i}]", s) for i, s in enumerate(_list("boost", item.get("boost")))
    )
    buries = tuple(_shift(f"bury[{i}]", s) for i, s in enumerate(_list("bury", item.get("bury"))))
    if not (pins or hide or boosts or buries):
        raise _Bad("(the rule)", "does nothing: give it a pin, hide, boost or bury")
    return Rule(
        index, name, exact, contains, categories, pins, hide, boosts, buries, source=dict(item)
    )


def _list(name: str, value: Any) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list) or not value:
        raise _Bad(name, "expected a non-empty list")
    return value


def _strings(name: str, value: Any) -> list[str]:
    """A string or a non-empty list of them, each non-blank."""
    items = [value] if isinstance(value, str) else _list(name, value)
    for i, text in enumerate(items):
        if not (isinstance(text, str) and text.strip()):
            where = name if isinstance(value, str) else f"{name}[{i}]"
            raise _Bad(where, f"expected a non-empty string, not {text!r}")
    return items


def _phrase(name: str, text: str) -> tuple[str, ...]:
    said = words(text)
    if not said:
        raise _Bad(name, f"{text!r} has no words")
    return said


def _int(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Bad(name, f"expected a whole number from {low} to {high}, not {value!r}")
    return value


def _pin(name: str, value: Any) -> tuple[str, int]:
    if not isinstance(value, dict) or set(value) != {"product_id", "position"}:
        raise _Bad(name, 'expected {"product_id": ID, "position": N}')
    product = _strings(f"{name}.product_id", value["product_id"])
    if len(product) != 1 or not isinstance(value["product_id"], str):
        raise _Bad(f"{name}.product_id", "expected one product id")
    return product[0], _int(f"{name}.position", value["position"], 1, MAX_POSITION)


def _shift(name: str, value: Any) -> Shift:
    if not isinstance(value, dict) or set(value) != {"filter", "by"}:
        raise _Bad(name, 'expected {"filter": EXPRESSION(S), "by": N}')
    filters = tuple(_strings(f"{name}.filter", value["filter"]))
    try:
        conditions = tuple(parse_filters(filters))
    except FilterError as exc:
        raise _Bad(f"{name}.filter", str(exc)) from None
    return Shift(filters, conditions, _int(f"{name}.by", value["by"], 1, MAX_SHIFT))


# -- matching a product's payload -----------------------------------------------------------


_SEGMENT_RE = re.compile(r'"[^"]*"|[^.]+')


@functools.lru_cache(maxsize=256)
def _segments(field_path: str) -> tuple[str, ...]:
    """A condition's field as Qdrant reads its JSON path: `match.attributes."Ideal For"` is
    match, attributes, Ideal For."""
    return tuple(s[1:-1] if s.startswith('"') else s for s in _SEGMENT_RE.findall(field_path))


def payload_key(field_path: str) -> str:
    """The top-level payload key a condition's field reads (`attributes."Ideal For"` reads
    `attributes`, a case-forgiving `match.brand` reads `match`): what a search must return
    for `passes` to judge it."""
    return _segments(field_path)[0]


def _field_value(payload: dict[str, Any], field_path: str) -> Any:
    value: Any = payload
    for segment in _segments(field_path):
        if not isinstance(value, dict):
            return None
        value = value.get(segment)
    return value


def _same(a: Any, b: Any) -> bool:
    """Equal as Qdrant's match compares: a keyword only to a string, a bool only to a bool."""
    return isinstance(a, bool) == isinstance(b, bool) and type(a) is type(b) and a == b


def passes(conditions: Sequence[Condition], payload: dict[str, Any]) -> bool:
    """Whether a product passes `conditions` as Qdrant filters it (every condition; a list
    field matches by any element; a path needs each level; a negated match passes a product
    without the field; a range needs a number in it). Rules judge their candidates' payloads
    here rather than in one more request per boost; tests/test_search_rules.py checks this
    against both backends' own filtering."""
    for cond in conditions:
        value = _field_value(payload, cond.field)
        held = value if isinstance(value, list) else [] if value is None else [value]
        if isinstance(cond, Range):
            numbers = [v for v in held if isinstance(v, int | float) and not isinstance(v, bool)]
            if not any(_in_range(cond, float(n)) for n in numbers):
                return False
            continue
        matched = any(
            all(any(_same(level, v) for v in held) for level in want)
            if isinstance(want, tuple)
            else any(_same(want, v) for v in held)
            for want in cond.values
        )
        if matched == cond.negate:
            return False
    return True


def _in_range(cond: Range, n: float) -> bool:
    return (
        (cond.gt is None or n > cond.gt)
        and (cond.gte is None or n >= cond.gte)
        and (cond.lt is None or n < cond.lt)
        and (cond.lte is None or n <= cond.lte)
    )


# -- applying them --------------------------------------------------------------------------


class Arranged(list[Hit]):
    """A page of hits with what the rules did to it (`fired`): a list, so every caller of
    `search_batch` reads it as a list of hits."""

    fired: list[dict[str, Any]]

    def __init__(self, hits: Sequence[Hit] = (), fired: list[dict[str, Any]] | None = None):
        super().__init__(hits)
        self.fired = fired or []


def fired_rules(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    """What the rules did to a page (none for a page no rule touched)."""
    return list(hits.fired) if isinstance(hits, Arranged) else []


def current_rules(search: ProductSearch, max_age: float | None = None) -> RuleSet:
    """The collection's rules as `search` last read them: read at the first search, and again
    when older than `max_age` seconds (a long-running service notices `rules set`)."""
    return search.rules.get(max_age)


@dataclass
class _Plan:
    query: Query
    rules: list[Rule]

    @property
    def hidden(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(p for r in self.rules for p in r.hide))


def arranges(search: ProductSearch, queries: Sequence[Query], options: SearchOptions) -> bool:
    """Whether any of `queries` is sorted or has a rule firing: else the search is as without
    rules, at no cost."""
    if options.sort is not None:
        return True
    if not options.rules:
        return False
    rule_set = current_rules(search)
    return bool(rule_set) and any(rule_set.firing(search.prepare(q, options)) for q in queries)


def arrange_batch(
    search: ProductSearch, queries: Sequence[Query], options: SearchOptions
) -> list[Arranged]:
    """Each query's page with its fired rules applied and its sort (module docstring for the
    order). Queries no rule fires on and that are not sorted are searched as usual."""
    rule_set = current_rules(search) if options.rules else RuleSet()
    plans = []
    for q in queries:
        prepared = search.prepare(q, options)
        plans.append(_Plan(prepared, rule_set.firing(prepared) if rule_set else []))
    pages: list[Arranged | None] = [None] * len(plans)
    plain = [i for i, p in enumerate(plans) if not p.rules and options.sort is None]
    if plain:
        found = search.search_batch([plans[i].query for i in plain], replace(options, rules=False))
        for i, hits in zip(plain, found, strict=True):
            pages[i] = Arranged(hits)
    deep = [i for i in range(len(plans)) if i not in set(plain)]
    if deep:
        for i in deep:
            hidden = plans[i].hidden
            if hidden:
                excluded = Match("product_id", hidden, negate=True)
                conditions = (*plans[i].query.conditions, excluded)
                plans[i].query = replace(plans[i].query, conditions=conditions)
        # Only what the rules' filters, the sort and the page read: whole payloads of the
        # whole list cost several times the search (the page's are read afterwards).
        fields = _fields([plans[i] for i in deep], options, search.meta)
        # With a relevance floor, the list's confidences: the floor applies below (`relevant`,
        # `above`), before the pins; without one, only the page's are read, afterwards.
        wide = replace(
            options,
            rules=False,
            sort=None,
            offset=0,
            top_k=_depth([plans[i] for i in deep], options),
            payload_fields=fields,
            confidence=options.min_confidence is not None,
            min_confidence=None,
        )
        found = search.search_batch([plans[i].query for i in deep], wide)
        for i, ranked in zip(deep, found, strict=True):
            pages[i] = _arrange(search, plans[i], list(ranked), options)
    return [page if page is not None else Arranged() for page in pages]


def _depth(plans: Sequence[_Plan], options: SearchOptions) -> int:
    """How deep the ranking is read (module docstring, step 2)."""
    whole = max(options.candidates, options.depth)
    if options.sort is not None or options.min_confidence is not None:
        return whole
    if any(rule.pins for plan in plans for rule in plan.rules):
        return whole
    reach = max(
        sum(s.by for rule in plan.rules for s in (*rule.boosts, *rule.buries)) for plan in plans
    )
    return min(whole, options.depth + reach)


def _fields(plans: Sequence[_Plan], options: SearchOptions, meta: CollectionMeta) -> list[str]:
    """The payload keys the deep search returns: those the rules' filters and the sort
    read, the product id, and those the page shows when it names them."""
    keys = ["product_id"]
    for plan in plans:
        for rule in plan.rules:
            for shift in (*rule.boosts, *rule.buries):
                mapped = for_collection(shift.conditions, meta)
                keys += [payload_key(c.field) for c in mapped]
    if options.sort is not None:
        keys.append(options.sort.field)
    keys += options.payload_fields or []
    return list(dict.fromkeys(keys))


def _arrange(
    search: ProductSearch, plan: _Plan, ranked: list[Hit], options: SearchOptions
) -> Arranged:
    fired: list[dict[str, Any]] = []
    for rule in plan.rules:
        if rule.hide:
            fired.append({"rule": rule.label, "effect": "hide", "product_ids": list(rule.hide)})
    # A sort orders the relevant products; without one, the floor alone cuts the ranking.
    depth = options.candidates if options.sort is not None else len(ranked)
    hits = relevant(ranked, depth, options.min_confidence)
    hits = _shifted(plan.rules, hits, search.meta, fired)
    if options.sort is not None:
        hits = sort_hits(hits, options.sort)
    hits = _pinned(search, plan, hits, fired)
    page = hits[options.offset : options.depth]
    return Arranged(_shown(search, page, options), fired)


def _shifted(
    rules: Sequence[Rule], hits: list[Hit], meta: CollectionMeta, fired: list[dict[str, Any]]
) -> list[Hit]:
    """Boosts and buries as rank shifts, summed per product; equal shifted ranks by rank. A
    filter forgives case as the query's do (`filters.for_collection`)."""
    shift = [0] * len(hits)
    for rule in rules:
        for kind, sign, shifts in (("boost", -1, rule.boosts), ("bury", 1, rule.buries)):
            for s in shifts:
                matched = 0
                conditions = for_collection(s.conditions, meta)
                for j, hit in enumerate(hits):
                    if passes(conditions, hit.payload):
                        shift[j] += sign * s.by
                        matched += 1
                fired.append(
                    {
                        "rule": rule.label,
                        "effect": kind,
                        "filter": list(s.filters),
                        "by": s.by,
                        "products": matched,
                    }
                )
    if not any(shift):
        return hits
    order = sorted(range(len(hits)), key=lambda j: (j + shift[j], j))
    return [hits[j] for j in order]


def _pinned(
    search: ProductSearch, plan: _Plan, hits: list[Hit], fired: list[dict[str, Any]]
) -> list[Hit]:
    """Pins placed in rule order (module docstring, step 5)."""
    pins = [(rule, pid, position) for rule in plan.rules for pid, position in rule.pins]
    if not pins:
        return hits
    hidden = set(plan.hidden)
    where = {h.product_id: j for j, h in enumerate(hits)}
    family_of = {v: j for j, h in enumerate(hits) for v in h.other_variants}
    wanted = [
        pid for _, pid, _ in pins if pid not in hidden and pid not in where and pid not in family_of
    ]
    passing = {pid for pid in dict.fromkeys(wanted) if _passes_filters(search, plan.query, pid)}
    variants = {pid for _, pid, _ in pins if pid in family_of and pid not in hidden}
    looked_up = sorted(passing | variants)
    stored = search.backend.payloads([point_id(p) for p in looked_up]) if looked_up else {}
    taken: dict[int, Hit] = {}
    moved: set[int] = set()
    entries: list[tuple[dict[str, Any], Hit]] = []
    done: set[str] = set()
    for rule, pid, position in pins:
        entry: dict[str, Any] = {
            "rule": rule.label, "effect": "pin", "product_id": pid, "position": None,
        }  # fmt: skip
        fired.append(entry)
        hit: Hit | None = None
        if pid in hidden:
            entry["skipped"] = "hidden by a rule"
        elif pid in done:
            entry["skipped"] = "pinned by an earlier rule"
        elif pid in where:
            hit = hits[where[pid]]
            moved.add(where[pid])
        elif pid in family_of and point_id(pid) in stored:
            family = hits[family_of[pid]]
            others = [family.product_id, *(v for v in family.other_variants if v != pid)]
            hit = replace(
                family,
                point_id=point_id(pid),
                payload=stored[point_id(pid)],
                other_variants=tuple(others),
            )
            moved.add(family_of[pid])
        elif pid in passing and point_id(pid) in stored:
            hit = Hit(point_id(pid), 0.0, stored[point_id(pid)])
        else:
            entry["skipped"] = "not found under the query's filters"
        if hit is None:
            continue
        done.add(pid)
        slot = position - 1
        while slot in taken:
            slot += 1
        taken[slot] = hit
        entries.append((entry, hit))
    arranged = [h for j, h in enumerate(hits) if j not in moved]
    for slot in sorted(taken):
        arranged.insert(min(slot, len(arranged)), taken[slot])
    placed = {id(h): n + 1 for n, h in enumerate(arranged)}
    for entry, hit in entries:
        entry["position"] = placed[id(hit)]
    return arranged


def _passes_filters(search: ProductSearch, query: Query, product_id: str) -> bool:
    """Whether the product exists and passes the query's filters (its hidden products
    included), asked of the backend: its filtering is the one the search applied."""
    conditions = [*query.conditions, Match("product_id", (product_id,))]
    return search.backend.count(conditions) > 0


def _shown(search: ProductSearch, page: list[Hit], options: SearchOptions) -> list[Hit]:
    """The page's hits with the payload the search was asked for: the whole payload, read for
    the page alone, or the named fields."""
    if options.payload_fields is None:
        missing = [h.point_id for h in page]
        stored = search.backend.payloads(missing) if missing else {}
        return [replace(h, payload=stored.get(h.point_id, h.payload)) for h in page]
    keep = [*options.payload_fields, *(FAMILY_FIELDS if options.collapse_variants else ())]
    return [replace(h, payload={k: h.payload[k] for k in keep if k in h.payload}) for h in page]
