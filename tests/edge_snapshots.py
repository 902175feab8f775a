"""Helpers of the fault tests that run the real CLI against an embedded collection and
compare what it holds, product by product, with what it should hold."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from shopsearch.store.edge import EdgeBackend


def cli(
    *args: str, env: dict[str, str], prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`shopsearch ARGS` in a process of its own (`prefix`: a command it runs under)."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "shopsearch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def snapshot(directory: Path) -> dict[str, tuple[dict, np.ndarray]]:
    """Point id -> (payload, dense vector) of every product the collection holds."""
    backend = EdgeBackend(directory)
    try:
        ids = list(backend.point_ids())
        records = backend.shard().retrieve(ids, with_payload=True, with_vector=True)
        return {str(r.id): (r.payload, np.asarray(r.vector["dense"])) for r in records}
    finally:
        backend.close()


def assert_same_collection(got: dict, want: dict) -> None:
    """The same products, payloads and (to float precision) dense vectors."""
    assert sorted(got) == sorted(want)
    for pid, (payload, dense) in want.items():
        assert got[pid][0] == payload, pid
        np.testing.assert_allclose(got[pid][1], dense, atol=1e-5)
