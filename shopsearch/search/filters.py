"""`--filter` expressions: parsed once into backend-neutral conditions.

Grammar (conditions are ANDed):
    FIELD = VALUE          brand=DeWalt   in_stock=true   price=19.99
    FIELD != VALUE         brand!=Generic
    FIELD <, <=, >, >= N   price<=150     price>10
    FIELD in (A, B, ...)   color in (red, blue)
    FIELD not in (A, ...)  brand not in (Acme, Generic)
Values may be quoted ('...' or "...") to keep commas or spaces. FIELD is an indexed
payload field of the schema or `attributes.<key>`, where the key is everything up to the
operator (`attributes.Ideal For=Women`; quote a key holding = ! < > or a quote:
`attributes.'Size (UK)'=9`). A category value with ` > ` is a path, as tables print it:
`category=womens footwear > casual shoes` needs every level it names. Each backend turns
the conditions into its own filter models, so parsing and validation live in one place.

Keyword values forgive case: on a collection holding normalised copies of brand, category,
color, size, currency and the attribute values (`MATCH_FIELDS`, recorded in its metadata),
`for_collection` points a condition on those fields at the copy with its values normalised
the same way, so `brand=Nike` matches a stored "nike" or "NIKE" while results show the
stored spelling. A collection without the copies (ingested before they were kept) matches exactly.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

from shopsearch.errors import FilterError
from shopsearch.store.conditions import CategoryPath, Condition, Match, Range, Scalar
from shopsearch.store.schema import (
    ATTRIBUTES_FIELD,
    INDEXED_FIELDS,
    MATCH_KEY,
    CollectionMeta,
    FieldType,
    normalise,
)

# An attribute key runs up to the operator (spaces, dots and slashes included: catalogs have
# "Ideal For", "Model No.", "Precious/Artificial Jewellery"), or is quoted.
_ATTRIBUTE_KEY = r"""(?:"[^"]*"|'[^']*'|[^=!<>"'\s][^=!<>"]*?)"""
_FIELD = rf"(?P<field>{ATTRIBUTES_FIELD}\.{_ATTRIBUTE_KEY}|[A-Za-z_][\w.\-]*)"
# A plain key in Qdrant's JSON path syntax; any other is quoted: attributes."Model No."
_PLAIN_KEY_RE = re.compile(r"[A-Za-z_][\w\-]*")
_PATH_RE = re.compile(r"\s>\s")  # ` > ` makes a path, split at each `>`
_PATH_SEPARATOR_RE = re.compile(r"\s*>\s*")
_LIST_RE = re.compile(rf"^\s*{_FIELD}\s+(?P<op>not\s+in|in)\s*\((?P<items>.*)\)\s*$", re.I)
_CMP_RE = re.compile(rf"^\s*{_FIELD}\s*(?P<op><=|>=|!=|==|=|<|>)\s*(?P<value>.*?)\s*$")
_ITEM_RE = re.compile(r"""\s*("[^"]*"|'[^']*'|[^,]+)\s*(?:,|$)""")
_TRUE = {"true", "yes", "1"}
_FALSE = {"false", "no", "0"}


def parse_filters(expressions: Iterable[str]) -> list[Condition]:
    return [parse_filter(e) for e in expressions]


def for_collection(conditions: Sequence[Condition], meta: CollectionMeta) -> list[Condition]:
    """The conditions as the collection is searched: a keyword match on a field whose
    normalised copy the collection holds (`meta.match_fields`) compares the copy
    (`match.brand`, `match.attributes."Ideal For"`) with its values normalised likewise;
    anything else is left as it is. Conditions already pointed at a copy stay as they are, so
    a query may be prepared twice."""
    return [_forgiving(c, meta.match_fields) for c in conditions]


def _forgiving(cond: Condition, match_fields: Sequence[str]) -> Condition:
    if not isinstance(cond, Match) or _folded_field(cond.field) not in match_fields:
        return cond
    values: list[Scalar | CategoryPath] = []
    for value in cond.values:
        if isinstance(value, tuple):
            value = tuple(normalise(level) for level in value)
        elif isinstance(value, str):
            value = normalise(value)
        if value not in values:  # `color in (black, BLACK)` asks for one value
            values.append(value)
    return Match(f"{MATCH_KEY}.{cond.field}", tuple(values), cond.negate)


