"""Judgment files that used to be refused, misread or blamed on the wrong row: ESCI labels in
a parquet dictionary column, a bad rating among good ones, invalid UTF-8, a key or column
given twice. `eval` reads each or names the file and the row (or line) that is wrong, with
exit 2 and no traceback."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsearch.cli.app import main
from shopsearch.errors import InputFileError
from shopsearch.evaluation.judgments import load_judgments


def _eval(judgments: Path, tmp_path: Path, capsys) -> tuple[int, str]:
    """`shopsearch eval` on a run file naming every judged product: no collection needed."""
    run = tmp_path / "run.jsonl"
    results = [{"product_id": p, "score": 1.0 - i / 10} for i, p in enumerate(["p1", "p2"])]
    run.write_text(json.dumps({"query_id": "q1", "results": results}) + "\n")
    code = main(["eval", "-j", str(judgments), "--run", str(run), "--json"])
    return code, capsys.readouterr().err


def test_esci_labels_in_a_parquet_dictionary_column_are_read(tmp_path, capsys):
    labels = pa.array(["E", "S", "Irrelevant", "E"]).dictionary_encode()
    table = pa.table(
        {
            "query_id": pa.array(["q1", "q1", "q1", "q2"]).dictionary_encode(),
            "query": ["drill", "drill", "drill", "saw"],
            "product_id": ["p1", "p2", "p3", "p1"],
            "esci_label": labels,
        }
    )
    assert pa.types.is_dictionary(table.schema.field("esci_label").type)
    path = tmp_path / "esci.parquet"
    pq.write_table(table, path)
    assert pa.types.is_dictionary(pq.read_schema(path).field("esci_label").type)
    judged = load_judgments(path)
    assert judged.scheme.kind == "esci"
    assert judged.queries["q1"].grades == {"p1": "E", "p2": "S", "p3": "I"}
    code, err = _eval(path, tmp_path, capsys)
    assert code == 0, err


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        (
            "j.csv",
            "qid,query,product_id,relevance\nq1,drill,p1,3\nq1,drill,p2,2.5\nq2,saw,p3,abc\n",
            "j.csv row 3",
        ),
        (
            "j.jsonl",
            '{"qid": "q1", "query": "drill", "product_id": "p1", "relevance": 3}\n\n'
            '{"qid": "q1", "query": "drill", "product_id": "p2", "relevance": "abc"}\n',
            "j.jsonl line 3",
        ),
    ],
)
def test_a_bad_rating_is_blamed_on_its_own_row(name, text, where, tmp_path, capsys):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    message = f"{where}, column 'relevance': grade 'abc' is not a number"
    with pytest.raises(InputFileError, match=message):
        load_judgments(path)
    code, err = _eval(path, tmp_path, capsys)
    assert code == 2 and message in err, err


def test_csv_judgments_keep_product_ids_as_written(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text("qid,query,product_id,relevance,count\n7,drill,00123,3,12\n7,drill,45,1,12\n")
    judged = load_judgments(path)
    assert judged.queries["7"].grades == {"00123": 3.0, "45": 1.0}
    assert judged.queries["7"].count == 12.0 and judged.scheme.kind == "numeric"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'{"qid": "q1", "query": "drill", "product_id": "p1", "relevance": 3}\n'
            b'{"qid": "q1", "query": "dr\xefll", "product_id": "p2", "relevance": 1}\n',
            "j.jsonl line 2: not valid UTF-8 at byte 27",
        ),
        (
            b'{"qid": "q1", "query": "drill", "product_id": "p1", "product_id": "p2", '
            b'"relevance": 3}\n',
            "j.jsonl line 1: key 'product_id' appears twice",
        ),
        (b"[" * 100_000 + b"\n", "j.jsonl line 1: invalid JSON (nested too deeply)"),
    ],
    ids=["invalid-utf8", "key-twice", "deep"],
)
def test_jsonl_judgments_that_cannot_be_read_name_file_and_line(data, message, tmp_path, capsys):
    path = tmp_path / "j.jsonl"
    path.write_bytes(data)
    with pytest.raises(InputFileError) as err:
        load_judgments(path)
    assert str(err.value) == message
    code, stderr = _eval(path, tmp_path, capsys)
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr


def test_a_judgments_column_given_twice_is_refused(tmp_path, capsys):
    path = tmp_path / "j.csv"
    path.write_text("qid,query,product_id,relevance,relevance\nq1,drill,p1,3,1\n")
    message = "j.csv: 2 columns named 'relevance' (the grade)"
    with pytest.raises(InputFileError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_judgments(path)
    code, err = _eval(path, tmp_path, capsys)
    assert code == 2 and message in err, err
