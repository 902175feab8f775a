"""A disk without room, and a collection that cannot be written, as the CLI meets them.

Edge writes through memory maps: a write the disk has no room for kills the process with
SIGBUS and no message, and on tmpfs opening a collection does too, since a load reads in
whole files whose holes tmpfs then allocates. The Edge backend measures the room an
operation needs before it starts and refuses with the directory and the figures, leaving
what is stored intact. A collection whose files cannot be written (Edge opens them for
writing even to search) is refused with that reason, not a raw mmap error.

The small file systems are tmpfs mounts, which need root: elsewhere those tests skip.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from edge_snapshots import assert_same_collection, cli, snapshot

from shopsearch.store.disk_space import RESERVE_IN_MEMORY, ShardScan


def assert_refused_for_room(proc: subprocess.CompletedProcess[str], directory: Path) -> None:
    """Exit 1 with the message, not a signal (SIGBUS) or a traceback."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert f"not enough disk space at {directory}" in proc.stderr, proc.stderr
    assert re.search(r"needs about [\d,]+ [KM]iB, and [\d,]+ [KM]iB is free", proc.stderr)
    assert "Traceback" not in proc.stderr


@pytest.fixture
def tmpfs(tmp_path) -> Iterator:
    """mount(size_mb) -> a fresh tmpfs of that size, unmounted after the test."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mounted: list[Path] = []

    def mount(size_mb: int) -> Path:
        where = tmp_path / f"tmpfs{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs",
                               str(where)], capture_output=True, text=True)  # fmt: skip
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(where)
        return where

    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", str(where)], capture_output=True)


@pytest.fixture(scope="module")
def catalogs(small_catalog, tmp_path_factory) -> tuple[Path, Path]:
    """The first 40 products of the small catalog, and all 120."""
    first = tmp_path_factory.mktemp("disk") / "first.parquet"
    pq.write_table(pq.read_table(small_catalog).slice(0, 40), first)
    return first, small_catalog


def _env(exported_model: Path, tmp: Path) -> dict[str, str]:
    return {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp)}


def _ingest(catalog: Path, data: Path, env: dict, *more: str) -> subprocess.CompletedProcess:
    return cli("ingest", str(catalog), "-c", "c", "--path", str(data),
               "--rejects", str(data.parent / "rejects.jsonl"), *more, env=env)  # fmt: skip


def _fill(mount: Path, leave: int) -> None:
    """Fill the file system at `mount` with a ballast file, leaving `leave` bytes free."""
    stat = os.statvfs(mount)
    free = stat.f_bavail * stat.f_frsize
    with (mount / "ballast").open("wb") as fh:
        fh.write(b"\1" * max(0, free - leave))


def _digests(directory: Path) -> dict[Path, str]:
    """Each file's sha256 (read with read(), which allocates no hole, even on tmpfs)."""
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*") if p.is_file()
    }


def test_an_ingest_into_a_small_disk_is_refused_before_writing(
    exported_model, catalogs, tmp_path, tmpfs
):
    mount = tmpfs(30)
    proc = _ingest(catalogs[1], mount / "data", _env(exported_model, tmp_path))
    assert_refused_for_room(proc, mount / "data" / "c")
    assert not (mount / "data" / "c").exists()
    assert not (mount / "data" / ".c.creating").exists()


def test_opening_a_collection_without_room_is_refused_and_leaves_it_intact(
    exported_model, catalogs, tmp_path, tmpfs
):
    """`info` and `query` on a tmpfs that holds the collection's data but not the holes a
    load would fill: refused, nothing changed; with room, the collection is as it was."""
    env = _env(exported_model, tmp_path)
    assert _ingest(catalogs[1], tmp_path / "disk", env).returncode == 0
    want = snapshot(tmp_path / "disk" / "c")
    mount = tmpfs(40)
    subprocess.run(["cp", "-a", "--sparse=always", str(tmp_path / "disk"), str(mount / "data")],
                   check=True)  # fmt: skip
    files = _digests(mount / "data")

    for command in (["info"], ["query", "boots", "--mode", "bm25"]):
        proc = cli(*command, "-c", "c", "--path", str(mount / "data"), env=env)
        assert_refused_for_room(proc, mount / "data" / "c")
    assert _digests(mount / "data") == files

    subprocess.run(["mount", "-o", "remount,size=400m", str(mount)], check=True)
    assert cli("info", "-c", "c", "--path", str(mount / "data"), env=env).returncode == 0
    assert_same_collection(snapshot(mount / "data" / "c"), want)


