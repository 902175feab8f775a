"""Where the Edge index build's time goes, and what a cheaper graph would cost in recall.

The build at the end of an ingest (flush + optimise: HNSW on int8 copies, payload indexes)
takes 8-10 s of the ~100 s ingest of the 55k catalog, and is issue 5's gap to its ingest
target (RESULTS.md section 3). This replays the benchmark collection's points (vectors, BM25,
payloads) into fresh shards that differ in one index setting, through the product's own
backend, times each build, and measures dense recall@10 against exact search, unfiltered and
under price filters of several selectivities, at the engine's default ef (= ef_construct)
and at ef 100.

    python benchmarks/index_build.py [--work DIR] [--model-dir DIR] [--queries N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import qdrant_edge as qe
from bench_catalog import FILTERS, dev_queries, percentiles, table, write_catalog
from query_latency import COLLECTION, ensure_collection, ensure_model

from shopsearch.encoders import OnnxEncoder, default_model_dir
from shopsearch.search.filters import parse_filters
from shopsearch.store.backend import (
    IndexSettings,
    ProductPoint,
    SearchMode,
    SearchRequest,
    SparseVec,
)
from shopsearch.store.connection import Connection
from shopsearch.store.documents import read_meta
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import DENSE_VECTOR, SPARSE_VECTOR, CollectionMeta


def unlink_price(backend: EdgeBackend) -> None:
    """No payload subgraph for price: HNSW then adds no links between products whose prices
    fall in the same band (the links that keep price-filtered search connected). Works on the
    backend's shard: a rejected variant gets no product setting."""
    shard = backend.shard()
    shard.update(qe.UpdateOperation.delete_field_index("price"))
    shard.update(
        qe.UpdateOperation.create_field_index("price", qe.FloatIndexParams(enable_hnsw=False))
    )


Variant = tuple[IndexSettings, Callable[[EdgeBackend], None] | None]
VARIANTS: dict[str, Variant] = {
    "default (m 16, ef_construct 100)": (IndexSettings(), None),
    "ef_construct 64": (IndexSettings(hnsw_ef_construct=64), None),
    "ef_construct 50": (IndexSettings(hnsw_ef_construct=50), None),
    "no price subgraph": (IndexSettings(), unlink_price),
}


def read_points(edge_dir: Path) -> list[ProductPoint]:
    backend = EdgeBackend(edge_dir)
    shard = backend.shard()
    points, offset = [], None
    while True:
        request = qe.ScrollRequest(offset=offset, limit=5000, with_payload=True, with_vector=True)
        records, offset = shard.scroll(request)
        for r in records:
            sparse = r.vector[SPARSE_VECTOR]
            points.append(
                ProductPoint(
                    str(r.id),
                    np.asarray(r.vector[DENSE_VECTOR], dtype=np.float32),
                    SparseVec(list(sparse.indices), list(sparse.values)),
                    r.payload,
                )
            )
        if offset is None:
            break
    backend.close()
    return points


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def build(
    meta: CollectionMeta, points: list[ProductPoint], directory: Path, variant: Variant
) -> dict[str, Any]:
    index, adjust = variant
    shutil.rmtree(directory, ignore_errors=True)
    backend = EdgeBackend(directory, index)
    with backend.writing():  # leaving it flushes and optimises: the index build
        backend.create(meta)
        if adjust:
            adjust(backend)
        for i in range(0, len(points), 256):
            backend.upsert(points[i : i + 256])
        wall, cpu = time.perf_counter(), cpu_seconds()
    return {
        "backend": backend,
        "build_s": time.perf_counter() - wall,
        "build_cpu_s": cpu_seconds() - cpu,
    }


def search(
    backend: EdgeBackend, vectors: np.ndarray, filters: list[str], **kw: Any
) -> tuple[list[list[str]], list[float]]:
    conditions = parse_filters(filters)
    ids, seconds = [], []
    for v in vectors:
        request = SearchRequest(v, None, conditions, SearchMode.DENSE, with_payload=False, **kw)
        started = time.perf_counter()
        hits = backend.search_batch([request])[0]
        seconds.append(time.perf_counter() - started)
        ids.append([h.point_id for h in hits])
    return ids, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--queries", type=int, default=400, help="dev queries to search with")
    args = parser.parse_args()

    model_dir = ensure_model(args.model_dir or default_model_dir())
    catalog = write_catalog(args.work / "homedepot-attrs.parquet")
    connection = Connection(collection=COLLECTION, path=args.work / "edge")
    ensure_collection(connection, catalog, model_dir)
    meta = read_meta(EdgeBackend(connection.edge_dir()))
    assert meta is not None
    points = read_points(connection.edge_dir())
    encoder = OnnxEncoder.load(model_dir, precision="int8")
    vectors = encoder.encode_queries(dev_queries()[: args.queries])
    price = pq.read_table(catalog, columns=["price"]).column("price").to_numpy()
    filter_sets = {"none": [], ", ".join(FILTERS): FILTERS}
    for share in (20, 10):
        cut = np.percentile(price, share)
        filter_sets[f"price <= {share}th percentile"] = [f"price<={cut:.2f}"]

    print(f"{len(points)} points from {connection.edge_dir()}; {len(vectors)} dev queries\n")
    rows, truth = [], {}
    for n, (name, variant) in enumerate(VARIANTS.items()):
        built = build(meta, points, args.work / f"index-build-{n}", variant)
        backend = built["backend"]
        for label, filters in filter_sets.items():
            if label not in truth:
                truth[label] = search(backend, vectors, filters, exact=True)[0]
            cells = []
            for ef in (None, 100):
                search(backend, vectors[:50], filters, hnsw_ef=ef)  # warm-up
                ids, seconds = search(backend, vectors, filters, hnsw_ef=ef)
                pairs = zip(ids, truth[label], strict=True)
                hits = [len(set(a) & set(b)) / max(1, len(b)) for a, b in pairs]
                cells += [f"{np.mean(hits):.4f}", f"{percentiles(seconds)['p50']:.2f}"]
            rows.append(
                [name, f"{built['build_s']:.1f}", f"{built['build_cpu_s']:.1f}", label, *cells]
            )
            print(" | ".join(rows[-1]), flush=True)
        backend.close()
        shutil.rmtree(args.work / f"index-build-{n}")
    print()
    header = ["index", "build s", "build CPU s", "filter", "recall@10", "p50 ms"]
    print(table([*header, "recall@10 at ef 100", "p50 ms at ef 100"], rows))


if __name__ == "__main__":
    main()
