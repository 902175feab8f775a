"""Generated catalogs with what an ingest must make of them, for the fault suite
(tests/faults/) and its soak mode (benchmarks/faults.py).

A generated catalog is a list of rows, each row a set of fields drawn from what shops export:
text with stray whitespace and any script, ids as text or integers and given twice, prices as
numbers or text ("1,299.50"), stock flags as booleans or words, categories as lists or paths,
attributes as maps, entry lists or JSON text. Some rows carry one fault: a value of the wrong
type or range, a missing id or title, bad encoding (invalid UTF-8, U+FFFD, NUL, a lone
surrogate), a line that is no JSON object, a key given twice, a CSV row of the wrong width.
The same rows are written as parquet (with per-column types), CSV (text, with or without a
byte-order mark, LF or CRLF) or JSONL (with blank lines between).

Each row knows its expected fate independently of the code under test: the payload it is
stored as, or the row number, product id and field its reject names. `check_ingest` runs the
real pipeline on the file and lists every way the result departs from that.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from shopsearch.store.schema import MATCH_FIELDS, MATCH_KEY, match_copy

FORMATS = ("parquet", "csv", "jsonl")
MISSING = object()  # a field the row does not give (null, an empty cell, an absent key)
_BAD = object()  # a drawn value `validate` must refuse
SHORT_FIELDS = ("brand", "currency", "color", "size", "parent_id", "url", "image_url")
OPTIONAL = ("description", "category", "price", "in_stock", "attributes", *SHORT_FIELDS)
# The order `validate` checks fields in: a row's reject names the first bad one.
CHECK_ORDER = ("id", "title", "description", "category", "price", "in_stock", "attributes")
CHECK_ORDER += SHORT_FIELDS
BAD_BYTES_MARK = "\ue000"  # a private-use character no generated text holds

# Words of any script (Latin, Greek, Cyrillic, Arabic, Devanagari, CJK, Hangul, emoji), from
# letters, digits, punctuation and symbols: no whitespace, control characters or U+FFFD. A
# fixed alphabet draws far faster than `st.characters(categories=...)`.
_RANGES = [(0x21, 0x7E), (0xA1, 0x17F), (0x391, 0x3C9), (0x410, 0x44F), (0x621, 0x64A),
           (0x905, 0x939), (0x4E00, 0x4E7F), (0xAC00, 0xAC3F), (0x1F600, 0x1F63F)]  # fmt: skip
_CHARS = "".join(
    c
    for low, high in _RANGES
    for c in map(chr, range(low, high + 1))
    if unicodedata.category(c)[0] in "LNPS" and not c.isspace() and c != "\ufffd"
)
_WORD = st.text(alphabet=_CHARS, min_size=1, max_size=6)
_PLAIN_WORD = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789&-'",
    min_size=1,
    max_size=8,
)
_SPACES = st.sampled_from([" ", " ", " ", "  ", "\t", " \t "])
_EDGES = st.sampled_from(["", "", "", " ", "\t", "  "])


@dataclass
class Row:
    """One catalog row: its fields' values as written (MISSING for none) and its fate."""

    values: dict[str, Any]
    expected: dict[str, Any] | None = None  # the payload; None: rejected
    bad_field: str | None = None  # the field its reject names (None: the row is unreadable)
    line: str | bytes | None = None  # JSONL/CSV: the line as written, overriding `values`
    extra_cells: bool = False  # CSV: a cell more than the header
    bad_bytes: str | None = None  # CSV: the field whose cell holds invalid UTF-8


@dataclass
class Catalog:
    fmt: str
    rows: list[Row]
    columns: dict[str, str]  # field -> column type (parquet), or "text"
    order: list[str]  # column order as written
    bom: bool = False
    crlf: bool = False
    blank_after: set[int] = field(default_factory=set)  # JSONL: a blank line after row i
    refused: str | None = None  # the whole file must be refused (a column given twice)
    row_group: int = 8

    def summary(self) -> str:
        kinds = [
            ("bad " + (r.bad_field or "row")) if r.expected is None else "ok" for r in self.rows
        ]
        return f"{self.fmt}: {len(self.rows)} rows {kinds}"


# -- values ------------------------------------------------------------------------------


