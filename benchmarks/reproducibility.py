"""Reproducibility: do two clean ingests of one catalog store the same collection and rank the
Home Depot dev queries the same, in every search mode?

Each ingest is the real CLI in its own process (`shopsearch ingest`, default precision and
threads), into its own data directory. The two collections are then compared point by point
(dense vectors bit for bit, BM25 vectors, payloads) and by the top 20 of each of the 1,226
dev queries in each mode (dense, bm25, hybrid), searched through the HNSW graph and exactly
(`--exact`). A ranking counts as different when its 20 ids differ in order; `ids replaced`
counts the ids of one top 20 the other lacks (most, and mean over the queries).

`--history` adds a collection that reached the same catalog another way: ingested with every
50th title edited, then synced to the catalog (only the edited products are encoded again,
in batches of their own) — a shop's daily re-ingest, compared with a clean ingest.

    python benchmarks/reproducibility.py [--work DIR] [--rows 10000] [--catalog PATH]
        [--model-dir MODEL] [--ef 200] [--history]

Catalog: the first `--rows` products of the benchmark catalog (`bench_catalog.py`), or
`--catalog` (any catalog the CLI reads). `--work` keeps the collections between runs; delete
it to ingest again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from bench_catalog import SCHEMA, catalog_batches, dev_queries, table

from shopsearch.encoders import OnnxEncoder
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import SearchMode
from shopsearch.store.edge import EdgeBackend

COLLECTION = "repro"
MODES = ("dense", "bm25", "hybrid")
TOP = 20


@dataclass(frozen=True)
class StoredPoint:
    dense: np.ndarray
    sparse: tuple[tuple[int, ...], tuple[float, ...]]
    payload: str  # canonical JSON


def stored_points(backend: EdgeBackend) -> dict[str, StoredPoint]:
    """Every point of an Edge collection: its vectors as stored, its payload."""
    shard = backend.shard()
    ids = list(backend.point_ids())
    points = {}
    for start in range(0, len(ids), 512):
        for rec in shard.retrieve(ids[start : start + 512], with_payload=True, with_vector=True):
            vectors: Any = rec.vector
            sparse = vectors["bm25"]
            points[str(rec.id)] = StoredPoint(
                np.asarray(vectors["dense"], dtype=np.float32),
                (tuple(sparse.indices), tuple(sparse.values)),
                json.dumps(rec.payload, sort_keys=True, ensure_ascii=False),
            )
    return points


def compare_points(a: dict[str, StoredPoint], b: dict[str, StoredPoint]) -> dict[str, Any]:
    shared = a.keys() & b.keys()
    dense_differ = [pid for pid in shared if not np.array_equal(a[pid].dense, b[pid].dense)]
    cosines = [float(a[pid].dense @ b[pid].dense) for pid in dense_differ]
    return {
        "points": (len(a), len(b)),
        "only_in_one": len(a.keys() ^ b.keys()),
        "dense_differ": len(dense_differ),
        "dense_max_abs": max(
            (float(np.abs(a[p].dense - b[p].dense).max()) for p in dense_differ), default=0.0
        ),
        "dense_min_cosine": min(cosines, default=1.0),
        "sparse_differ": sum(a[p].sparse != b[p].sparse for p in shared),
        "payload_differ": sum(a[p].payload != b[p].payload for p in shared),
    }


def rankings(
    search: ProductSearch, queries: Sequence[str], mode: str, exact: bool, ef: int | None
) -> list[list[str]]:
    options = SearchOptions(mode=SearchMode(mode), top_k=TOP, exact=exact, hnsw_ef=ef)
    ranked = []
    for start in range(0, len(queries), 64):
        batch = [Query(q) for q in queries[start : start + 64]]
        ranked += [[h.point_id for h in hits] for hits in search.search_batch(batch, options)]
    return ranked


def compare_rankings(a: list[list[str]], b: list[list[str]]) -> dict[str, Any]:
    """How many queries rank otherwise, and how many of a query's ids the other lacks (a
    query with fewer than `TOP` results counts those it has)."""
    pairs = list(zip(a, b, strict=True))
    replaced = [max(len(x), len(y)) - len(set(x) & set(y)) for x, y in pairs]
    return {
        "queries": len(a),
        "order_differ": sum(x != y for x, y in pairs),
        "set_differ": sum(set(x) != set(y) for x, y in pairs),
        "top10_differ": sum(x[:10] != y[:10] for x, y in pairs),
        "most_replaced": max(replaced, default=0),
        "mean_replaced": round(float(np.mean(replaced)), 3) if replaced else 0.0,
    }


def cli_ingest(catalog: Path, data: Path, model_dir: Path | None, *extra: str) -> dict[str, Any]:
    args = ["ingest", str(catalog), "-c", COLLECTION, "--path", str(data), "--json"]
    args += ["--rejects", str(data.parent / f"{data.name}.rejects.jsonl"), *extra]
    if model_dir:
        args += ["--model", str(model_dir)]
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"shopsearch {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def slice_catalog(work: Path, rows: int) -> Path:
    path = work / f"homedepot-{rows}.parquet"
    if not path.exists():
        taken, batches = 0, []
        for batch in catalog_batches(batch=min(rows, 50_000)):
            batches.append(batch.slice(0, rows - taken))
            taken += batches[-1].num_rows
            if taken >= rows:
                break
        pq.write_table(pa.Table.from_batches(batches, schema=SCHEMA), path)
    return path


def edited(catalog: Path, work: Path, every: int = 50) -> Path:
    """`catalog` with every `every`-th title changed: yesterday's catalog."""
    path = work / f"{catalog.stem}-edited.parquet"
    data = pq.read_table(catalog)
    titles = data.column("title").to_pylist()
    titles = [f"{t} (old)" if i % every == 0 and t else t for i, t in enumerate(titles)]
    column = data.schema.get_field_index("title")
    pq.write_table(data.set_column(column, "title", pa.array(titles, pa.string())), path)
    return path


