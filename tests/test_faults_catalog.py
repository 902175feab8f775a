"""Catalogs that used to be read wrongly without a word: attributes stored as a list of
key/value structs, columns given twice, compressed or non-comma files. Each is now either
read as what it is, or refused (or its row rejected) with a message naming the place, and
`read = upserted + rejected` holds throughout."""

import gzip
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_helpers import ingest

from shopsearch.errors import CatalogError, UsageError
from shopsearch.ingest.readers import CatalogReader
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import point_id

ATTRIBUTES = [{"Color": "Red", "Size": "M"}, {"Material": "Wool"}, None]


def _cli(*args):
    env = {**os.environ, "SHOPSEARCH_MODEL_DIR": "/nonexistent"}  # refused before the model
    return subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=True, text=True, env=env
    )


def _rejects(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _stored(backend, ids):
    found = backend.payloads([point_id(i) for i in ids])
    return {i: found.get(point_id(i)) for i in ids}


# -- attributes as a map's entries (defect 3) ------------------------------------------------
@pytest.mark.parametrize(
    "attributes_type",
    [
        pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])),
        pa.map_(pa.string(), pa.string()),
    ],
    ids=["list-of-key-value-structs", "map"],
)
def test_parquet_attributes_stored_as_entries_are_stored_as_their_map(
    attributes_type, encoder, tmp_path
):
    def entries(mapping):
        if mapping is None:
            return None
        if pa.types.is_map(attributes_type):
            return list(mapping.items())
        return [{"key": k, "value": v} for k, v in mapping.items()]

    table = pa.table(
        {
            "id": ["a", "b", "c"],
            "title": ["Red wool jumper", "Grey wool scarf", "Plain mug"],
            "attributes": pa.array([entries(m) for m in ATTRIBUTES], type=attributes_type),
        }
    )
    catalog = tmp_path / "cat.parquet"
    pq.write_table(table, catalog)
    backend = EdgeBackend(tmp_path / "products")
    report = ingest(catalog, backend, encoder, tmp_path)
    assert (report.read, report.upserted, report.rejected) == (3, 3, 0)
    stored = _stored(backend, ["a", "b", "c"])
    assert [p.get("attributes") for p in stored.values()] == ATTRIBUTES
    backend.close()


@pytest.mark.parametrize(
    ("attributes_type", "value", "reason"),
    [
        (
            pa.list_(pa.struct([("name", pa.string()), ("val", pa.string())])),
            [{"name": "Color", "val": "Red"}],
            "attributes entry 1 is no key/value pair (got fields name, val)",
        ),
        (pa.list_(pa.string()), ["Red", "Wool"], "attributes entry 1 is no key/value pair"),
        (
            pa.list_(pa.struct([("key", pa.string()), ("value", pa.string())])),
            [{"key": "Color", "value": "Red"}, {"key": "Color", "value": "Blue"}],
            "attributes key 'Color' appears twice",
        ),
    ],
    ids=["other-struct", "list-of-strings", "key-twice"],
)
def test_parquet_attributes_that_are_no_map_are_rejects_naming_row_and_field(
    attributes_type, value, reason, encoder, tmp_path
):
    table = pa.table(
        {
            "id": ["ok", "bad"],
            "title": ["Plain mug", "Red wool jumper"],
            "attributes": pa.array([None, value], type=attributes_type),
        }
    )
    catalog = tmp_path / "cat.parquet"
    pq.write_table(table, catalog)
    backend = EdgeBackend(tmp_path / "products")
    report = ingest(catalog, backend, encoder, tmp_path)
    assert (report.read, report.upserted, report.rejected) == (2, 1, 1)
    [reject] = _rejects(tmp_path / "rejects.jsonl")
    assert (reject["row"], reject["id"], reject["field"]) == (2, "bad", "attributes")
    assert reject["reason"].startswith(reason), reject["reason"]
    assert _stored(backend, ["bad"]) == {"bad": None}
    backend.close()


