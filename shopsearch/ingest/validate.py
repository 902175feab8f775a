"""Row validation: every row becomes a Product or a Reject with a reason.

A shop's catalog export is never clean. Rejecting a row (and saying why) instead of
failing the run or silently fixing data keeps the counts honest:
read = upserted + rejected.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Collection
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from shopsearch.ingest.readers import RawRow
from shopsearch.store.schema import MATCH_FIELDS, MATCH_KEY, match_copy

MAX_ID_CHARS = 512
MAX_TITLE_CHARS = 1_000
MAX_TEXT_CHARS = 50_000  # description
MAX_SHORT_CHARS = 2_000  # brand, color, size, urls, ...
MAX_ATTRIBUTES = 200
# Significant digits a price keeps. Qdrant Edge reads payload numbers with a parser that is not
# correctly rounded: it stores about 1 in 10 numbers of 16 or 17 digits (0.1 + 0.2, a computed
# price) one unit in the last place off, so the product would hold another price than the
# catalog's and never read as unchanged, and be encoded again by every ingest. Numbers of 15
# digits are stored exactly (20,000 of 20,000 from 0.001 to 1e9), and 15 digits is far past
# a price's cents.
PRICE_DIGITS = 15
_CATEGORY_PATH = re.compile(r"\s*>>?\s*")
_CATEGORY_PATH_NO_GT = re.compile(r"\s*[/|]\s*")
# A comma in a price only groups thousands: "1,299.00". "19,99" (a decimal comma) is
# rejected rather than read as 1999, a price off by a factor of 100.
_GROUPED_PRICE = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_PRICE_FORMAT = "expected digits with a decimal point, commas only between thousands: 1,299.50"
_TRUE = {"true", "yes", "y", "1", "in stock", "instock", "t"}
_FALSE = {"false", "no", "n", "0", "out of stock", "outofstock", "f"}
_SHORT_FIELDS = ("brand", "currency", "color", "size", "parent_id", "url", "image_url")


@dataclass(frozen=True)
class Product:
    id: str
    title: str
    description: str | None = None
    brand: str | None = None
    category: tuple[str, ...] | None = None
    price: float | None = None
    currency: str | None = None
    color: str | None = None
    size: str | None = None
    in_stock: bool | None = None
    parent_id: str | None = None
    attributes: dict[str, str] | None = None
    url: str | None = None
    image_url: str | None = None
    # The collection's rank fields this product has a value of (`ingest --rank-field`),
    # each a top-level number of the payload.
    ranks: tuple[tuple[str, float], ...] = ()

    def payload(self, match_fields: Collection[str] = MATCH_FIELDS) -> dict[str, Any]:
        """The point payload (the public schema): catalog fields, nulls left out, and the
        normalised copy of `match_fields` that case-forgiving filters compare (`match_copy`,
        under MATCH_KEY; left out where there is none). `match_fields`: those the collection
        records (`CollectionMeta.match_fields`), so that a collection without the copies keeps
        its payloads' shape, and its unchanged products are not encoded again."""
        payload: dict[str, Any] = {"product_id": self.id}
        for name in Product.__dataclass_fields__:
            value = getattr(self, name)
            if name in ("id", "ranks") or value is None:
                continue
            payload[name] = list(value) if name == "category" else value
        if self.category:
            payload["category_path"] = " > ".join(self.category)
        payload.update(self.ranks)
        copy = match_copy(payload, match_fields)
        if copy:
            payload[MATCH_KEY] = copy
        return payload

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> Product:
        """The product a stored payload was made of: `payload` the other way round."""
        fields = {k: v for k, v in payload.items() if k in cls.__dataclass_fields__}
        if fields.get("category"):
            fields["category"] = tuple(fields["category"])
        return cls(id=payload["product_id"], **fields)


@dataclass(frozen=True)
class Reject:
    row: int
    id: str | None
    field: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"row": self.row, "id": self.id, "field": self.field, "reason": self.reason}