def compare(
    a: EdgeBackend,
    b: EdgeBackend,
    encoder: OnnxEncoder,
    queries: Sequence[str],
    efs: Sequence[int | None],
) -> tuple[dict[str, Any], list[list[object]]]:
    points = compare_points(stored_points(a), stored_points(b))
    searches = [ProductSearch(a, encoder), ProductSearch(b, encoder)]
    rows: list[list[object]] = []
    for mode in MODES:
        for exact, ef in [(False, ef) for ef in efs] + [(True, None)]:
            if mode == "bm25" and ef is not None:
                continue  # BM25 walks no graph
            ranked = [rankings(s, queries, mode, exact, ef) for s in searches]
            diff = compare_rankings(*ranked)
            how = "exact" if exact else f"HNSW ef {ef or 'default'}"
            rows.append(
                [
                    mode,
                    how,
                    f"{diff['order_differ']} / {diff['queries']}",
                    diff["set_differ"],
                    diff["top10_differ"],
                    diff["most_replaced"],
                    diff["mean_replaced"],
                ]
            )
    return points, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-repro"))
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--catalog", type=Path, default=None)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--ef", type=int, action="append", default=[], help="also this hnsw_ef")
    parser.add_argument("--history", action="store_true")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    catalog = args.catalog or slice_catalog(args.work, args.rows)
    runs = {"clean A": args.work / "a", "clean B": args.work / "b"}
    if args.history:
        runs["synced"] = args.work / "synced"
    for name, data in runs.items():
        if (data / COLLECTION).exists():
            continue
        start = time.perf_counter()
        if name == "synced":
            cli_ingest(edited(catalog, args.work), data, args.model_dir)
        report = cli_ingest(catalog, data, args.model_dir)
        took = time.perf_counter() - start
        print(f"{name}: {report['points_in_collection']} products in {took:.0f} s", flush=True)

    encoder = OnnxEncoder.load(args.model_dir)
    queries = dev_queries()
    efs = [None, *args.ef]
    backends = {name: EdgeBackend(data / COLLECTION) for name, data in runs.items()}
    pairs = [("clean A", "clean B")] + ([("clean A", "synced")] if args.history else [])
    print(
        f"catalog {catalog} ({pq.read_metadata(catalog).num_rows} rows), {len(queries)} dev "
        f"queries, top {TOP}, {os.cpu_count()} CPUs"
    )
    for one, other in pairs:
        points, rows = compare(backends[one], backends[other], encoder, queries, efs)
        print(f"\n{one} vs {other}: {json.dumps(points)}")
        header = [
            "mode",
            "search",
            "order differs",
            "set differs",
            "top 10 differs",
            "most ids replaced",
            "mean ids replaced",
        ]
        print(table(header, rows))


if __name__ == "__main__":
    main()
