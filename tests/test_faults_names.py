"""A collection name is a name, never a path: `.`, `..`, a separator or an absolute path
would put a collection outside the data directory, or let `--recreate` replace the data
directory itself, with every other collection in it. Every command refuses such a name,
from the flag or from SHOPSEARCH_COLLECTION, with exit 2 and the allowed characters."""

import json
import os
import subprocess
import sys

import pytest

from shopsearch.errors import UsageError
from shopsearch.store.connection import Connection

BAD_NAMES = [".", "..", "../outside", "a/b", "/tmp/absolute", "-flag", "a b", "", "x" * 256]


def _cli(*args, env_extra=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("SHOPSEARCH_COLLECTION", None)
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=True, text=True, env=env
    )


@pytest.mark.parametrize("name", BAD_NAMES)
def test_connection_refuses_a_name_that_is_not_one(name, monkeypatch):
    monkeypatch.delenv("SHOPSEARCH_COLLECTION", raising=False)
    with pytest.raises(UsageError, match=r"letters, digits, '\.', '_' and '-'"):
        Connection.from_options(collection=name)
    with pytest.raises(UsageError, match="bad collection"):
        Connection(collection=name)
    if name:  # an empty variable is an unset one
        monkeypatch.setenv("SHOPSEARCH_COLLECTION", name)
        with pytest.raises(UsageError, match="bad SHOPSEARCH_COLLECTION"):
            Connection.from_options()


@pytest.mark.parametrize("name", ["products", "demo-2", "shop_v1.2", "A", "0", "x" * 255])
def test_connection_takes_names(name, tmp_path):
    assert Connection.from_options(collection=name, path=tmp_path).edge_dir() == tmp_path / name


def test_recreate_with_a_path_for_a_name_leaves_the_data_directory_alone(exported_model, tmp_path):
    catalog = tmp_path / "cat.jsonl"
    rows = [{"id": f"p{i}", "title": f"Blue cotton shirt {i}"} for i in range(3)]
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    data = tmp_path / "shop" / "data"
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}
    common = ["--path", str(data), "--rejects", str(tmp_path / "r.jsonl"), "--json"]
    first = _cli("ingest", str(catalog), "-c", "keep", *common, env_extra=env)
    assert first.returncode == 0, first.stderr
    before = sorted(p.name for p in tmp_path.rglob("*"))
    for name in (".", "..", "../x", str(tmp_path / "absolute"), "keep/.."):
        proc = _cli("ingest", str(catalog), "-c", name, "--recreate", *common, env_extra=env)
        assert proc.returncode == 2, (name, proc.stderr)
        assert f"bad --collection {name!r} (a name, not a path)" in proc.stderr
        assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing made or removed
    info = _cli("info", "-c", "keep", "--path", str(data), "--json")
    assert info.returncode == 0 and json.loads(info.stdout)["products"] == 3, info.stdout


@pytest.mark.parametrize(
    "command",
    ["info", "query", "facets", "ingest", "eval", "fusion-fit"],
)
def test_every_command_refuses_a_path_from_the_environment(command, exported_model, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    catalog = inputs / "cat.jsonl"
    catalog.write_text(json.dumps({"id": "p1", "title": "Blue shirt"}) + "\n", encoding="utf-8")
    judged = inputs / "judged.jsonl"
    judged.write_text(
        json.dumps({"query_id": "q1", "query": "shirt", "product_id": "p1", "relevance": 3}) + "\n",
        encoding="utf-8",
    )
    args = {
        "info": ["info"],
        "query": ["query", "shirt", "--mode", "bm25"],
        "facets": ["facets", "brand"],
        "ingest": ["ingest", str(catalog), "--rejects", str(inputs / "r.jsonl")],
        "eval": ["eval", "-j", str(judged), "--mode", "bm25"],
        "fusion-fit": ["fusion", "fit", "-j", str(judged)],
    }[command]
    data = tmp_path / "data"
    env = {"SHOPSEARCH_COLLECTION": "../x", "SHOPSEARCH_MODEL_DIR": str(exported_model)}
    proc = _cli(*args, "--path", str(data), env_extra=env)
    assert proc.returncode == 2, proc.stderr
    assert "bad SHOPSEARCH_COLLECTION '../x' (a name, not a path)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]