class BadField(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def validate(raw: RawRow, rank_fields: Collection[str] = ()) -> Product | Reject:
    """`rank_fields`: the numeric fields the collection ranks by, each kept when the row has
    a value (`price` is kept as the price)."""
    if raw.data is None:
        try:
            named = _id(raw.id)
        except BadField:
            named = None
        return Reject(raw.row, named, raw.field, raw.error or "unreadable row")
    data = raw.data
    product_id: str | None = None
    try:
        product_id = _id(data.get("id"))
        values: dict[str, Any] = {
            "id": product_id,
            "title": _text("title", data.get("title"), MAX_TITLE_CHARS, required=True),
            "description": _text("description", data.get("description"), MAX_TEXT_CHARS),
            "category": _category(data.get("category")),
            "price": _price(data.get("price")),
            "in_stock": _bool("in_stock", data.get("in_stock")),
            "attributes": _attributes(data.get("attributes")),
        }
        for name in _SHORT_FIELDS:
            values[name] = _text(name, data.get(name), MAX_SHORT_CHARS)
        ranks = ((n, _rank_value(n, data.get(n))) for n in rank_fields if n != "price")
        values["ranks"] = tuple((n, v) for n, v in ranks if v is not None)
        return Product(**values)
    except BadField as bad:
        return Reject(raw.row, product_id, bad.field, bad.reason)


def _missing(value: Any) -> bool:
    """None, or the float NaN that pandas and Spark write for a missing value."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def _integral(value: Any) -> Any:
    """100.0 -> 100: pandas turns an integer column with a gap into floats, and the id
    or size it held is "100", not "100.0"."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _id(value: Any) -> str:
    if _missing(value):
        raise BadField("id", "missing id")
    value = _integral(value)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadField("id", f"id must be a string or integer, got {_describe(value)}")
    text = _clean(str(value), "id")
    if not text:
        raise BadField("id", "missing id")
    if len(text) > MAX_ID_CHARS:
        raise BadField("id", f"id is {len(text)} characters long (max {MAX_ID_CHARS})")
    return text


def _text(field: str, value: Any, max_chars: int, required: bool = False) -> str | None:
    if _missing(value):
        if required:
            raise BadField(field, f"missing {field}")
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = str(_integral(value))
    if not isinstance(value, str):
        raise BadField(field, f"{field} must be text, got {_describe(value)}")
    text = " ".join(_clean(value, field).split())
    if not text:
        if required:
            raise BadField(field, f"missing {field}")
        return None
    if len(text) > max_chars:
        raise BadField(field, f"{field} is {len(text)} characters long (max {max_chars})")
    return text


def _clean(text: str, field: str) -> str:
    if "\ufffd" in text:
        raise BadField(field, f"{field} has bad encoding (U+FFFD replacement characters)")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadField(field, f"{field} has bad encoding (unpaired surrogates)") from None
    if "\x00" in text:
        raise BadField(field, f"{field} contains NUL characters")
    return text.strip()


def _category(value: Any) -> tuple[str, ...] | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            try:
                value = json.loads(stripped)
            except (ValueError, RecursionError):  # not JSON after all: a path
                value = _category_levels(stripped)
        else:
            value = _category_levels(stripped)
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise BadField("category", f"category must be text or a list, got {_describe(value)}")
    parts = tuple(p for p in (_text("category", v, MAX_SHORT_CHARS) for v in value) if p)
    return parts or None


def _category_levels(path: str) -> list[str]:
    """'>' is the documented separator, and a level may itself contain '/' or '|'
    ("Band T-Shirts/Tops", "1/4 in."); only a path with no '>' at all, as some exports
    write them ("Men/Tops"), is split on '/' and '|'."""
    return (_CATEGORY_PATH if ">" in path else _CATEGORY_PATH_NO_GT).split(path)


def _price(value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    price = _number("price", value, hint=_PRICE_FORMAT)
    if math.isnan(price):
        raise BadField("price", "price is NaN")
    if math.isinf(price) or price < 0:
        raise BadField("price", f"price {price} is out of range (must be finite and >= 0)")
    return float(f"{price:.{PRICE_DIGITS}g}")


def _rank_value(field: str, value: Any) -> float | None:
    """A rank field's number, read as a price is; missing or blank is None; anything else
    rejects the row, naming the field."""
    if _missing(value) or (isinstance(value, str) and not value.strip()):
        return None
    number = _number(field, value)
    if not math.isfinite(number):
        raise BadField(field, f"{field} {number} is not a finite number")
    return float(f"{number:.{PRICE_DIGITS}g}")


def _number(field: str, value: Any, hint: str | None = None) -> float:
    """A number cell, a decimal, or digits in text (thousands grouped by commas allowed);
    anything else rejects the row, naming `field` (and `hint`, where a comma suggests
    another number format)."""
    if isinstance(value, bool):
        raise BadField(field, f"{field} must be a number, got a boolean")
    if isinstance(value, Decimal):  # a Spark/parquet decimal column
        value = math.nan if value.is_nan() else float(value)
    if isinstance(value, str):
        text = value.strip()
        if "," in text and _GROUPED_PRICE.fullmatch(text):
            text = text.replace(",", "")
        try:
            value = float(text)
        except ValueError:
            shown = f" ({hint})" if hint and "," in text else ""
            message = f"{field} {value.strip()[:40]!r} is not a number{shown}"
            raise BadField(field, message) from None
    if not isinstance(value, int | float):
        raise BadField(field, f"{field} must be a number, got {_describe(value)}")
    return float(value)


def _bool(field: str, value: Any) -> bool | None:
    if _missing(value):
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):  # 1.0: a pandas column with gaps
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if not lowered:
            return None
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise BadField(field, f"{field} must be true or false, got {str(value)[:40]!r}")


def _attributes(value: Any) -> dict[str, str] | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        value = _json("attributes", value)
    if isinstance(value, list | tuple):
        value = _entries(value)
    if not isinstance(value, dict):
        raise BadField("attributes", f"attributes must be a map, got {_describe(value)}")
    if len(value) > MAX_ATTRIBUTES:
        raise BadField("attributes", f"{len(value)} attributes (max {MAX_ATTRIBUTES})")
    attributes: dict[str, str] = {}
    for key, item in value.items():
        name = _text("attributes", str(key), MAX_SHORT_CHARS)
        if name is None or _missing(item):
            continue
        if name in attributes:  # two keys that read the same: "Color" and " Color", 1 and "1"
            raise BadField("attributes", f"attributes key {name[:40]!r} appears twice")
        if isinstance(item, list | dict):  # default=str: a nested Decimal or date
            item = json.dumps(item, ensure_ascii=False, default=str)
        text = _text("attributes", str(_integral(item)), MAX_SHORT_CHARS)
        if text is not None:
            attributes[name] = text
    return attributes or None


def _json(field: str, text: str) -> Any:
    """A JSON cell of a CSV catalog; an object that gives a key twice is refused, as `json`
    would keep the last value without a word."""
    try:
        return json.loads(text, object_pairs_hook=functools.partial(_unique_keys, field))
    except BadField:
        raise
    except json.JSONDecodeError as exc:
        raise BadField(field, f"{field} is not valid JSON ({exc.msg})") from None
    except ValueError as exc:  # a number over Python's 4300-digit limit
        raise BadField(field, f"{field} is not valid JSON ({exc})") from None
    except RecursionError:
        raise BadField(field, f"{field} is not valid JSON (nested too deeply)") from None


def _unique_keys(field: str, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise BadField(field, f"{field} key {key[:40]!r} appears twice")
        mapping[key] = value
    return mapping


def _entries(entries: list[Any] | tuple[Any, ...]) -> dict[Any, Any]:
    """A map stored as a list of its entries, as parquet writes one: pyarrow reads
    `map<K, V>` as `[(key, value), ...]`, and Spark's and pandas' `list<struct<key, value>>`
    as `[{"key": ..., "value": ...}, ...]`; a JSON catalog may hold `[[key, value], ...]`.
    Any other list is no map: turned into a dict as it stands, a struct's field names become
    the key and value of every row, and a list of two-letter strings a map of letters. A key
    given twice is refused, as neither of its values is more right than the other."""
    mapping: dict[Any, Any] = {}
    for number, entry in enumerate(entries, 1):
        if isinstance(entry, dict) and entry.keys() == {"key", "value"}:
            key, item = entry["key"], entry["value"]
        elif isinstance(entry, list | tuple) and len(entry) == 2:
            key, item = entry
        else:
            shape = f"fields {', '.join(map(str, entry))}" if isinstance(entry, dict) else None
            raise BadField(
                "attributes",
                f"attributes entry {number} is no key/value pair (got "
                f"{shape or _describe(entry)}): expected a map, a list of "
                "{key, value} structs or of [key, value] pairs",
            )
        if _missing(key) or isinstance(key, list | dict):
            raise BadField("attributes", f"attributes entry {number} has no usable key")
        if key in mapping:
            raise BadField("attributes", f"attributes key {str(key)[:40]!r} appears twice")
        mapping[key] = item
    return mapping


def _describe(value: Any) -> str:
    if isinstance(value, dict):  # a JSON object as the JSONL reader builds it, too
        return "dict"
    return type(value).__name__
