"""Catalog readers: parquet, CSV and JSONL, streamed in batches of plain dicts.

Parquet is read row group by row group and only the mapped columns; CSV is parsed by
pyarrow in blocks as raw bytes, so one badly encoded cell, or a row with the wrong number
of cells, rejects its row instead of aborting the file; JSONL is read line by line so a
broken line is one reject with its line number. Every row carries its 1-based position
for the rejects file.

A CSV quote that is never closed is the exception: it stops the read (`CatalogError`, naming
the row and its line) instead of rejecting a row. Everything after it, up to the end of the
file or the next quote, reads as one cell, so the rows in it are lost, not rejected: no
reject can name them, a `--prune` would delete their products, and the rows after them
would be numbered wrongly. Recovering them would mean guessing where the cell was meant to
end, and a wrong guess turns the rest of a multi-line description into rows; the file needs
its quote fixed instead. Two checks, next to free when no cell spans lines:
- never closed: the reader appends a marker line to the file; a cell or row that swallowed
  it ran to the end of the file (exact, in any column);
- closed by a later stray quote: the cell is valid CSV, so only its content can tell. A
  multi-line cell whose inner lines (all but its first and last; blank ones aside) all hold
  as many cells as the header is taken for swallowed rows, in a file of three columns or
  more. Real descriptions rarely do (no multi-line cell of the Flipkart and ESCI product
  samples does). Only the columns read and the rows pyarrow cannot split are checked.

A file is refused before it is read when it cannot be what it is read as (compressed,
UTF-16, parquet read as text), when it lacks a column, and when a column it is read from
appears twice, as no reader can tell which one is meant; a JSONL line that gives a key it
is read from twice is a reject for the same reason.
"""

from __future__ import annotations

import codecs
import csv
import functools
import io
import json
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shopsearch.errors import CatalogError, UsageError
from shopsearch.ingest.fields import CATALOG_FIELDS, REQUIRED_FIELDS

FORMATS = ("parquet", "csv", "jsonl")
CSV_BLOCK_BYTES = 1 << 20  # pyarrow's default
CSV_MAX_BLOCK_BYTES = 256 << 20  # the largest cell a CSV may hold


# The first bytes of files that are no text catalog: compressed ones, and parquet's own.
_COMPRESSED = {
    b"\x1f\x8b": ("gzip", "gunzip -k"),
    b"BZh": ("bzip2", "bunzip2 -k"),
    b"\xfd7zXZ\x00": ("xz", "unxz -k"),
    b"\x28\xb5\x2f\xfd": ("zstd", "unzstd"),
    b"PK\x03\x04": ("zip", "unzip"),  # an Excel workbook too: export it as CSV
}
_PARQUET_MAGIC = b"PAR1"
_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
# Separators a CSV export may use instead of a comma, as people name them.
_OTHER_DELIMITERS = {";": "semicolons (;)", "\t": "tabs", "|": "vertical bars (|)"}


class CatalogInputError(CatalogError, UsageError):
    """A catalog the user has to fix before it can be read at all (compressed, not UTF-8
    text, a column missing or given twice): bad input, so exit 2, and still a
    `CatalogError` for callers that catch those."""


class _BlockTooSmall(Exception):
    """A CSV cell does not fit in pyarrow's block."""


class _MarkedEnd(io.RawIOBase):
    """A file followed by one more line, `mark`: a quote still open at the end of the file
    swallows the line, so the mark never arrives as a row of its own."""

    def __init__(self, path: Path, mark: bytes) -> None:
        super().__init__()
        self._file = path.open("rb")
        self._mark = b"\n" + mark

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        # Fills the buffer, as reading the file would: pyarrow takes a short first block
        # for the whole file.
        n = self._file.readinto(buffer)  # short only at the end of the file
        if n < len(buffer) and self._mark:
            k = min(len(buffer) - n, len(self._mark))
            buffer[n : n + k], self._mark = self._mark[:k], self._mark[k:]
            n += k
        return n

    def close(self) -> None:
        self._file.close()
        super().close()


@dataclass(frozen=True)
class RawRow:
    row: int
    data: dict[str, Any] | None  # catalog field -> raw value; None when unreadable
    error: str | None = None
    id: str | None = None  # of an unreadable row, when its id could still be read
    field: str | None = None  # the catalog field that made it unreadable, when one did


