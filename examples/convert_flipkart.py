"""Convert the public Flipkart Products CSV into the shopsearch demo catalog (Parquet).

Usage (from the repository root)::

    python examples/convert_flipkart.py [--src PATH] [--out examples/catalog.parquet]

The source is the "Flipkart Products" dataset by PromptCloud, published on Kaggle under
CC BY-SA 4.0 (about 1,000 products). The derived ``catalog.parquet`` is shared under the same
license; see ``examples/README.md``.

The copy we convert from is a lightly pre-processed variant of the Kaggle file: text is
lower-cased, the category tree is a Python list literal with punctuation removed
(``"['footwear', 'womens footwear', 'ballerinas', 'aw bellies']"``), specifications are a
Python literal (``"[{'key': 'Color', 'value': 'Red'}, {'value': '...'}]"``) and a missing
rating is ``0.0``. The parsers below also accept the original Kaggle forms (``"a >> b"``
trees, Ruby-hash specifications, ``"No rating available"``).

Quoted fields contain newlines, so the CSV is read with Python's ``csv`` module
(``pyarrow.csv`` cannot parse it).

Output schema (one row per product; every row with an id and a title is kept)::

    id          string                 Flipkart pid (uniq_id if pid is missing or duplicated)
    title       string                 product_name, whitespace-normalised
    description string (nullable)      whitespace-normalised
    brand       string (nullable)
    category    list<string>           category path, root first (nullable)
    price       double (nullable)      discounted_price, else retail_price
    currency    string                 always "INR"
    color       string (nullable)      specification "Color"/"Colour"
    size        string (nullable)      specification "Size"
    in_stock    bool                   always true (the dataset has no stock information)
    attributes  map<string, string>    every other keyed specification
    url         string                 product_url
    image_url   string (nullable)      first image URL
    rating      double (nullable)      product_rating, null when unrated
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SRC = REPO_ROOT.parent / "shared" / "data" / "flipkart" / "products.csv"
DEFAULT_OUT = REPO_ROOT / "examples" / "catalog.parquet"
ROW_GROUP_SIZE = 250  # several row groups, so streaming readers see more than one batch
CURRENCY = "INR"
MAX_CATEGORY_LEN = 60  # longer "categories" are product names that leaked into the tree

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("title", pa.string()),
        pa.field("description", pa.string()),
        pa.field("brand", pa.string()),
        pa.field("category", pa.list_(pa.string())),
        pa.field("price", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("color", pa.string()),
        pa.field("size", pa.string()),
        pa.field("in_stock", pa.bool_()),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
        pa.field("url", pa.string()),
        pa.field("image_url", pa.string()),
        pa.field("rating", pa.float64()),
    ],
    metadata={
        "source": "Flipkart Products dataset by PromptCloud (Kaggle)",
        "license": "CC BY-SA 4.0",
    },
)

COLOR_KEYS = {"color", "colour"}
SIZE_KEYS = {"size"}

# Ruby-hash form of the original Kaggle file: {"key"=>"Type", "value"=>"Bellies"}
_RUBY_PAIR = re.compile(r'"(key|value)"\s*=>\s*"((?:[^"\\]|\\.)*)"')
_RUBY_ITEM = re.compile(r"\{([^{}]*)\}")
_NON_ALNUM = re.compile(r"[^a-z0-9 ]+")


def clean(text: str | None) -> str | None:
    """Collapse all whitespace to single spaces; empty -> None."""
    if text is None:
        return None
    out = " ".join(text.split())
    return out or None


def _norm(text: str) -> str:
    """Lower-case, drop punctuation, collapse spaces: for comparing names with tree nodes."""
    return " ".join(_NON_ALNUM.sub("", text.lower()).split())


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return None


def parse_category_tree(raw: str) -> list[str]:
    """Return the category path, root first, from either supported tree format."""
    raw = raw.strip()
    if not raw:
        return []
    # a list literal (either format: '["Clothing >> Women\'s Clothing >> ..."]' holds one
    # string), else a bare 'a >> b'
    value = _literal(raw) if raw.startswith("[") else None
    parts = [str(v) for v in value] if isinstance(value, list) else [raw.strip("[]\"' ")]
    path: list[str] = []
    for part in parts:
        path.extend(p for p in (clean(x) for x in part.split(">>")) if p)
    return path


def _is_name_echo(leaf: str, parent: str | None, title: str) -> bool:
    """True when the last tree node is (a truncated copy of) the product name.

    Flipkart trees often end with the product name, cut at ~50 chars and stripped of
    punctuation ("bengal blooms rose artificial plant  with pot 3"). Nodes of the form
    "<brand> <parent>" ("ozel studio tops" under "tops") are real brand categories and kept
    unless they are the whole product name.
    """
    if len(leaf) > MAX_CATEGORY_LEN:
        return True
    node, name = _norm(leaf), _norm(title)
    if not node or node == name:
        return True
    if parent and node != _norm(parent) and node.endswith(" " + _norm(parent)):
        return False
    if name.startswith(node) or node.startswith(name):
        return True
    node_tokens, name_tokens = node.split(), name.split()
    common = 0
    for a, b in zip(node_tokens, name_tokens, strict=False):
        if a != b:
            break
        common += 1
    # a truncated name whose last token was cut or mangled
    return common >= 3 and common >= len(node_tokens) - 1


def category_path(raw: str, title: str) -> list[str] | None:
    path = parse_category_tree(raw)
    if path and _is_name_echo(path[-1], path[-2] if len(path) > 1 else None, title):
        path = path[:-1]
    return path or None


def parse_specifications(raw: str) -> list[tuple[str | None, str]]:
    """(key, value) pairs; key is None for the key-less entries the dataset contains."""
    raw = raw.strip()
    if not raw:
        return []
    if "=>" in raw:  # Ruby-hash form of the original Kaggle file
        items: list[dict[str, str]] = [
            {k: v.replace('\\"', '"') for k, v in _RUBY_PAIR.findall(m.group(1))}
            for m in _RUBY_ITEM.finditer(raw.split("=>", 1)[1])
        ]
    else:
        value = _literal(raw)
        if isinstance(value, dict):  # a few rows hold a single dict instead of a list
            value = [value]
        items = [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
    pairs: list[tuple[str | None, str]] = []
    for item in items:
        val = clean(str(item.get("value") or ""))
        if val is None:
            continue
        pairs.append((clean(str(item.get("key") or "")), val))
    return pairs


def _tidy_color(value: str) -> str:
    # "BLACK" and "Black" occur both; keep one spelling so keyword filters match
    return value.title() if value.isupper() else value


def split_specifications(
    pairs: Iterable[tuple[str | None, str]],
) -> tuple[str | None, str | None, list[tuple[str, str]]]:
    """Pull color and size out of the specifications; the keyed rest become attributes."""
    color: str | None = None
    size: str | None = None
    attrs: dict[str, list[str]] = {}
    for key, value in pairs:
        if key is None:  # free-text entries without a key ("One Pair Of Shoes") are skipped
            continue
        low = key.lower()
        if low in COLOR_KEYS and color is None:
            color = _tidy_color(value)
            continue
        if low in SIZE_KEYS and size is None:
            size = value
            continue
        values = attrs.setdefault(key, [])
        if value not in values:
            values.append(value)
    # a map must not repeat keys: repeated specifications are joined
    return color, size, [(k, "; ".join(v)) for k, v in attrs.items()]


def parse_price(*candidates: str) -> float | None:
    """The first positive number among the candidates (0.0 means "no price" here)."""
    for raw in candidates:
        try:
            value = float(raw.replace(",", "").strip())
        except (ValueError, AttributeError):
            continue
        if value > 0:
            return value
    return None


def parse_rating(raw: str) -> float | None:
    """Numeric product_rating; "No rating available" and the placeholder 0.0 become null."""
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    return value if 0 < value <= 5 else None


def first_image(raw: str) -> str | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = _literal(raw)
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        for url in value:
            if isinstance(url, str) and url.strip():
                return url.strip()
    return None


def read_rows(src: Path) -> Iterator[dict[str, str]]:
    csv.field_size_limit(sys.maxsize)
    with src.open(newline="", encoding="utf-8") as fh:
        yield from csv.DictReader(fh)


def convert(rows: Iterable[dict[str, str]]) -> tuple[list[dict[str, Any]], int]:
    """Turn CSV rows into catalog records; returns (records, rows skipped)."""
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    skipped = 0
    for row in rows:
        title = clean(row.get("product_name"))
        pid = clean(row.get("pid"))
        if not pid or pid in seen:
            pid = clean(row.get("uniq_id"))
        if not title or not pid or pid in seen:
            skipped += 1
            continue
        seen.add(pid)
        color, size, attributes = split_specifications(
            parse_specifications(row.get("product_specifications") or "")
        )
        records.append(
            {
                "id": pid,
                "title": title,
                "description": clean(row.get("description")),
                "brand": clean(row.get("brand")),
                "category": category_path(row.get("product_category_tree") or "", title),
                "price": parse_price(
                    row.get("discounted_price") or "", row.get("retail_price") or ""
                ),
                "currency": CURRENCY,
                "color": color,
                "size": size,
                "in_stock": True,  # the dataset carries no stock information
                "attributes": attributes,
                "url": clean(row.get("product_url")),
                "image_url": first_image(row.get("image") or ""),
                "rating": parse_rating(row.get("product_rating") or ""),
            }
        )
    return records, skipped


def write_catalog(records: list[dict[str, Any]], out: Path) -> pa.Table:
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out, row_group_size=ROW_GROUP_SIZE)
    return table


def summarize(table: pa.Table, skipped: int, out: Path) -> str:
    def non_null(name: str) -> int:
        return len(table) - table.column(name).null_count

    with_attrs = sum(1 for a in table.column("attributes").to_pylist() if a)
    groups = pq.ParquetFile(out).metadata.num_row_groups
    return (
        f"wrote {len(table)} rows to {out} ({groups} row groups; {skipped} rows skipped)\n"
        f"  with brand:      {non_null('brand')}\n"
        f"  with price:      {non_null('price')}\n"
        f"  with color:      {non_null('color')}\n"
        f"  with size:       {non_null('size')}\n"
        f"  with category:   {non_null('category')}\n"
        f"  with rating:     {non_null('rating')}\n"
        f"  with attributes: {with_attrs}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=DEFAULT_SRC, help="Flipkart products CSV")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output Parquet file")
    args = parser.parse_args(argv)
    if not args.src.is_file():
        parser.error(f"source CSV not found: {args.src}")
    records, skipped = convert(read_rows(args.src))
    table = write_catalog(records, args.out)
    print(summarize(table, skipped, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