@st.composite
def text_value(draw: Any, plain: bool = False) -> tuple[str, str]:
    """(as written, as stored): words between stray whitespace."""
    words = draw(st.lists(_PLAIN_WORD if plain else _WORD, min_size=1, max_size=4))
    written = draw(_EDGES)
    for i, word in enumerate(words):
        written += (draw(_SPACES) if i else "") + word
    return written + draw(_EDGES), " ".join(words)


def _bad_text(draw: Any, fmt: str, required: bool) -> Any:
    """A text value `validate` must refuse (or, for CSV, that the reader cannot decode)."""
    kinds = ["nul", "replacement", "too long"]
    if required:
        kinds += ["blank", "missing"]
    if fmt == "jsonl":
        kinds += ["surrogate", "list", "bool"]
    if fmt == "csv":
        kinds += ["bytes"]
    kind = draw(st.sampled_from(kinds))
    word = draw(_WORD)
    return {
        "nul": f"{word}\x00{word}",
        "replacement": f"{word}\ufffd",
        "too long": "x" * 1_001 if required else "x" * 50_001,
        "blank": draw(st.sampled_from(["", " ", "\t  "])),
        "missing": MISSING,
        "surrogate": f"{word}\ud800",
        "list": [word],
        "bool": True,
        "bytes": BAD_BYTES_MARK,
    }[kind]


def _price(draw: Any, ctype: str) -> tuple[Any, Any]:
    """(as written, as stored, or `_BAD`)."""
    if ctype == "float":
        if draw(st.booleans()):  # any float a computed price can be: 0.1 + 0.2
            value = draw(st.one_of(st.just(0.0), st.floats(0.01, 1e7), st.just(0.1 + 0.2)))
            return value, float(f"{value:.15g}")
        return draw(st.sampled_from([-0.5, -1e9, math.inf, math.nan])), _BAD
    if draw(st.integers(0, 3)):
        cents = draw(st.integers(0, 10_000_000))
        whole, frac = divmod(cents, 100)
        if draw(st.booleans()) and whole >= 1000:
            text = f"{whole:,}.{frac:02d}"  # thousands grouped: "1,299.50"
        else:
            text = f"{whole}.{frac:02d}"
        return draw(_EDGES) + text, float(f"{whole}.{frac:02d}")
    bad = ["abc", "19,99", "nan", "-3", "inf", "1.2.3", "$5"]
    return draw(st.sampled_from(bad)), _BAD


def _in_stock(draw: Any, ctype: str) -> tuple[Any, Any]:
    if ctype == "bool":
        value = draw(st.booleans())
        return value, value
    if draw(st.integers(0, 4)):
        word, value = draw(
            st.sampled_from(
                [
                    ("true", True),
                    ("False", False),
                    ("yes", True),
                    ("N", False),
                    ("In Stock", True),
                    ("out of stock", False),
                    ("1", True),
                    ("0", False),
                ]
            )
        )
        return draw(_EDGES) + word + draw(_EDGES), value
    return draw(st.sampled_from(["maybe", "2", "si", "-"])), _BAD


def _category(draw: Any, ctype: str, fmt: str) -> tuple[Any, Any]:
    levels = draw(st.lists(text_value(plain=ctype != "list"), min_size=1, max_size=3))
    stored = tuple(level for _, level in levels)
    if ctype == "list":
        return [written for written, _ in levels], stored
    if draw(st.booleans()):  # a path, as most exports write one
        separator = draw(st.sampled_from([" > ", ">", "  >  ", " >> "]))
        path = separator.join(level for _, level in levels)
        # One level and no '>': '/' and '|' would split it, and generated levels hold none.
        return draw(_EDGES) + path + draw(_EDGES), stored
    return json.dumps([written for written, _ in levels], ensure_ascii=False), stored


def _attributes(draw: Any, ctype: str) -> tuple[Any, Any]:
    keys = draw(st.lists(_PLAIN_WORD, min_size=1, max_size=3, unique_by=str.lower))
    keys = list(dict.fromkeys(keys))
    values = [draw(text_value()) for _ in keys]
    stored = {k: v for k, (_, v) in zip(keys, values, strict=True)}
    written = {k: w for k, (w, _) in zip(keys, values, strict=True)}
    if ctype == "map":
        return list(written.items()), stored
    if ctype == "entries":
        return [{"key": k, "value": v} for k, v in written.items()], stored
    if ctype == "object":
        return written, stored
    return json.dumps(written, ensure_ascii=False), stored


