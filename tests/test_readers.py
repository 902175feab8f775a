import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsearch.errors import CatalogError, UsageError
from shopsearch.ingest.readers import CatalogReader, parse_column_map
from shopsearch.ingest.validate import Reject, validate


def rows(reader, batch_size=2):
    return [r for batch in reader.batches(batch_size) for r in batch]


def test_parquet_streams_row_groups_and_maps_columns(tmp_path):
    path = tmp_path / "c.parquet"
    table = pa.table({"sku": ["a", "b", "c"], "name": ["A", "B", "C"], "price": [1.0, None, 3.0]})
    pq.write_table(table, path, row_group_size=1)
    reader = CatalogReader(path, parse_column_map(["id=sku", "title=name"]))
    assert reader.total_rows == 3
    got = rows(reader)
    assert [r.row for r in got] == [1, 2, 3]
    assert got[1].data == {"id": "b", "title": "B", "price": None}


def test_csv_with_multiline_cells_and_bad_utf8(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b'id,title,description\n1,Drill,"two\nlines"\n2,"bad \xff title",x\n3,Saw,\n')
    got = rows(CatalogReader(path))
    assert [r.row for r in got] == [1, 2, 3]
    assert got[0].data["description"] == "two\nlines"
    assert got[1].data is None and "not valid UTF-8" in got[1].error
    assert (got[1].id, got[1].field) == ("2", "title")
    assert got[2].data["description"] is None


def test_csv_bad_utf8_reject_names_the_id_and_field(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b"sku,title,body\nA1,Drill,caf\xe9\nA\xff2,Saw,ok\n")
    reader = CatalogReader(path, parse_column_map(["id=sku", "description=body"]))
    first, second = (validate(r) for r in rows(reader))
    assert first == Reject(1, "A1", "description", "column 'body' is not valid UTF-8")
    assert second == Reject(2, None, "id", "column 'sku' is not valid UTF-8")


def test_jsonl_bad_lines_become_row_errors(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"id": "1", "title": "A"}) + "\n{broken\n\n[1, 2]\n", encoding="utf-8"
    )
    got = rows(CatalogReader(path), batch_size=10)
    assert [r.row for r in got] == [1, 2, 4]  # line numbers: the blank line 3 counts
    assert got[0].data == {
        "id": "1",
        "title": "A",
        **{k: None for k in got[0].data if k not in ("id", "title")},
    }
    assert "invalid JSON" in got[1].error
    assert "not a JSON object" in got[2].error


def test_jsonl_leading_bom_is_skipped(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"id": "1", "title": "A"}\n{"id": "2", "title": "\xef\xbb\xbfB"}\n'
    )
    got = rows(CatalogReader(path))
    assert [(r.error, r.data["id"], r.data["title"]) for r in got] == [
        (None, "1", "A"),
        (None, "2", "\ufeffB"),  # only the file's first bytes are a BOM
    ]


