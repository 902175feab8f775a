"""An ingest killed while it creates a collection leaves nothing the next run trips over.

Creating an Edge collection (the shard, its payload indexes, then the metadata) takes a
moment; a directory killed half way would hold a shard without metadata, which query,
ingest and `--recreate` refuse. A collection is made in a staging directory and renamed
into place once complete, and the next ingest clears what a killed one left there.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from edge_snapshots import assert_same_collection, cli, snapshot

from shopsearch.store.edge import EdgeBackend

# Seconds after the collection's first directory appears, while its creation is under way.
KILL_AFTER = (0.0, 0.1, 0.25, 0.5, 0.8)


@pytest.fixture(scope="module")
def catalog(small_catalog, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("create") / "sixty.parquet"
    pq.write_table(pq.read_table(small_catalog).slice(0, 60), path)
    return path


def _killed_while_creating(catalog: Path, data: Path, delay: float, env: dict) -> None:
    """Start an ingest into the empty `data`, and kill -9 it `delay` seconds after the
    first directory of its collection appears."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopsearch", "ingest", str(catalog), "-c", "c",
         "--path", str(data), "--rejects", str(data.parent / "r.jsonl")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, **env},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while not ((data / ".c.creating").exists() or (data / "c").exists()):
        assert proc.poll() is None and time.monotonic() < deadline, "the ingest never began"
        time.sleep(0.002)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_an_ingest_killed_while_creating_is_followed_by_a_clean_one(
    exported_model, catalog, tmp_path
):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}
    clean = tmp_path / "clean"
    assert cli("ingest", str(catalog), "-c", "c", "--path", str(clean),
               "--rejects", str(tmp_path / "r.jsonl"), env=env).returncode == 0  # fmt: skip
    want = snapshot(clean / "c")

    for i, delay in enumerate(KILL_AFTER):
        data = tmp_path / f"killed{i}"
        _killed_while_creating(catalog, data, delay, env)
        where = ("-c", "c", "--path", str(data))
        query = cli("query", "boots", "--mode", "bm25", *where, env=env)
        # No collection yet, or a complete one (the kill came after the creation).
        assert query.returncode == 0 or "no collection at" in query.stderr, query.stderr
        # The next ingest, or --recreate, finishes the job.
        again = ["--recreate"] if i % 2 else []
        rerun = cli("ingest", str(catalog), *where, *again,
                    "--rejects", str(tmp_path / "r.jsonl"), env=env)  # fmt: skip
        assert rerun.returncode == 0, (delay, rerun.stderr)
        assert not (data / ".c.creating").exists()
        assert_same_collection(snapshot(data / "c"), want)


def test_an_empty_shard_without_metadata_is_cleared_by_the_next_ingest(
    exported_model, catalog, tmp_path
):
    """What a creation killed by an older version left (a shard, no metadata yet, so no
    product either) is cleared by the next ingest, not refused."""
    from shopsearch.store.schema import CollectionMeta, EncoderInfo

    meta = CollectionMeta(EncoderInfo("m", 384, "c" * 64), {"k": 1.2, "b": 0.75}, "{title}")
    left = EdgeBackend(tmp_path / "c")
    left.create(meta)
    left.close()
    (tmp_path / "c" / "shopsearch.json").unlink()
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}
    rerun = cli("ingest", str(catalog), "-c", "c", "--path", str(tmp_path),
                "--rejects", str(tmp_path / "r.jsonl"), env=env)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr
    assert len(snapshot(tmp_path / "c")) == 60