def _bad_attributes(draw: Any, ctype: str) -> Any:
    if ctype == "text":
        return draw(
            st.sampled_from(['{"a": "1", "a": "2"}', "not json {", '["ab", "cd"]', "[1, 2]", "42"])
        )
    if ctype == "object":
        return draw(st.sampled_from([["ab", "cd"], [1, 2], 42, "not json {"]))
    return MISSING  # a typed column holds only maps


# -- rows --------------------------------------------------------------------------------


@st.composite
def catalogs(draw: Any, fmt: str, max_rows: int = 16) -> Catalog:
    """A catalog in `fmt` and every row's fate."""
    # Chances come from a seeded generator: Hypothesis draws small numbers far more often
    # than others, so `integers(0, 15) == 0` would hold for half the catalogs, not 1 in 16.
    rnd = random.Random(draw(st.integers(0, 2**32 - 1)))
    columns = _column_types(draw, fmt, rnd)
    rows: list[Row] = []
    stored_ids: dict[str, int] = {}  # id -> the row that stored it
    for number in range(1, draw(st.integers(0, max_rows)) + 1):
        rows.append(_row(draw, fmt, columns, rows, number, rnd))
    order = list(columns)
    if fmt != "jsonl":
        order = draw(st.permutations(order))
        extra = draw(st.lists(st.sampled_from(["notes", "sku", "Title"]), max_size=2))
        order += extra if fmt == "csv" else list(dict.fromkeys(extra))
    catalog = Catalog(fmt, rows, columns, order)
    if fmt == "csv":
        catalog.bom, catalog.crlf = draw(st.booleans()), draw(st.booleans())
        if rnd.random() < 1 / 16:  # a column that is read, given twice
            catalog.order.append(draw(st.sampled_from(list(columns))))
            catalog.refused = "columns named"
    if fmt == "jsonl" and rows:
        catalog.blank_after = set(draw(st.lists(st.integers(0, len(rows)), max_size=3)))
        if 0 not in catalog.blank_after and "\x00" in str(rows[0].line):
            catalog.refused = "NUL byte"  # a binary file, not a row of text
    if fmt == "parquet":
        catalog.row_group = draw(st.integers(1, 16))
    _settle(catalog, stored_ids)
    return catalog


def _column_types(draw: Any, fmt: str, rnd: random.Random) -> dict[str, str]:
    """The fields this catalog has columns for, and each column's type."""
    present = [f for f in OPTIONAL if rnd.random() < 2 / 3]
    columns = {"id": "text", "title": "text"} | {f: "text" for f in present}
    if fmt == "parquet":
        columns["id"] = draw(st.sampled_from(["text", "text", "int"]))
        for name, choices in (
            ("price", ["float", "text"]),
            ("in_stock", ["bool", "text"]),
            ("category", ["list", "text"]),
            ("attributes", ["map", "entries", "text"]),
        ):
            if name in columns:
                columns[name] = draw(st.sampled_from(choices))
    if fmt == "jsonl":
        for name, choices in (
            ("price", ["float", "text"]),
            ("in_stock", ["bool", "text"]),
            ("category", ["list", "text"]),
            ("attributes", ["object", "text"]),
        ):
            if name in columns:
                columns[name] = draw(st.sampled_from(choices))
    return columns


def _row(
    draw: Any,
    fmt: str,
    columns: dict[str, str],
    earlier: list[Row],
    number: int,
    rnd: random.Random,
) -> Row:
    values: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    # The id: a new one, or one given before (stored, or rejected there).
    earlier_ids = [
        r.values["id"] for r in earlier if _normalised_id(r.values.get("id", MISSING)) is not None
    ]
    if earlier_ids and rnd.random() < 1 / 6:
        values["id"] = draw(st.sampled_from(earlier_ids))
    elif columns["id"] == "int" or (fmt == "jsonl" and rnd.random() < 0.2):
        values["id"] = draw(st.integers(0, 10**12))
    else:
        written, stored = draw(text_value())
        values["id"] = rnd.choices([stored, written.strip(), f"{stored}-{number}"], [1, 1, 3])[0]
    for name, ctype in columns.items():
        if name == "id":
            continue
        if name != "title" and rnd.random() < 0.25:
            values[name] = MISSING
            continue
        written, stored = _good_value(draw, name, ctype, fmt, rnd)
        values[name] = written
        expected[name] = stored

    row = Row(values, None)
    fault = rnd.random() < 1 / 7
    if fault:
        _spoil(draw, fmt, columns, row)
    if row.bad_field is None and row.line is None and not row.extra_cells:
        row.expected = expected
    return row