def _folded_field(field: str) -> str:
    """The MATCH_FIELDS name a condition's field has a copy under: an attribute key's is
    the attribute map's."""
    return ATTRIBUTES_FIELD if field.startswith(f"{ATTRIBUTES_FIELD}.") else field


def parse_filter(expression: str) -> Condition:
    if not _is_utf8(expression):
        # A command-line argument of invalid UTF-8 arrives with its bytes escaped as lone
        # surrogates, which no JSON or Qdrant payload can carry.
        raise FilterError(f"bad --filter {expression!r}: not valid UTF-8")
    listed = _LIST_RE.match(expression)
    if listed:
        field = _check_field(expression, listed["field"])
        items = [_unquote(m.group(1)) for m in _ITEM_RE.finditer(listed["items"])]
        items = [i for i in items if i]
        if not items:
            raise FilterError(f"bad --filter {expression!r}: empty list")
        if _kind(field) is FieldType.FLOAT:
            raise FilterError(f"bad --filter {expression!r}: use <, <=, >, >= for '{field}'")
        if _kind(field) is FieldType.BOOL:
            raise FilterError(f"bad --filter {expression!r}: use {field}=true or {field}=false")
        values = tuple(_value(expression, field, i) for i in items)
        return Match(field, values, negate=listed["op"].lower() != "in")

    compared = _CMP_RE.match(expression)
    if not compared or not compared["value"]:
        raise FilterError(
            f"bad --filter {expression!r}: expected FIELD=VALUE, FIELD!=VALUE, FIELD<=N, "
            "FIELD>=N, FIELD<N, FIELD>N or FIELD in (A,B)"
        )
    field = _check_field(expression, compared["field"])
    op, raw = compared["op"], _unquote(compared["value"])
    kind = _kind(field)
    if op in ("<", "<=", ">", ">="):
        if kind is not FieldType.FLOAT:
            raise FilterError(f"bad --filter {expression!r}: '{field}' is not numeric")
        number = _number(expression, raw)
        key = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}[op]
        return Range(field, **{key: number})
    if kind is FieldType.FLOAT:
        if op == "!=":
            raise FilterError(f"bad --filter {expression!r}: '!=' is not supported on '{field}'")
        number = _number(expression, raw)
        return Range(field, gte=number, lte=number)
    return Match(field, (_value(expression, field, raw),), negate=op == "!=")


def _check_field(expression: str, field: str) -> str:
    """The payload key for Qdrant: an attribute key that is not a plain word is quoted, or
    Qdrant would read its dots as nesting and reject its spaces."""
    if field in INDEXED_FIELDS:
        return field
    prefix = ATTRIBUTES_FIELD + "."
    key = _unquote(field[len(prefix) :]) if field.startswith(prefix) else ""
    if key and ('"' in key or "\\" in key):
        # Qdrant's JSON paths quote a key with '"' and have no escape: neither may appear in one.
        raise FilterError(
            f"bad --filter {expression!r}: Qdrant cannot filter a key with '\"' or '\\'"
        )
    if key:
        return prefix + (key if _PLAIN_KEY_RE.fullmatch(key) else f'"{key}"')
    known = ", ".join([*INDEXED_FIELDS, f"{ATTRIBUTES_FIELD}.<key>"])
    raise FilterError(f"bad --filter {expression!r}: unknown field '{field}' (filterable: {known})")


def _kind(field: str) -> FieldType:
    return INDEXED_FIELDS.get(field, FieldType.KEYWORD)


def _value(expression: str, field: str, raw: str) -> Scalar | CategoryPath:
    if field == "category" and _PATH_RE.search(raw):
        levels = tuple(level.strip() for level in _PATH_SEPARATOR_RE.split(raw))
        if not all(levels):
            raise FilterError(f"bad --filter {expression!r}: empty level in category {raw!r}")
        return levels
    if _kind(field) is FieldType.BOOL:
        lowered = raw.lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise FilterError(f"bad --filter {expression!r}: '{field}' takes true or false")
    return raw


