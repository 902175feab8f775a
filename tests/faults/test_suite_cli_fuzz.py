"""Fuzzed queries, filters, flags, `query --batch` files and `eval` judgment files: never a
traceback, exit 2 with a message for bad input, 1 with a message for a fault
(`fault_cli` holds the generators). Most cases run the CLI's `main` in this process, on a
120-product Edge collection; a few run as real processes, with arguments of invalid UTF-8
as a shell passes them. Seeded: CI runs the same command lines every run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_cli import CATEGORIES, Context, Outcome, fuzz, judge, run_main

DEMO = Path(__file__).resolve().parents[2] / "examples" / "catalog.parquet"
CASES = {"query": 50, "filter": 60, "flags": 60, "batch": 30, "judgments": 30}


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def fuzz_context(exported_model, small_catalog, tmp_path_factory):
    """The small catalog in an Edge collection, ingested by the CLI in this process."""
    work = tmp_path_factory.mktemp("fuzz")
    catalog = work / "tiny.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 3), catalog)
    run_file = work / "run.jsonl"
    results = [{"product_id": "p1", "score": 1.0}, {"product_id": "p2", "score": 0.5}]
    run_file.write_text(json.dumps({"query_id": "q1", "results": results}) + "\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOPSEARCH_MODEL_DIR", str(exported_model))
        patch.setenv("XDG_CACHE_HOME", str(work / "xdg"))
        patch.chdir(work)  # where an ingest without --rejects writes its rejects
        ctx = Context(work / "data", "fuzz", catalog, run_file, work, _closed_port())
        argv = ["ingest", str(small_catalog), *ctx.where(), "--rejects", str(work / "r.jsonl")]
        done = run_main(argv)
        assert done.code == 0, done.stderr + (done.error or "")
        yield ctx


def test_fuzzed_command_lines_never_end_in_a_traceback(fuzz_context):
    assert set(CASES) == set(CATEGORIES)
    tally = fuzz(fuzz_context, CASES, seed=0)
    assert sum(tally.tried.values()) >= 200
    assert not tally.failures, f"{len(tally.failures)} failures:\n" + "\n\n".join(
        tally.failures[:10]
    )


@pytest.mark.parametrize(
    "args",
    [
        [b"query", b"shoes \xff\xfe", b"--mode", b"bm25"],
        [b"query", b"shoes", b"--mode", b"bm25", b"--filter", b"brand=\xc3"],
        [b"query", b"shoes", b"--filter", b"attributes.\\=x", b"--mode", b"bm25"],
        [b"facets", b"brand", b"--filter", b"price<=abc"],
        [b"query", b"shoes", b"--top-k", b"0"],
        [b"query", b"--batch", b"/nonexistent/q.jsonl", b"--mode", b"bm25"],
        [b"ingest", b"/nonexistent.csv"],
        [b"info", b"-c", b"../elsewhere"],
        [b"eval", b"-j", b"/nonexistent.jsonl", b"--run", b"/nonexistent-run.jsonl"],
        [b"query", b"shoes", b"--qdrant-url", b"http://[::1", b"--mode", b"bm25"],
    ],
)
def test_fuzzed_arguments_as_a_shell_passes_them(args, fuzz_context):
    ctx = fuzz_context
    env = {
        **os.environ,
        "SHOPSEARCH_DATA_DIR": str(ctx.data),
        "SHOPSEARCH_COLLECTION": ctx.collection,
        "XDG_CACHE_HOME": str(ctx.work / "xdg"),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args],
        capture_output=True,
        env=env,
        cwd=ctx.work,
    )
    outcome = Outcome(
        [a.decode("utf-8", "replace") for a in args],
        proc.returncode,
        proc.stdout.decode("utf-8", "replace"),
        proc.stderr.decode("utf-8", "replace"),
    )
    problem = judge("flags", outcome)
    assert problem is None, problem
    assert proc.returncode in (1, 2)


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ("", "holds no query"),
        ("\n  \n", "holds no query"),
        ('{"query_id": "q1", "query": "\\ud800"}\n', "line 1: the query is not valid UTF-8"),
    ],
)
def test_a_batch_without_a_query_or_of_invalid_utf8_is_bad_input(lines, says, fuzz_context):
    """Found by the fuzzer: these ended in an IndexError and a UnicodeEncodeError."""
    batch = fuzz_context.scratch(".jsonl")
    batch.write_text(lines, encoding="utf-8")
    outcome = run_main(["query", "--batch", str(batch), "--mode", "bm25", *fuzz_context.where()])
    assert outcome.error is None, outcome.error
    assert outcome.code == 2
    assert says in outcome.stderr.strip().splitlines()[-1]