def test_an_ingest_that_runs_out_of_room_stops_and_keeps_what_was_stored(
    exported_model, catalogs, tmp_path, tmpfs
):
    """Adding 80 products to a collection on a disk with room to open it and little more:
    the ingest stops part way with a message, not a crash; what it stored is intact, and
    once there is room the next ingest carries on to a clean ingest's collection."""
    first, full = catalogs
    env = _env(exported_model, tmp_path)
    for catalog in (first, full):
        assert _ingest(catalog, tmp_path / "clean", env).returncode == 0
    want = snapshot(tmp_path / "clean" / "c")

    mount = tmpfs(300)
    data = mount / "data"
    assert _ingest(first, data, env).returncode == 0
    _fill(mount, 1 << 20)
    refused = _ingest(full, data, env, "--batch-size", "8")
    assert_refused_for_room(refused, data / "c")
    assert "opening the collection needs" in refused.stderr
    (mount / "ballast").unlink()
    # Room to open the collection, the room a write keeps free, and a few batches more.
    opening = ShardScan.of(data / "c" / "shard").load_holes
    _fill(mount, opening + RESERVE_IN_MEMORY + (256 << 10))

    proc = _ingest(full, data, env, "--batch-size", "8")
    assert_refused_for_room(proc, data / "c")
    assert re.search(r"writing 8 products needs", proc.stderr)
    (mount / "ballast").unlink()
    stored = snapshot(data / "c")
    assert 40 <= len(stored) < 120
    for pid, (payload, dense) in stored.items():
        assert payload == want[pid][0]
        np.testing.assert_allclose(dense, want[pid][1], atol=1e-5)

    assert _ingest(full, data, env).returncode == 0
    assert_same_collection(snapshot(data / "c"), want)


def test_a_read_only_collection_is_refused_with_the_reason(
    exported_model, catalogs, tmp_path, tmpfs
):
    env = _env(exported_model, tmp_path)
    assert _ingest(catalogs[0], tmp_path / "data", env).returncode == 0
    collection = tmp_path / "data" / "c"

    # Read-only files. Root writes them all the same unless it gives up that privilege.
    prefix: tuple[str, ...] = ()
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("no setpriv to run without root's file access override")
        prefix = (setpriv, "--bounding-set", "-dac_override,-dac_read_search", "--")
    subprocess.run(["chmod", "-R", "a-w", str(collection)], check=True)
    try:
        for command in (["info"], ["query", "boots", "--mode", "bm25"]):
            proc = cli(*command, "-c", "c", "--path", str(tmp_path / "data"), env=env,
                       prefix=prefix)  # fmt: skip
            assert proc.returncode == 1, proc.stderr
            assert f"cannot open the collection at {collection}" in proc.stderr
            assert "cannot be written" in proc.stderr and "chmod -R u+w" in proc.stderr
            assert "mmap" not in proc.stderr and "Traceback" not in proc.stderr
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(collection)], check=True)

    # A read-only file system.
    mount = tmpfs(300)
    subprocess.run(["cp", "-a", "--sparse=always", str(tmp_path / "data"), str(mount / "data")],
                   check=True)  # fmt: skip
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    proc = cli("info", "-c", "c", "--path", str(mount / "data"), env=env)
    assert proc.returncode == 1
    assert "is on a read-only file system" in proc.stderr
    assert "Traceback" not in proc.stderr