def _number(expression: str, raw: str) -> float:
    try:
        number = float(raw)
    except ValueError:
        raise FilterError(f"bad --filter {expression!r}: {raw!r} is not a number") from None
    if not math.isfinite(number):
        raise FilterError(f"bad --filter {expression!r}: {raw!r} is not a finite number")
    return number


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


_RANGE_KEYS = ("gt", "gte", "lt", "lte")
_OBJECT_KEYS = ("eq", "ne", "in", "not_in", *_RANGE_KEYS)


def parse_filter_object(spec: object) -> list[Condition]:
    """Filters as a JSON object, the form a program sends rather than types (the HTTP
    service): `{"brand": ["nike", "puma"], "price": {"lte": 150}, "in_stock": true}`. A value
    is one value to equal, a list of values any of which matches, or an object of operators:
    `eq`, `ne`, `in`, `not_in`, and `gt`/`gte`/`lt`/`lte` for numbers (they combine). Fields
    and values are checked as the `--filter` grammar checks them, with the same messages."""
    if not isinstance(spec, dict):
        raise FilterError(f"filters must be a JSON object of field: value, not {spec!r}")
    conditions: list[Condition] = []
    for name, value in spec.items():
        where = f"filter {name!r}"
        try:
            conditions += _object_conditions(where, str(name), value)
        except FilterError as exc:  # the grammar's checks name a --filter expression
            raise FilterError(str(exc).replace(f"--filter {where!r}", where)) from None
    return conditions


def _object_conditions(where: str, name: str, value: object) -> list[Condition]:
    field = _check_field(where, name)
    shorthand = {"in" if isinstance(value, list) else "eq": value}
    ops = value if isinstance(value, dict) else shorthand
    unknown = sorted(set(ops) - set(_OBJECT_KEYS))
    if unknown:
        raise FilterError(
            f"bad {where}: unknown operator {unknown[0]!r} (use {', '.join(_OBJECT_KEYS)})"
        )
    if not ops:
        raise FilterError(f"bad {where}: no operator")
    conditions: list[Condition] = []
    bounds = {k: ops[k] for k in _RANGE_KEYS if k in ops}
    if bounds:
        if _kind(field) is not FieldType.FLOAT:
            raise FilterError(f"bad {where}: '{field}' is not numeric")
        numbers = {k: _object_number(where, v) for k, v in bounds.items()}
        conditions.append(Range(field, **numbers))
    for op in ("eq", "ne", "in", "not_in"):
        if op in ops:
            conditions.append(_object_match(where, field, op, ops[op]))
    return conditions


def _object_match(where: str, field: str, op: str, raw: object) -> Condition:
    listed = op in ("in", "not_in")
    if listed and not (isinstance(raw, list) and raw):
        raise FilterError(f"bad {where}: '{op}' takes a non-empty list")
    items = raw if listed else [raw]
    kind = _kind(field)
    if kind is FieldType.FLOAT:
        if op != "eq":
            raise FilterError(f"bad {where}: use eq, gt, gte, lt, lte for '{field}'")
        number = _object_number(where, items[0])
        return Range(field, gte=number, lte=number)
    values = []
    for item in items:
        if kind is FieldType.BOOL:
            if not isinstance(item, bool):
                raise FilterError(f"bad {where}: '{field}' takes true or false")
            values.append(item)
        elif isinstance(item, str | int | float) and not isinstance(item, bool):
            values.append(_value(where, field, str(item)))
        else:
            raise FilterError(f"bad {where}: {item!r} is not a value of '{field}'")
    return Match(field, tuple(values), negate=op in ("ne", "not_in"))


def _object_number(where: str, raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise FilterError(f"bad {where}: {raw!r} is not a number")
    if not math.isfinite(raw):
        raise FilterError(f"bad {where}: {raw!r} is not a finite number")
    return float(raw)