def _good_value(draw: Any, name: str, ctype: str, fmt: str, rnd: random.Random) -> tuple[Any, Any]:
    if name == "price":
        while True:
            written, stored = _price(draw, ctype)
            if stored is not _BAD:
                return written, stored
    if name == "in_stock":
        while True:
            written, stored = _in_stock(draw, ctype)
            if stored is not _BAD:
                return written, stored
    if name == "category":
        return _category(draw, ctype, fmt)
    if name == "attributes":
        return _attributes(draw, ctype)
    written, stored = draw(text_value())
    if name in SHORT_FIELDS and fmt == "jsonl" and rnd.random() < 0.1:
        number = draw(st.integers(-1000, 10**6))
        return number, str(number)  # a number where text was meant
    return written, stored


def _spoil(draw: Any, fmt: str, columns: dict[str, str], row: Row) -> None:
    """Give `row` one fault, and say which field its reject must name."""
    kinds = ["field"]
    if fmt == "jsonl":
        kinds += ["not json", "not an object", "bad utf-8", "key twice"]
    if fmt == "csv":
        kinds += ["extra cell"]
    kind = draw(st.sampled_from(kinds))
    if kind == "not json":
        row.line = draw(st.sampled_from(['{"id": "x", "title": ', "{id: 1}", "nul\x00l", "[}"]))
        return
    if kind == "not an object":
        row.line = draw(st.sampled_from(["[1, 2]", "42", '"a product"', "null"]))
        return
    if kind == "bad utf-8":
        row.line = b'{"id": "bad", "title": "caf\xe9"}'
        return
    if kind == "key twice":
        name = draw(st.sampled_from([n for n in columns if n != "id"] or ["title"]))
        row.line = "twice"  # rendered by `_jsonl_line`
        row.bad_field = name
        return
    if kind == "extra cell":
        row.extra_cells = True
        return
    name = draw(st.sampled_from(list(columns)))
    ctype = columns[name]
    if name == "id":
        if ctype == "int":
            row.values["id"] = MISSING
        elif fmt == "jsonl":
            row.values["id"] = draw(
                st.sampled_from([MISSING, "", "  ", True, ["a"], "x" * 513, "a\x00b"])
            )
        else:
            row.values["id"] = draw(st.sampled_from([MISSING, " ", "x" * 513, "a\ufffd"]))
        row.bad_field = "id"
    elif name == "price":
        bad = _price(draw, ctype)
        while bad[1] is not _BAD:
            bad = _price(draw, ctype)
        row.values["price"] = bad[0]
        if fmt == "jsonl" and ctype == "float" and not math.isfinite(bad[0]):
            row.values["price"] = -1  # JSON holds no NaN or infinity
        row.bad_field = "price"
    elif name == "in_stock":
        if ctype == "bool":
            return  # a boolean column holds nothing else
        bad = _in_stock(draw, "text")
        while bad[1] is not _BAD:
            bad = _in_stock(draw, "text")
        row.values["in_stock"] = bad[0] if fmt != "jsonl" or draw(st.booleans()) else 7
        row.bad_field = "in_stock"
    elif name == "attributes":
        value = _bad_attributes(draw, ctype)
        if value is MISSING:
            return
        row.values["attributes"] = value
        row.bad_field = "attributes"
    elif name == "category":
        if fmt == "csv":
            row.values["category"] = BAD_BYTES_MARK
            row.bad_bytes = "category"
        elif fmt == "jsonl":
            row.values["category"] = draw(st.sampled_from([[1, 2], {"a": "b"}, 5]))
        else:
            return  # a typed column holds only lists or text
        row.bad_field = "category"
    else:
        value = _bad_text(draw, fmt, required=name == "title")
        if value is BAD_BYTES_MARK:
            row.bad_bytes = name
        row.values[name] = value
        row.bad_field = name


