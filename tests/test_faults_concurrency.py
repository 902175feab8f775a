"""Concurrent commands on one embedded (Edge) collection, as separate CLI processes.

Edge lets one process open a shard, and takes its own lock only after a load has repaired
every segment: a reader opening a collection during an ingest would rewrite the ingest's
files under it (lost products, zeroed vectors, crashed ingests). Every opening takes the
collection directory's lock first; readers wait for it a bounded time and otherwise say who
holds it, and never touch an ingest's files.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from edge_snapshots import assert_same_collection, cli, snapshot

READERS = 20
# What a reader that did not get the collection may say: who has it.
# The holder named; or, when it let go between the attempt and the look at who held it
# (another reader, for a moment), the rule that one process opens a collection at a time.
REAL_CAUSES = re.compile(
    r"is being written by an ingest \(process \d+\)"
    r"|is open in another process \(process \d+: shopsearch "
    r"|is open in another process; embedded Qdrant Edge lets one process open a collection"
)


@pytest.fixture(scope="module")
def catalogs(small_catalog, tmp_path_factory) -> tuple[Path, Path]:
    """The first 40 products of the small catalog, and all 120."""
    tmp = tmp_path_factory.mktemp("concurrency")
    first = tmp / "first.parquet"
    pq.write_table(pq.read_table(small_catalog).slice(0, 40), first)
    return first, small_catalog


def test_readers_during_an_ingest_neither_lose_nor_corrupt_products(
    exported_model, catalogs, tmp_path
):
    """20 processes query and inspect the collection in a loop while an ingest adds 80
    products to it in batches of 8: the ingest succeeds, the collection equals a clean
    ingest of the same catalogs, and each reader succeeds or names who holds the
    collection."""
    first, full = catalogs
    model = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}

    def ingest(data: Path, catalog: Path) -> subprocess.CompletedProcess[str]:
        return cli("ingest", str(catalog), "-c", "c", "--path", str(data), "--batch-size", "8",
                   "--rejects", str(tmp_path / "rejects.jsonl"), env=model)  # fmt: skip

    clean = tmp_path / "clean"
    for catalog in (first, full):
        assert ingest(clean, catalog).returncode == 0
    stressed = tmp_path / "stressed"
    assert ingest(stressed, first).returncode == 0

    outcomes: list[tuple[int, str]] = []
    done = threading.Event()

    def reader(i: int) -> None:
        command = ["info"] if i % 2 else ["query", "boots", "--mode", "bm25", "-k", "3"]
        # Half wait for the collection (the default), half give up at once.
        env = {**model, "SHOPSEARCH_LOCK_WAIT": "0" if i % 4 < 2 else "10"}
        while not done.is_set():
            proc = cli(*command, "-c", "c", "--path", str(stressed), env=env)
            outcomes.append((proc.returncode, proc.stderr))

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(READERS)]
    for t in threads:
        t.start()
    try:
        while len(outcomes) < READERS // 2:  # readers are at it before the ingest starts
            time.sleep(0.05)
        ingested = ingest(stressed, full)
    finally:
        done.set()
        for t in threads:
            t.join()

    assert ingested.returncode == 0, ingested.stderr
    assert_same_collection(snapshot(stressed / "c"), snapshot(clean / "c"))
    unexplained = [err for rc, err in outcomes if rc != 0 and not REAL_CAUSES.search(err)]
    assert unexplained == []
    assert not [err for _, err in outcomes if "Traceback" in err]
    assert any(rc == 0 for rc, _ in outcomes)
    assert any("is being written by an ingest" in err for _, err in outcomes)  # they overlapped


def test_concurrent_queries_take_turns_instead_of_failing(exported_model, catalogs, tmp_path):
    """With no ingest running, queries started together wait for one another (Edge opens a
    collection in one process at a time) and all succeed."""
    first, _ = catalogs
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}
    where = ("-c", "c", "--path", str(tmp_path))
    ingested = cli("ingest", str(first), *where, "--rejects", str(tmp_path / "r"), env=env)
    assert ingested.returncode == 0
    queries = [
        subprocess.Popen(
            [sys.executable, "-m", "shopsearch", "query", "boots", "--mode", "bm25", *where],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        for _ in range(8)
    ]
    results = [(q.wait(), q.stderr.read()) for q in queries]
    assert results == [(0, "")] * len(queries)


def _holding(code: str, directory: Path) -> subprocess.Popen[str]:
    """A process that runs `code` with `backend` (the collection) and then sleeps, holding
    what it took; it prints "held" once it holds it."""
    script = (
        "import sys, time; from pathlib import Path; "
        "from shopsearch.store.edge import EdgeBackend; "
        f"backend = EdgeBackend(Path({str(directory)!r})); {code}; "
        "print('held', flush=True); time.sleep(60)"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_query_waits_a_bounded_time_and_names_the_holder(exported_model, catalogs, tmp_path):
    first, _ = catalogs
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}
    where = ("-c", "c", "--path", str(tmp_path))
    ingested = cli("ingest", str(first), *where, "--rejects", str(tmp_path / "r"), env=env)
    assert ingested.returncode == 0
    collection = tmp_path / "c"

    holder = _holding("backend.count()", collection)  # another command with the shard open
    try:
        started = time.monotonic()
        proc = cli("info", *where, env={**env, "SHOPSEARCH_LOCK_WAIT": "1"})
        waited = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 1
    assert f"is open in another process (process {holder.pid}: " in proc.stderr
    assert "waited 1 s; SHOPSEARCH_LOCK_WAIT" in proc.stderr
    assert 1 <= waited < 15

    # An ingest that has opened the collection to write it: a reader leaves the shard to it
    # even while the shard is free for a moment, and names it.
    code = "lock = backend.writing(); lock.__enter__(); backend.count(); backend.close()"
    writer = _holding(code, collection)
    try:
        proc = cli("query", "boots", "--mode", "bm25", *where,
                   env={**env, "SHOPSEARCH_LOCK_WAIT": "0"})  # fmt: skip
    finally:
        writer.kill()
        writer.wait()
    assert proc.returncode == 1
    assert f"is being written by an ingest (process {writer.pid})" in proc.stderr
    assert cli("info", *where, env=env).returncode == 0  # the locks died with their processes