def parse_column_map(
    items: Sequence[str], fields: Sequence[str] = CATALOG_FIELDS, flag: str = "--map"
) -> dict[str, str]:
    """`["title=product_name", ...]` -> {"title": "product_name"}; `fields` are the names
    the mapping may use (catalog fields by default; judgments and training pass theirs)."""
    mapping: dict[str, str] = {}
    for item in items:
        field, sep, column = (part.strip() for part in item.partition("="))
        if not sep or not field or not column:
            raise UsageError(f"bad {flag} {item!r}: expected FIELD=COLUMN, e.g. {fields[1]}=name")
        if field not in fields:
            raise UsageError(
                f"bad {flag} {item!r}: unknown field '{field}' (fields: {', '.join(fields)})"
            )
        mapping[field] = column
    return mapping


class CatalogReader:
    """Reads one catalog file; `columns` maps each catalog field to its source column."""

    def __init__(
        self,
        path: Path,
        column_map: Mapping[str, str] | None = None,
        fmt: str | None = None,
        rank_fields: Sequence[str] = (),
    ) -> None:
        """`rank_fields`: numeric fields read besides the catalog's (`ingest --rank-field`),
        each from its own column unless mapped; a catalog must hold them."""
        self.path = Path(path)
        self.rank_fields = tuple(rank_fields)
        if not self.path.is_file():
            raise CatalogError(f"catalog not found: {self.path}")
        self.format = fmt or _guess_format(self.path)
        if self.format not in FORMATS:
            raise UsageError(f"unknown catalog format '{self.format}' (use {', '.join(FORMATS)})")
        self._check_content()
        self.source_columns = self._read_columns()
        self._column_map = dict(column_map or {})
        self.columns = self._resolve_columns(self._column_map)

    def read_rank_fields(self, rank_fields: Sequence[str]) -> None:
        """Read these rank fields too (those of the collection ingest writes to)."""
        if tuple(rank_fields) != self.rank_fields:
            self.rank_fields = tuple(rank_fields)
            self.columns = self._resolve_columns(self._column_map)

    @property
    def total_rows(self) -> int | None:
        if self.format == "parquet":
            return pq.ParquetFile(self.path).metadata.num_rows
        return None

    def batches(self, batch_size: int) -> Iterator[list[RawRow]]:
        if self.format == "parquet":
            yield from self._parquet_batches(batch_size)
        elif self.format == "csv":
            yield from self._csv_batches(batch_size)
        else:
            yield from self._jsonl_batches(batch_size)

    # -- columns -----------------------------------------------------------------
    def _check_content(self) -> None:
        """Refuses a file whose first bytes show it cannot be the catalog format it is read
        as: read as text, a compressed or UTF-16 file is one garbled column ("no 'id'
        column") or a reject for every line, and a parquet file read as text is noise."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(4096)
        except OSError as exc:
            raise CatalogError(f"cannot read {self.path}: {exc}") from exc
        for magic, (kind, command) in _COMPRESSED.items():
            if head.startswith(magic):
                raise CatalogInputError(
                    f"{self.path} is {kind}-compressed: decompress it first "
                    f"(`{command} {self.path.name}`) and ingest the {self.format} file"
                )
        if self.format == "parquet":
            return  # pyarrow names a file that is no parquet
        if head.startswith(_PARQUET_MAGIC):
            raise CatalogInputError(
                f"{self.path} is a parquet file, not {self.format}: pass --format parquet"
            )
        if head.startswith(_UTF16_BOMS):
            raise CatalogInputError(
                f"{self.path} is UTF-16 text: save it as UTF-8 (catalogs are read as UTF-8)"
            )
        nul = head.split(b"\n", 1)[0].find(b"\x00")
        if nul >= 0:
            raise CatalogInputError(
                f"{self.path} is not UTF-8 text (its first line holds a NUL byte, at offset "
                f"{nul}): a binary file, or text in UTF-16/32?"
            )

    def _read_columns(self) -> list[str] | None:
        """Source column names, or None for JSONL (schemaless: each line has its own keys)."""
        try:
            if self.format == "parquet":
                return list(pq.ParquetFile(self.path).schema_arrow.names)
            if self.format == "csv":
                with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
                    return next(csv.reader(fh), [])
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(f"cannot read {self.path}: {exc}") from exc
        return None

    def _resolve_columns(self, column_map: dict[str, str]) -> dict[str, str]:
        available = self.source_columns
        columns: dict[str, str] = {}
        for field in CATALOG_FIELDS:
            column = column_map.get(field, field)
            if available is None or column in available:
                columns[field] = column
            elif field in column_map:
                raise CatalogInputError(
                    f"--map {field}={column}: no column '{column}' in {self.path.name} "
                    f"(columns: {', '.join(available)})" + self._delimiter_hint(column)
                )
        for field in self.rank_fields:
            column = column_map.get(field, field)
            if available is not None and column not in available:
                raise CatalogInputError(
                    f"--rank-field {field}: no column '{column}' in {self.path.name} "
                    f"(columns: {', '.join(available)}); map one with --map {field}=COLUMN"
                )
            columns.setdefault(field, column)
        for field in REQUIRED_FIELDS:
            if field not in columns:
                raise CatalogInputError(
                    f"{self.path.name} has no '{field}' column (columns: "
                    f"{', '.join(available or [])}); map one with --map {field}=COLUMN"
                    + self._delimiter_hint(field)
                )
        self._check_unique(columns)
        return columns

    def _check_unique(self, columns: Mapping[str, str]) -> None:
        """Refuses a catalog in which a column the ingest reads appears twice: which of them
        holds the field is a guess (pyarrow's CSV reader takes the first, its parquet reader
        the last), and the other's values would be dropped without a word. A repeated
        column that is not read is no concern."""
        counts = Counter(self.source_columns or ())
        for field, column in columns.items():
            if counts[column] > 1:
                where = [i for i, name in enumerate(self.source_columns or (), 1) if name == column]
                mapped = "" if column == field else f" (mapped to {field})"
                raise CatalogInputError(
                    f"{self.path.name} has {counts[column]} columns named '{column}'{mapped}, "
                    f"columns {', '.join(map(str, where))}: which one to read is ambiguous; "
                    "rename or drop all but one"
                )

    def _delimiter_hint(self, column: str) -> str:
        """For a CSV that lacks `column` but whose header holds it between another
        separator: which one the file appears to use (shopsearch reads comma-separated
        files, and splitting on a guessed separator would misread one that is not)."""
        if self.format != "csv" or not self.source_columns:
            return ""
        header = ",".join(self.source_columns)
        for delimiter, name in _OTHER_DELIMITERS.items():
            cells = [cell.strip().strip('"') for cell in header.split(delimiter)]
            if len(cells) > 1 and column in cells:
                return (
                    f". {self.path.name} appears to be separated by {name}, not commas: "
                    "save it as comma-separated CSV"
                )
        return ""

    # -- formats -----------------------------------------------------------------
    def _parquet_batches(self, batch_size: int) -> Iterator[list[RawRow]]:
        source = list(dict.fromkeys(self.columns.values()))
        row = 0
        try:
            for batch in pq.ParquetFile(self.path).iter_batches(batch_size, columns=source):
                records = batch.to_pylist()
                yield [self._row(row + i + 1, rec) for i, rec in enumerate(records)]
                row += len(records)
        except (OSError, pa.ArrowException) as exc:
            raise CatalogError(f"cannot read {self.path} after row {row}: {exc}") from exc

    def _csv_batches(self, batch_size: int) -> Iterator[list[RawRow]]:
        """pyarrow needs a whole cell in one block; a cell that does not fit is retried
        with bigger blocks (the rows already yielded are skipped), so a huge description is
        read, then rejected for its length, rather than aborting the file."""
        block_size = CSV_BLOCK_BYTES
        done = 0  # rows yielded so far
        while True:
            try:
                for rows in self._csv_pass(batch_size, block_size, skip=done):
                    done = rows[-1].row
                    yield rows
                return
            except _BlockTooSmall as exc:
                if block_size >= CSV_MAX_BLOCK_BYTES:
                    raise CatalogError(
                        f"cannot parse {self.path}: a row after row {done} has a cell over "
                        f"{CSV_MAX_BLOCK_BYTES >> 20} MB (or a quote that is never closed)"
                    ) from exc
                block_size *= 4

    def _csv_pass(self, batch_size: int, block_size: int, skip: int) -> Iterator[list[RawRow]]:
        """One read of the file. A row with the wrong number of cells is a reject: pyarrow
        reports it (numbered, as reading is serial) before the block holding it is converted,
        so it is slotted in among the good rows in file order."""
        source = list(dict.fromkeys(self.columns.values()))
        convert = pacsv.ConvertOptions(
            include_columns=source,
            column_types={c: pa.binary() for c in source},
            strings_can_be_null=False,
        )
        malformed: dict[int, RawRow] = {}
        unclosed: list[CatalogError] = []  # pyarrow ignores what its handler raises
        end_seen = False

        def on_invalid(bad: pacsv.InvalidRow) -> str:
            nonlocal end_seen
            if bad.text == self._end_mark:
                end_seen = True
                return "skip"
            if bad.number is None:
                return "error"  # no position: the reject could not be placed
            row = bad.number - 1  # pyarrow counts the header
            error = "\n" in bad.text and self._open_quote_error(row, bad.text)
            if error:
                unclosed.append(error)
            cells = f"{bad.actual_columns} cell{'s' if bad.actual_columns != 1 else ''}"
            malformed[row] = RawRow(
                row,
                None,
                f"{cells} where the header has {bad.expected_columns} "
                f"(an unquoted comma or quote?): {bad.text[:80]!r}",
            )
            return "skip"

        read = pacsv.ReadOptions(block_size=block_size, use_threads=False)
        parse = pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid)
        row = 0
        pending: list[RawRow] = []

        def add(raw: RawRow) -> None:
            if raw.row > skip:
                pending.append(raw)

        try:
            with (
                _MarkedEnd(self.path, self._end_mark.encode()) as source_file,
                pacsv.open_csv(
                    source_file, read_options=read, parse_options=parse, convert_options=convert
                ) as rd,
            ):
                for batch in rd:
                    if unclosed:
                        raise unclosed[0]
                    spanning = _rows_spanning_lines(batch)
                    for i, rec in enumerate(batch.to_pylist()):
                        row += 1
                        while row in malformed:
                            add(malformed.pop(row))
                            row += 1
                        if i in spanning:
                            self._check_quotes(row, rec)
                        add(self._csv_row(row, rec))
                        if len(pending) >= batch_size:
                            yield pending
                            pending = []
        except (OSError, pa.ArrowException) as exc:
            if "straddl" in str(exc):  # "straddling object straddles two block boundaries"
                raise _BlockTooSmall from exc
            raise CatalogError(f"cannot parse {self.path} after row {row}: {exc}") from exc
        if unclosed:
            raise unclosed[0]
        if not end_seen:  # swallowed by a quote in a column not read, in the last row
            raise self._unclosed_quote(row, None)
        for late in sorted(malformed):  # after the last good row
            add(malformed.pop(late))
        if pending:
            yield pending

    @functools.cached_property
    def _end_mark(self) -> str:
        """The line `_MarkedEnd` appends: more cells than the header, so never a good row."""
        return "\x00" + "," * len(self.source_columns or ())

    def _open_quote_error(self, row: int, text: str) -> CatalogError | None:
        """The error for `row` when `text`, a multi-line cell or the text of a row pyarrow
        could not split, is rows swallowed by an open quote; None for a good multi-line cell."""
        if text.endswith(self._end_mark):
            return self._unclosed_quote(row, None)
        if _holds_rows(text, len(self.source_columns or ())):
            return self._unclosed_quote(row, text)
        return None

    def _unclosed_quote(self, row: int, closed_after: str | None) -> CatalogError:
        """`closed_after`: the cell that a later quote closes; None: one that runs to the end."""
        line = self._line_of_row(row)
        at = f"row {row}" + (f" (line {line})" if line else "")
        if closed_after is None:
            after = _count_lines(self.path) - line if line else None
            what = "is never closed"
            lost = f"the {_lines(after)} after it" if after else "the lines after it"
        else:
            after = closed_after.count("\n")
            what = f"closes {_lines(after)} further down"
            lost = "those lines, which read as rows of this file,"
        if after != 0:  # an unclosed quote on the last line swallows no row, only its own
            what += f": {lost} would be read as one cell, and their rows lost"
        return CatalogError(
            f"cannot read {self.path}: {at} opens a quote that {what}. Close the quote; "
            'a quote inside a quoted cell is written twice ("")'
        )

    def _line_of_row(self, row: int) -> int | None:
        """The line on which data row `row` starts: a second, slower read, for an error."""
        limit = csv.field_size_limit(CSV_MAX_BLOCK_BYTES)  # the default is 128 KB a cell
        try:
            with self.path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
                reader = csv.reader(fh)
                next(reader, None)  # the header
                start, seen = reader.line_num + 1, 0
                for cells in reader:
                    seen += bool(cells)  # a blank line is no row, for pyarrow as here
                    if seen == row:
                        return start
                    start = reader.line_num + 1
        except (OSError, csv.Error):
            pass
        finally:
            csv.field_size_limit(limit)
        return None

    def _check_quotes(self, row: int, rec: dict[str, bytes | None]) -> None:
        for raw in rec.values():
            if raw and b"\n" in raw:
                error = self._open_quote_error(row, raw.decode("utf-8", "replace"))
                if error:
                    raise error

    def _csv_row(self, row: int, rec: dict[str, bytes | None]) -> RawRow:
        """A badly encoded cell rejects the row under its id, when the id itself decodes:
        a reject without one would stop `--prune`, as any product could be missing."""
        decoded: dict[str, Any] = {}
        bad: str | None = None
        for column, raw in rec.items():
            try:
                decoded[column] = raw.decode("utf-8") if raw else None
            except UnicodeDecodeError:
                decoded[column] = None
                bad = bad or column
        if bad is None:
            return self._row(row, decoded)
        field = next(f for f, c in self.columns.items() if c == bad)
        error = f"column '{bad}' is not valid UTF-8"
        return RawRow(row, None, error, id=decoded[self.columns["id"]], field=field)

    def _jsonl_batches(self, batch_size: int) -> Iterator[list[RawRow]]:
        pending: list[RawRow] = []
        try:
            with self.path.open("rb") as fh:
                for row, line in enumerate(fh, 1):  # a row is its line number: blank ones count
                    if row == 1:
                        line = line.removeprefix(codecs.BOM_UTF8)  # as CSV's utf-8-sig
                    if not line.strip():
                        continue
                    pending.append(self._jsonl_row(row, line))
                    if len(pending) >= batch_size:
                        yield pending
                        pending = []
        except OSError as exc:
            raise CatalogError(f"cannot read {self.path}: {exc}") from exc
        if pending:
            yield pending

    def _jsonl_row(self, row: int, line: bytes) -> RawRow:
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return RawRow(row, None, f"line is not valid UTF-8 at byte {exc.start + 1}")
        try:
            record = json.loads(text, object_pairs_hook=_JsonObject)
        except json.JSONDecodeError as exc:
            return RawRow(row, None, f"invalid JSON ({exc.msg} at column {exc.colno})")
        except ValueError as exc:  # a number over Python's 4300-digit limit
            return RawRow(row, None, f"invalid JSON ({exc})")
        except RecursionError:
            return RawRow(row, None, "invalid JSON (nested too deeply)")
        if not isinstance(record, dict):
            return RawRow(row, None, "line is not a JSON object")
        repeated = self._repeated_key(record)
        if repeated:
            field, key = repeated
            id_column = self.columns["id"]
            named = None if id_column in record.duplicates else record.get(id_column)
            where = "" if key == self.columns[field] else f" in {self.columns[field]}"
            error = f"key '{key}' appears twice{where}: which value is meant is ambiguous"
            known = isinstance(named, str | int) and not isinstance(named, bool)
            return RawRow(row, None, error, id=str(named) if known else None, field=field)
        return self._row(row, record)

    def _repeated_key(self, record: _JsonObject) -> tuple[str, str] | None:
        """(field, key) for a key given twice in one object, at the top of the line for a
        field's column or anywhere within a field's value: `json` would keep the last value
        without a word. Keys that are not read are no concern."""
        for field, column in self.columns.items():
            if column in record.duplicates:
                return field, column
            key = _repeated_within(record.get(column))
            if key is not None:
                return field, key
        return None

    def _row(self, row: int, record: Mapping[str, Any]) -> RawRow:
        return RawRow(row, {field: record.get(col) for field, col in self.columns.items()})


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once."""

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.duplicates: set[str] = set()
        if len(self) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    self.duplicates.add(key)
                seen.add(key)


