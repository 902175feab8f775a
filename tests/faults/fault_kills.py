"""Ingests killed (SIGKILL) or interrupted (SIGINT) at random points, for the fault suite
(tests/faults/) and its soak mode (benchmarks/faults.py).

Each scenario is a command sequence run twice from the same start: once without interruption
(the reference), once with the last command killed again and again at drawn delays, each kill
leaving the state the next run starts from, and finally run to the end. After every kill the
collection must hold nothing the reference does not (no product with another payload or
vector), a `--recreate` must have left the old collection as it was, a `--prune` must have
lost nothing the catalog lists; after the last run the collection must equal the reference
(products, payloads, dense and BM25 vectors bit for bit, metadata, vocabulary), with no build
directory left beside it.

    plain      ingest CATALOG into nothing
    recreate   ingest OLD, then ingest --recreate CATALOG
    prune      ingest OLD, then ingest --prune CATALOG (OLD with products gone, titles
               edited and products added)
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

SCENARIOS = ("plain", "recreate", "prune")
COLLECTION = "shop"
BATCH = "16"


@dataclass(frozen=True)
class Point:
    dense: bytes
    sparse: tuple[tuple[int, ...], tuple[float, ...]]
    payload: str


@dataclass
class State:
    """A collection as stored: its points, metadata and vocabulary, and what lies beside it."""

    points: dict[str, Point]
    meta: dict[str, Any] | None
    vocabulary: dict[str, Any] | None
    leftovers: list[str]


@dataclass
class ChainResult:
    scenario: str
    kills: int = 0  # signals that reached a running ingest
    finished_first: int = 0  # runs that ended before their signal
    problems: list[str] = field(default_factory=list)
    data_loss: int = 0  # kills after which a product was lost or altered


def catalogs(
    scenario: str, demo: Path, directory: Path, rows: int = 240
) -> tuple[Path | None, Path]:
    """(what the collection holds before, the catalog the interrupted command ingests)."""
    table = pq.read_table(demo)
    directory.mkdir(parents=True, exist_ok=True)
    catalog = directory / f"{scenario}.parquet"
    pq.write_table(table.slice(0, rows), catalog, row_group_size=64)
    if scenario == "plain":
        return None, catalog
    old = directory / f"{scenario}-old.parquet"
    if scenario == "recreate":
        pq.write_table(table.slice(rows, 80), old)
        return old, catalog
    # prune: yesterday's catalog had every 9th product more and other titles every 7th, and
    # lacked the last 20.
    before = table.slice(0, rows - 20).to_pylist()
    before = [
        {**r, "title": f"{r['title']} (old)" if i % 7 == 3 else r["title"]}
        for i, r in enumerate(before)
    ]
    gone = [{**r, "id": f"{r['id']}-gone"} for r in before[::9]]
    pq.write_table(pa.Table.from_pylist(before + gone, schema=table.schema), old)
    return old, catalog


class Cli:
    """`shopsearch ingest` in a child process, on one data directory."""

    def __init__(self, data: Path, model: Path, work: Path) -> None:
        self.data = data
        self.work = work
        self.env = {
            **os.environ,
            "SHOPSEARCH_MODEL_DIR": str(model),
            "XDG_CACHE_HOME": str(work / "xdg"),
        }

    def args(self, catalog: Path, *flags: str) -> list[str]:
        rejects = str(self.work / "rejects.jsonl")
        return [
            sys.executable, "-m", "shopsearch", "ingest", str(catalog), "-c", COLLECTION,
            "--path", str(self.data), "--batch-size", BATCH, "--rejects", rejects, "--json",
            *flags,
        ]  # fmt: skip

    def run(self, catalog: Path, *flags: str) -> tuple[float, subprocess.CompletedProcess]:
        start = time.perf_counter()
        proc = subprocess.run(
            self.args(catalog, *flags), capture_output=True, text=True, env=self.env
        )
        return time.perf_counter() - start, proc

    def interrupted(
        self, catalog: Path, flags: tuple[str, ...], delay: float, sig: int
    ) -> tuple[int, str, bool]:
        """Start the ingest, send `sig` after `delay` s: (exit status, stderr, whether the
        signal reached it running)."""
        proc = subprocess.Popen(
            self.args(catalog, *flags),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        time.sleep(delay)
        reached = proc.poll() is None
        if reached:
            proc.send_signal(sig)
        _, err = proc.communicate()
        return proc.returncode, err, reached


def state(data: Path) -> State | None:
    """The collection under `data` as stored, or None where none can be opened."""
    from shopsearch.errors import ShopsearchError
    from shopsearch.store.documents import read_vocabulary
    from shopsearch.store.edge import EdgeBackend

    directory = data / COLLECTION
    leftovers = sorted(p.name for p in data.glob(f".{COLLECTION}.*") if p.is_dir())
    backend = EdgeBackend(directory)
    try:
        meta = backend.read_document(_meta_document())
        if meta is None:
            return None
        ids = list(backend.point_ids())
        points = {}
        for start in range(0, len(ids), 256):
            chunk = ids[start : start + 256]
            for rec in backend.shard().retrieve(chunk, with_payload=True, with_vector=True):
                vectors: Any = rec.vector
                sparse = vectors["bm25"]
                points[str(rec.id)] = Point(
                    bytes(memoryview(_floats(vectors["dense"]))),
                    (tuple(sparse.indices), tuple(sparse.values)),
                    json.dumps(rec.payload, sort_keys=True),
                )
        vocabulary = read_vocabulary(backend)
        return State(points, meta, vocabulary, leftovers)
    except ShopsearchError:
        return None
    finally:
        backend.close()


def _meta_document() -> Any:
    from shopsearch.store.schema import Document

    return Document.META


def _floats(values: list[float]) -> Any:
    import numpy as np

    return np.asarray(values, dtype=np.float32)


def differences(got: State | None, want: State, what: str) -> list[str]:
    if got is None:
        return [f"{what}: no collection can be opened"]
    problems = []
    missing = want.points.keys() - got.points.keys()
    extra = got.points.keys() - want.points.keys()
    if missing or extra:
        problems.append(f"{what}: {len(missing)} products missing, {len(extra)} too many")
    altered = [
        pid for pid in want.points.keys() & got.points.keys() if got.points[pid] != want.points[pid]
    ]
    if altered:
        kinds = {
            part
            for pid in altered
            for part in ("dense", "sparse", "payload")
            if getattr(got.points[pid], part) != getattr(want.points[pid], part)
        }
        problems.append(f"{what}: {len(altered)} products differ ({', '.join(sorted(kinds))})")
    if got.meta != want.meta:
        problems.append(f"{what}: metadata {got.meta} != {want.meta}")
    if got.vocabulary != want.vocabulary:
        problems.append(f"{what}: the vocabulary differs")
    if got.leftovers:
        problems.append(f"{what}: left beside the collection: {got.leftovers}")
    return problems


def _after_kill(scenario: str, got: State | None, old: State | None, ref: State) -> list[str]:
    """What must hold after any kill: nothing stored that neither the old collection nor the
    reference holds; --recreate leaves the old collection, or the new one whole (killed after
    the swap, before the exit); --prune loses nothing listed. What a kill leaves beside the
    collection is for the next run to clear."""
    if scenario == "recreate":
        assert old is not None
        found = [p for p in differences(got, old, "after a killed --recreate") if "left" not in p]
        if found and not [p for p in differences(got, ref, "") if "left" not in p]:
            return []
        return found
    if got is None:
        # A collection killed while it was created: the next run must finish or clear it.
        return ["the old collection cannot be opened"] if scenario == "prune" else []
    problems = []
    for pid, point in got.points.items():
        allowed = [s.points.get(pid) for s in (ref, old) if s is not None]
        if point not in allowed:
            problems.append(f"product {pid} holds neither its old nor its new version")
            break
    if old is not None:
        lost = (old.points.keys() & ref.points.keys()) - got.points.keys()
        if lost:
            problems.append(f"{len(lost)} products the catalog lists were lost")
    return problems


def run_chain(
    scenario: str,
    demo: Path,
    model: Path,
    work: Path,
    kills: int,
    seed: int,
    rows: int = 240,
) -> ChainResult:
    """The scenario with `kills` signals at drawn delays, against its reference."""
    rng = random.Random(f"{scenario}-{seed}")
    before, catalog = catalogs(scenario, demo, work / "catalogs", rows)
    flags = {"plain": (), "recreate": ("--recreate",), "prune": ("--prune",)}[scenario]
    result = ChainResult(scenario)

    ref_cli = Cli(work / "reference", model, work)
    cli = Cli(work / "killed", model, work)
    old = None
    for runner in (ref_cli, cli):
        if before is not None:
            _, proc = runner.run(before)
            if proc.returncode != 0:
                result.problems.append(f"setting up: {proc.stderr[-500:]}")
                return result
    if before is not None:
        old = state(cli.data)
    took, proc = ref_cli.run(catalog, *flags)
    if proc.returncode != 0:
        result.problems.append(f"reference run: {proc.stderr[-500:]}")
        return result
    ref = state(ref_cli.data)
    assert ref is not None

    pristine = work / "pristine"
    if cli.data.exists():
        shutil.copytree(cli.data, pristine)
    attempts = 0
    while result.kills < kills and attempts < 3 * kills:
        attempts += 1
        sig = rng.choice([signal.SIGKILL, signal.SIGKILL, signal.SIGINT])
        earliest = 0.3 if sig == signal.SIGINT else 0.02  # before that, Python's own start-up
        delay = rng.uniform(earliest, took * 1.1)
        code, err, reached = cli.interrupted(catalog, flags, delay, sig)
        name = signal.Signals(sig).name
        if not reached or code == 0:
            # The ingest ended first: it must have left what the reference did; the chain
            # starts again from the scenario's start.
            result.finished_first += 1
            if code != 0:
                result.problems.append(f"{name} at {delay:.2f} s: exit {code}: {err[-300:]}")
            result.problems += differences(state(cli.data), ref, "a run that ended first")
            shutil.rmtree(cli.data, ignore_errors=True)
            if pristine.exists():
                shutil.copytree(pristine, cli.data)
            continue
        result.kills += 1
        if "Traceback" in err:
            result.problems.append(f"{name} at {delay:.2f} s: a traceback:\n{err[-1500:]}")
        if sig == signal.SIGINT:
            python_start = code == -signal.SIGINT or "init_import_site" in err
            said = err.strip().splitlines()[-1] if err.strip() else ""
            if not python_start and (code != 130 or not said.startswith("interrupted")):
                result.problems.append(f"SIGINT at {delay:.2f} s: exit {code}: {err[-300:]}")
        elif code != -signal.SIGKILL:
            result.problems.append(f"SIGKILL at {delay:.2f} s: exit {code}: {err[-300:]}")
        found = _after_kill(scenario, state(cli.data), old, ref)
        if found:
            result.data_loss += 1
            result.problems += [f"{name} at {delay:.2f} s: {p}" for p in found]

    _, proc = cli.run(catalog, *flags)
    if proc.returncode != 0:
        result.problems.append(
            f"the run after the kills: exit {proc.returncode}: {proc.stderr[-800:]}"
        )
        result.data_loss += 1
        return result
    final = differences(state(cli.data), ref, "after the kills and a run to the end")
    if final:
        result.data_loss += 1
        result.problems += final
    return result