def test_missing_required_column_is_a_clear_error(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("sku,name\n1,A\n", encoding="utf-8")
    with pytest.raises(CatalogError, match=r"no 'id' column .*--map id=COLUMN"):
        CatalogReader(path)
    with pytest.raises(CatalogError, match="no column 'nope'"):
        CatalogReader(path, {"id": "sku", "title": "nope"})


@pytest.mark.parametrize("item", ["title", "title=", "=x", "weight=w"])
def test_bad_map_flags(item):
    with pytest.raises(UsageError, match="bad --map"):
        parse_column_map([item])


def test_unknown_extension_and_missing_file(tmp_path):
    (tmp_path / "c.xlsx").write_text("x")
    with pytest.raises(UsageError, match="--format"):
        CatalogReader(tmp_path / "c.xlsx")
    with pytest.raises(CatalogError, match="not found"):
        CatalogReader(tmp_path / "missing.parquet")


def test_csv_row_with_wrong_cell_count_is_one_reject_in_place(tmp_path):
    path = tmp_path / "c.csv"
    lines = [f"R{i},Item {i},{i}" for i in range(1, 3001)]
    lines[2499] = "R2500,Item 2500, big, 20"  # an unquoted comma
    lines[9] = 'R10,"two\nlines",10'
    path.write_text("id,title,price\n" + "\n".join(lines) + "\nR3001,short\n", encoding="utf-8")
    got = rows(CatalogReader(path), batch_size=256)
    assert [r.row for r in got] == list(range(1, 3002))
    assert got[2499].data is None
    assert got[2499].error == (
        "4 cells where the header has 3 (an unquoted comma or quote?): 'R2500,Item 2500, big, 20'"
    )
    assert got[2500].data["id"] == "R2501" and got[2498].data["id"] == "R2499"
    assert got[3000].data is None and "2 cells" in got[3000].error


def test_csv_cell_bigger_than_a_block_is_read(tmp_path):
    path = tmp_path / "c.csv"
    lines = [f"R{i},Item {i},{'x' * 2_400_000 if i == 6 else 'd'}" for i in range(1, 11)]
    path.write_text("id,title,description\n" + "\n".join(lines) + "\n", encoding="utf-8")
    got = rows(CatalogReader(path), batch_size=2)
    assert [r.data["id"] for r in got] == [f"R{i}" for i in range(1, 11)]
    assert [r.row for r in got] == list(range(1, 11))
    assert len(got[5].data["description"]) == 2_400_000


def _thousand_rows(path, header="id,title,description", **broken):
    """A 1,000-row CSV; `broken` maps a row number (r10=...) to its line as written."""
    lines = [f"R{i},Item {i},desc {i}" for i in range(1, 1001)]
    for key, line in broken.items():
        lines[int(key[1:]) - 1] = line
    path.write_text(f"{header}\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("header", "line"),
    [
        ("id,title,description", 'R10,"Item 10 unclosed,desc 10'),  # a row pyarrow cannot split
        ("id,title,description", 'R10,Item 10,"desc 10'),  # a good row, last column
        ("id,title,notes", 'R10,Item 10,"desc 10'),  # a column not read
    ],
)
def test_csv_quote_never_closed_stops_the_read_naming_row_and_line(tmp_path, header, line):
    """It used to swallow the 990 rows after it: one reject, or one product with them all in
    its description."""
    path = _thousand_rows(tmp_path / "c.csv", header, r10=line)
    with pytest.raises(CatalogError) as err:
        rows(CatalogReader(path), batch_size=256)
    assert str(err.value) == (
        f"cannot read {path}: row 10 (line 11) opens a quote that is never closed: the 990 "
        "lines after it would be read as one cell, and their rows lost. Close the quote; a "
        'quote inside a quoted cell is written twice ("")'
    )


def test_csv_quote_closed_by_a_later_stray_quote_stops_the_read(tmp_path):
    """Valid CSV for pyarrow: row 10's description used to hold rows 11 to 600."""
    path = _thousand_rows(
        tmp_path / "c.csv", r10='R10,Item 10,"desc 10', r600='R600,Item 600,desc" 600'
    )
    with pytest.raises(CatalogError, match=r"row 10 \(line 11\) opens a quote that closes 590"):
        rows(CatalogReader(path))
    stray = _thousand_rows(tmp_path / "d.csv", r10='R10,"Item 10,desc 10', r600='R600,"x" 6,y')
    with pytest.raises(CatalogError, match=r"row 10 \(line 11\) .* 590 lines further down"):
        rows(CatalogReader(stray))


def test_csv_multiline_cells_that_are_text_are_read(tmp_path):
    path = _thousand_rows(
        tmp_path / "c.csv",
        r3='R3,Item 3,"Includes:\ndrill, charger\n\nbattery, bits\n"',  # 1 comma: no row
        r8='R8,"Item\n8",desc 8',
        r1000='R1000,Item 1000,"last\nlines"',
    )
    got = rows(CatalogReader(path), batch_size=256)
    assert [r.row for r in got] == list(range(1, 1001))
    assert got[2].data["description"] == "Includes:\ndrill, charger\n\nbattery, bits\n"
    assert got[7].data["title"] == "Item\n8" and got[999].data["description"] == "last\nlines"
    two = tmp_path / "two.csv"  # two columns: a line with one comma is text, not a row
    two.write_text('id,title\nA,"Drill\nbattery, bits\ncase"\nB,Saw\n', encoding="utf-8")
    assert [r.data["title"] for r in rows(CatalogReader(two))] == [
        "Drill\nbattery, bits\ncase",
        "Saw",
    ]