# -- columns given twice (defect 8) ----------------------------------------------------------
def _write(fmt: str, path: Path, names: list[str], rows: list[list[str]]) -> Path:
    if fmt == "csv":
        lines = [",".join(names)] + [",".join(r) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        arrays = [pa.array([r[i] for r in rows]) for i in range(len(names))]
        pq.write_table(pa.Table.from_arrays(arrays, names=names), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_column_given_twice_is_refused_naming_it(fmt, tmp_path):
    rows = [["1", "Red mug", "Blue mug", "x"]]
    catalog = _write(fmt, tmp_path / f"c.{fmt}", ["id", "title", "title", "extra"], rows)
    with pytest.raises(CatalogError, match=r"2 columns named 'title', columns 2, 3") as err:
        CatalogReader(catalog)
    assert isinstance(err.value, UsageError)  # exit 2
    proc = _cli("ingest", str(catalog), "--rejects", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 2 and "2 columns named 'title'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_a_mapped_column_given_twice_is_refused_and_an_unread_one_is_not(fmt, tmp_path):
    names = ["sku", "name", "name", "label", "note", "note"]
    row = ["1", "Red mug", "Blue mug", "Green mug", "a", "b"]
    catalog = _write(fmt, tmp_path / f"c.{fmt}", names, [row])
    with pytest.raises(CatalogError, match=r"2 columns named 'name' \(mapped to title\)"):
        CatalogReader(catalog, {"id": "sku", "title": "name"})
    reader = CatalogReader(catalog, {"id": "sku", "title": "label"})  # `note` is not read
    rows = [raw.data for batch in reader.batches(8) for raw in batch]
    assert (rows[0]["id"], rows[0]["title"]) == ("1", "Green mug")


def test_jsonl_key_given_twice_rejects_its_row_naming_the_key(encoder, tmp_path):
    lines = [
        '{"id": "a", "title": "Red mug", "title": "Blue mug"}',
        '{"id": "b", "title": "Scarf", "attributes": {"Color": "Red", "Color": "Blue"}}',
        '{"id": "c", "title": "Jumper", "note": 1, "note": 2}',  # not read: no concern
        '{"id": "d", "id": "e", "title": "Hat"}',
        '{"id": "f", "title": "Sock"}',
    ]
    catalog = tmp_path / "c.jsonl"
    catalog.write_text("\n".join(lines) + "\n", encoding="utf-8")
    backend = EdgeBackend(tmp_path / "products")
    report = ingest(catalog, backend, encoder, tmp_path)
    assert (report.read, report.upserted, report.rejected) == (5, 2, 3)
    rejects = {r["row"]: r for r in _rejects(tmp_path / "rejects.jsonl")}
    assert (rejects[1]["id"], rejects[1]["field"]) == ("a", "title")
    assert rejects[1]["reason"].startswith("key 'title' appears twice")
    assert (rejects[2]["id"], rejects[2]["field"]) == ("b", "attributes")
    assert rejects[2]["reason"].startswith("key 'Color' appears twice in attributes")
    assert (rejects[4]["id"], rejects[4]["field"]) == (None, "id")
    stored = _stored(backend, ["a", "b", "c", "d", "e", "f"])
    assert {i for i, p in stored.items() if p} == {"c", "f"}
    backend.close()


# -- files that are no comma-separated UTF-8 text (defect 10) --------------------------------
def test_compressed_and_non_text_catalogs_are_refused_saying_what_they_are(tmp_path):
    text = b"id,title\n1,Red mug\n"
    parquet = tmp_path / "real.parquet"
    pq.write_table(pa.table({"id": ["1"], "title": ["Red mug"]}), parquet)
    cases = {
        "c.csv.gz": (gzip.compress(text), "is gzip-compressed: decompress it first"),
        "c.csv": (gzip.compress(text), "is gzip-compressed: decompress it first"),
        "c.jsonl": (gzip.compress(b'{"id": "1", "title": "x"}\n'), "is gzip-compressed"),
        "p.parquet": (gzip.compress(parquet.read_bytes()), "is gzip-compressed"),
        "p.csv": (parquet.read_bytes(), "is a parquet file, not csv: pass --format parquet"),
        "u.csv": (text.decode().encode("utf-16"), "is UTF-16 text: save it as UTF-8"),
        "n.csv": (text.decode().encode("utf-16-le"), "is not UTF-8 text (its first line"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CatalogError, match=re.escape(message)):
            CatalogReader(path)
        proc = _cli("ingest", str(path), "--rejects", str(tmp_path / "r.jsonl"))
        assert proc.returncode == 2 and message in proc.stderr, (name, proc.stderr)
        assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("id;title;price", "semicolons (;)"),
        ("id\ttitle\tprice", "tabs"),
        ("id|title", "vertical bars (|)"),
    ],
)
def test_a_csv_with_another_separator_says_which_it_appears_to_use(header, name, tmp_path):
    catalog = tmp_path / "c.csv"
    catalog.write_text(header + "\n" + header.replace("id", "1") + "\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=rf"has no 'id' column.*separated by {re.escape(name)}"):
        CatalogReader(catalog)
    with pytest.raises(CatalogError, match=rf"no column 'title'.*separated by {re.escape(name)}"):
        CatalogReader(catalog, {"id": "title"})
    proc = _cli("ingest", str(catalog), "--rejects", str(tmp_path / "r.jsonl"))
    assert proc.returncode == 2 and f"appears to be separated by {name}" in proc.stderr


def test_jsonl_lines_that_are_not_json_text_are_rejects_naming_the_line(encoder, tmp_path):
    catalog = tmp_path / "c.jsonl"
    lines = [
        b'{"id": "a", "title": "Red mug"}',
        b'{"id": "b", "title": "Caf\xe9 mug"}',  # Latin-1, not UTF-8
        b'{"id": "c", "title": "Mug", "price": ' + b"9" * 5000 + b"}",
        b"[" * 100_000,
        b'{"id": "e", "title": "Blue mug"}',
    ]
    catalog.write_bytes(b"\n".join(lines) + b"\n")
    backend = EdgeBackend(tmp_path / "products")
    report = ingest(catalog, backend, encoder, tmp_path)
    assert (report.read, report.upserted, report.rejected) == (5, 2, 3)
    reasons = {r["row"]: r["reason"] for r in _rejects(tmp_path / "rejects.jsonl")}
    byte = lines[1].index(b"\xe9") + 1
    assert reasons[2] == f"line is not valid UTF-8 at byte {byte}"
    assert reasons[3].startswith("invalid JSON (Exceeds the limit")
    assert reasons[4] == "invalid JSON (nested too deeply)"
    backend.close()