def _settle(catalog: Catalog, stored_ids: dict[str, int]) -> None:
    """Each row's fate, now that the rows before it are known: a good row whose id an earlier
    row stored is a duplicate, rejected under that id (a rejected row stores none)."""
    for number, row in enumerate(catalog.rows, 1):
        pid = _normalised_id(row.values.get("id", MISSING))
        if row.expected is None:
            continue
        if pid is None:  # an id that is no id, drawn as a good value: cannot happen
            raise AssertionError(f"row {number}: generated a bad id as good")
        if pid in stored_ids:
            row.bad_field = "id"
            row.expected = None
            row.values["_first"] = stored_ids[pid]
            continue
        stored_ids[pid] = number
        payload: dict[str, Any] = {"product_id": pid}
        for name in ("title", *OPTIONAL):
            if name in row.expected and row.expected[name] is not None:
                value = row.expected[name]
                payload[name] = list(value) if name == "category" else value
        if "category" in payload:
            payload["category_path"] = " > ".join(payload["category"])
        # The normalised copy case-forgiving filters compare, derived from the expected
        # fields by the contract's own function (what it holds is tested on its own:
        # tests/test_filter_case.py); the fields it is derived from are checked above.
        copy = match_copy(payload, MATCH_FIELDS)
        if copy:
            payload[MATCH_KEY] = copy
        row.expected = payload


def _normalised_id(value: Any) -> str | None:
    if value is MISSING or isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    bad = not text or len(text) > 512 or "\x00" in text or "\ufffd" in text
    return None if bad else text


# -- fates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fate:
    """What the rows must come to: the payloads stored, the rejects (row, id, field)."""

    stored: dict[str, dict[str, Any]]  # product id -> payload
    rejects: list[tuple[int, str | None, str | None]]
    first_rows: dict[int, int]  # a duplicate's row -> the row that stored its id
    rows: int


def fate(catalog: Catalog) -> Fate:
    stored, rejects, first = {}, [], {}
    positions = row_positions(catalog)
    for row, position in zip(catalog.rows, positions, strict=True):
        if row.expected is not None:
            stored[row.expected["product_id"]] = row.expected
            continue
        unreadable = row.extra_cells or (row.line is not None and row.line != "twice")
        named = not unreadable and row.bad_field != "id"
        pid = _normalised_id(row.values.get("id", MISSING)) if named else None
        if "_first" in row.values:  # a duplicate names the id it repeats
            pid = _normalised_id(row.values["id"])
            first[position] = positions[row.values["_first"] - 1]
        rejects.append((position, pid, None if unreadable else row.bad_field))
    return Fate(stored, rejects, first, len(catalog.rows))


def row_positions(catalog: Catalog) -> list[int]:
    """The row number each row's reject names: its data row, or its line in a JSONL file
    (blank lines count)."""
    if catalog.fmt != "jsonl":
        return list(range(1, len(catalog.rows) + 1))
    positions, line = [], 1 + len([b for b in catalog.blank_after if b == 0])
    for i in range(len(catalog.rows)):
        positions.append(line)
        line += 1 + len([b for b in catalog.blank_after if b == i + 1])
    return positions


# -- files -------------------------------------------------------------------------------


def write(catalog: Catalog, directory: Path) -> Path:
    path = directory / f"catalog.{catalog.fmt}"
    if catalog.fmt == "parquet":
        _write_parquet(catalog, path)
    elif catalog.fmt == "csv":
        _write_csv(catalog, path)
    else:
        _write_jsonl(catalog, path)
    return path


_ARROW = {
    "text": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list": pa.list_(pa.string()),
    "map": pa.map_(pa.string(), pa.string()),
    "entries": pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])),
}


def _write_parquet(catalog: Catalog, path: Path) -> None:
    arrays, names = [], []
    for name in catalog.order:
        if name not in catalog.columns:  # an extra column no field reads
            values = [f"note {i}" for i in range(len(catalog.rows))]
            arrays.append(pa.array(values, pa.string()))
        else:
            kind = _ARROW[catalog.columns[name]]
            values = [_cell(r.values.get(name, MISSING)) for r in catalog.rows]
            arrays.append(pa.array(values, kind))
        names.append(name)
    table = pa.Table.from_arrays(arrays, names=names)
    pq.write_table(table, path, row_group_size=catalog.row_group)


def _cell(value: Any) -> Any:
    return None if value is MISSING else value