def _repeated_within(value: Any) -> str | None:
    """A key given twice in an object nested in `value`, if any."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, _JsonObject):
            if item.duplicates:
                return min(item.duplicates)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return None


def _rows_spanning_lines(batch: pa.RecordBatch) -> set[int]:
    """Positions of the rows with a cell that spans lines: next to free when none does, as a
    column's bytes are searched at once."""
    rows: set[int] = set()
    for column in batch.columns:
        data = column.buffers()[2]
        if data is not None and b"\n" in data.to_pybytes():
            rows.update(pc.indices_nonzero(pc.match_substring(column, "\n")).to_pylist())
    return rows


def _holds_rows(cell: str, width: int) -> bool:
    """Whether a multi-line cell's inner lines (blank ones aside) all hold `width` cells, as
    rows of the file swallowed by an open quote do: they hold no quote, or it would close.
    A file of fewer than three columns is not judged: one comma a line is common in text."""
    inner = [line for line in cell.split("\n")[1:-1] if line.strip()]
    return width >= 3 and bool(inner) and all(line.count(",") == width - 1 for line in inner)


def _lines(n: int) -> str:
    return f"{n} line{'s' * (n != 1)}"


def _count_lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


def _guess_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in (".parquet", ".pq"):
            return "parquet"
        if suffix == ".csv":
            return "csv"
        if suffix in (".jsonl", ".ndjson", ".json"):
            return "jsonl"
    raise UsageError(
        f"cannot tell the format of {path.name} from its extension; pass --format "
        f"({', '.join(FORMATS)})"
    )