def _csv_text(value: Any) -> str:
    if value is MISSING:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _write_csv(catalog: Catalog, path: Path) -> None:
    newline = "\r\n" if catalog.crlf else "\n"
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(catalog.order)
    for row in catalog.rows:
        cells = [
            _csv_text(row.values.get(name, MISSING)) if name in catalog.columns else "n"
            for name in catalog.order
        ]
        writer.writerow([*cells, "extra"] if row.extra_cells else cells)
    data = out.getvalue().encode("utf-8", "surrogatepass")
    data = data.replace(BAD_BYTES_MARK.encode(), b"caf\xe9")
    path.write_bytes((b"\xef\xbb\xbf" if catalog.bom else b"") + data)


def _jsonl_line(row: Row) -> bytes:
    if isinstance(row.line, bytes):
        return row.line
    if row.line == "twice":
        fields = {k: v for k, v in row.values.items() if v is not MISSING and k[0] != "_"}
        fields.setdefault(row.bad_field, "once")  # then given again
        first = json.dumps(fields, ensure_ascii=False)
        again = json.dumps({row.bad_field: "again"})[1:-1]
        return (first[:-1] + (", " if fields else "") + again + "}").encode(
            "utf-8", "surrogatepass"
        )
    if row.line is not None:
        return row.line.encode()
    fields = {k: v for k, v in row.values.items() if v is not MISSING and k[0] != "_"}
    return json.dumps(fields, ensure_ascii=True).encode()


def _write_jsonl(catalog: Catalog, path: Path) -> None:
    lines = [b""] * len([b for b in catalog.blank_after if b == 0])
    for i, row in enumerate(catalog.rows, 1):
        lines.append(_jsonl_line(row))
        lines += [b"  "] * len([b for b in catalog.blank_after if b == i])
    path.write_bytes(b"".join(line + b"\n" for line in lines))


# -- the check ---------------------------------------------------------------------------


def check_ingest(
    catalog: Catalog,
    path: Path,
    backend: Any,
    encoder: Any,
    work: Path,
    batch_size: int,
    template: str | None = None,
) -> list[str]:
    """Ingest `path` (written from `catalog`) into the empty `backend` (products encoded as
    `template`, default the default template); every way the result departs from the
    catalog's fate, or [] when none does."""
    from shopsearch.ingest.pipeline import ingest_catalog
    from shopsearch.ingest.product_text import ProductTextTemplate
    from shopsearch.ingest.readers import CatalogInputError, CatalogReader
    from shopsearch.store.schema import point_id

    expected = fate(catalog)
    rejects_path = work / "rejects.jsonl"
    try:
        report = ingest_catalog(
            CatalogReader(path),
            backend,
            encoder,
            rejects_path=rejects_path,
            template=ProductTextTemplate(template) if template else None,
            batch_size=batch_size,
        )
    except CatalogInputError as exc:
        if catalog.refused and catalog.refused in str(exc):
            return []
        return [f"refused: {exc}"]
    if catalog.refused:
        return ["a column that is read, given twice, was not refused"]
    problems = []
    counts = (report.read, report.upserted, report.rejected)
    want = (expected.rows, len(expected.stored), len(expected.rejects))
    if counts != want:
        problems.append(f"read/upserted/rejected {counts}, expected {want}")
    if report.read != report.upserted + report.rejected:
        problems.append(
            f"read {report.read} != upserted {report.upserted} + rejected {report.rejected}"
        )
    lines = rejects_path.read_text(encoding="utf-8").splitlines() if rejects_path.exists() else []
    got = [json.loads(line) for line in lines]
    named = [(r["row"], r["id"], r["field"]) for r in got]
    if named != expected.rejects:
        problems.append(f"rejects (row, id, field) {named}, expected {expected.rejects}")
    for reject in got:
        first = expected.first_rows.get(reject["row"])
        if first is not None and f"first at row {first})" not in reject["reason"]:
            problems.append(f"row {reject['row']}: {reject['reason']!r} names no row {first}")
    ids = {point_id(pid): pid for pid in expected.stored}
    stored = backend.payloads(list(ids)) if ids else {}
    for pid_point, pid in ids.items():
        payload = stored.get(pid_point)
        if payload != expected.stored[pid]:
            problems.append(f"product {pid!r}: stored {payload}, expected {expected.stored[pid]}")
    count = backend.count()
    if count != len(expected.stored):
        problems.append(f"{count} products stored, expected {len(expected.stored)}")
    return problems
