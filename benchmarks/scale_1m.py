"""1,000,000 products in embedded Qdrant Edge: ingest time, peak RSS, query latency, and the
HNSW / quantisation settings that keep recall@10 >= 0.98 of exact search.

Catalog: the 54,667 Home Depot titles x 19 variants (benchmarks/bench_catalog.py: colour,
size and pack count vary and appear in the title) = 1,038,673 products. Encoding a million
texts on 2 cores would take the run past an hour, so vectors are derived: the 54,667 real
title embeddings are encoded once (int8), and variant v of product i gets
normalise(e_i + sigma * g) with g ~ N(0, I/d) seeded by (i, v) and sigma = 0.35 (cosine to
the original ~0.94): variants are near neighbours of their product, as real variants are.
BM25 vectors are computed from each variant's real text. Queries: the 1,226 dev queries,
encoded for real. Recall counts points (every variant); the filtered hybrid query is timed
as a shopper gets it, one result per family (parent_id), and with every variant.

    python benchmarks/scale_1m.py [--work DIR] [--variants 19] [--ef 32 64 128 256]
                                  [--m 16] [--ef-construct 100] [--no-int8-quantization]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from bench_catalog import FILTERS, catalog_batches, dev_queries, percentiles, table

from shopsearch.encoders import OnnxEncoder, default_model_dir
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.validate import Product
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import IndexSettings, ProductPoint, SearchMode, SparseVec
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import CollectionMeta, EncoderInfo, point_id

SIGMA = 0.35
UPSERT_BATCH = 2_000


def base_embeddings(work: Path, encoder: OnnxEncoder) -> np.ndarray:
    cache = work / "homedepot-title-embeddings-int8.npy"
    if cache.exists():
        return np.load(cache)
    from bench_catalog import homedepot_titles

    _, titles = homedepot_titles()
    vectors = np.vstack(
        [encoder.encode_documents(titles[i : i + 512]) for i in range(0, len(titles), 512)]
    )
    np.save(cache, vectors)
    return vectors


def build(
    directory: Path, encoder: OnnxEncoder, base: np.ndarray, variants: int, index: IndexSettings
) -> dict[str, float]:
    if directory.exists():
        shutil.rmtree(directory)
    template = ProductTextTemplate()
    settings = Bm25Settings(avg_len=24.0)
    bm25 = settings.model()
    backend = EdgeBackend(directory, index)
    with backend.writing():  # leaving it flushes and optimises: the index build
        meta = CollectionMeta(EncoderInfo.of(encoder), settings.to_dict(), template.template)
        backend.create(meta)
        n_base = len(base)
        dim = base.shape[1]
        start = time.perf_counter()
        total = 0
        for batch in catalog_batches(variants, batch=UPSERT_BATCH):
            rows = batch.to_pylist()
            points = []
            for row in rows:
                _, _, variant = row["id"].partition("-v")
                v = int(variant or 0)
                i = total % n_base
                vec = base[i]
                if v:
                    rng = np.random.default_rng(i * 1000 + v)
                    vec = vec + SIGMA * rng.standard_normal(dim).astype(np.float32) / np.sqrt(dim)
                    vec = vec / np.linalg.norm(vec)
                product = Product(**row)
                sparse = bm25.embed_document(template.render(product))
                points.append(
                    ProductPoint(
                        point_id(row["id"]),
                        vec.astype(np.float32),
                        SparseVec(list(sparse.indices), list(sparse.values)),
                        product.payload(),
                    )
                )
                total += 1
            backend.upsert(points)
        upserted = time.perf_counter() - start
    indexed = time.perf_counter() - start
    count = backend.count()
    backend.close()
    return {"products": count, "upsert_s": upserted, "total_s": indexed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--variants", type=int, default=19)
    parser.add_argument("--ef", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--m", type=int, default=16)
    parser.add_argument("--ef-construct", type=int, default=100)
    parser.add_argument(
        "--int8-quantization",
        action=argparse.BooleanOptionalAction,
        default=IndexSettings().int8_quantization,
        help="int8 scalar quantisation with rescoring (the default index)",
    )
    parser.add_argument("--reuse", action="store_true", help="query an existing build")
    args = parser.parse_args()

    encoder = OnnxEncoder.load(args.model_dir or default_model_dir(), precision="int8")
    args.work.mkdir(parents=True, exist_ok=True)
    base = base_embeddings(args.work, encoder)
    index = IndexSettings(
        hnsw_m=args.m, hnsw_ef_construct=args.ef_construct, int8_quantization=args.int8_quantization
    )
    name = f"scale-{args.variants}v-m{args.m}-efc{args.ef_construct}" + (
        "-sq8" if args.int8_quantization else ""
    )
    directory = args.work / name
    if not (args.reuse and directory.exists()):
        stats = build(directory, encoder, base, args.variants, index)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"built {name}: {stats['products']:,} products; upserts {stats['upsert_s']:.0f} s, "
            f"upserts + HNSW/optimise {stats['total_s']:.0f} s "
            f"({stats['products'] / stats['total_s']:,.0f} products/s); peak RSS {rss:,.0f} MiB\n"
        )

    backend = EdgeBackend(directory)
    search = ProductSearch(backend, encoder)
    queries = dev_queries()
    conditions = parse_filters(FILTERS)
    # Recall is the index's: of points, every variant counted (collapse_variants off).
    exact = SearchOptions(
        mode=SearchMode.DENSE, top_k=10, exact=True, payload_fields=[], collapse_variants=False
    )
    truth = [
        [h.point_id for h in hits]
        for hits in search.search_batch([Query(q) for q in queries], exact)
    ]
    for q in queries[:200]:  # warm the graph and the sparse index: the first ef's row paid it
        search.search(Query(q, conditions), SearchOptions(top_k=10, hnsw_ef=args.ef[0]))
    rows = []
    for ef in args.ef:
        dense = replace(exact, exact=False, hnsw_ef=ef)
        # What a shopper gets: one result per family (the default), and every variant.
        hybrid = SearchOptions(top_k=10, hnsw_ef=ef)
        every_variant = replace(hybrid, collapse_variants=False)
        found = search.search_batch([Query(q) for q in queries], dense)
        recall = np.mean(
            [
                len(set(t) & {h.point_id for h in f}) / max(len(t), 1)
                for t, f in zip(truth, found, strict=True)
            ]
        )
        dense_t, hybrid_t, every_t, families = [], [], [], []
        # One ProductSearch each: one keeps its last query's vectors, and the later searches
        # of a query would not encode it.
        by_dense, by_hybrid, by_every = (ProductSearch(backend, encoder) for _ in range(3))
        for q in queries:
            t0 = time.perf_counter()
            by_dense.search(Query(q), dense)
            t1 = time.perf_counter()
            hits = by_hybrid.search(Query(q, conditions), hybrid)
            t2 = time.perf_counter()
            every = by_every.search(Query(q, conditions), every_variant)
            dense_t.append(t1 - t0)
            hybrid_t.append(t2 - t1)
            every_t.append(time.perf_counter() - t2)
            families.append((len(hits), len({x.payload.get("parent_id") for x in every})))
        d, h, e = percentiles(dense_t), percentiles(hybrid_t), percentiles(every_t)
        shown, crowded = np.mean(families, axis=0)
        rows.append(
            [
                ef,
                f"{recall:.4f}",
                f"{d['p50']:.2f}",
                f"{d['p99']:.2f}",
                f"{h['p50']:.2f}",
                f"{h['p99']:.2f}",
                f"{shown:.1f}",
                f"{e['p50']:.2f}",
                f"{e['p99']:.2f}",
                f"{crowded:.1f}",
                "met" if recall >= 0.98 and h["p50"] <= 10 else "MISSED",
            ]
        )
    backend.close()
    print(f"{name}, {len(queries)} dev queries; latencies include encoding (int8), ms\n")
    print(
        table(
            [
                "hnsw_ef",
                "recall@10 vs exact",
                "dense p50",
                "dense p99",
                f"hybrid+filter {FILTERS} p50",
                "p99",
                "families on the page",
                "same, every variant: p50",
                "p99",
                "families on the page",
                "target (recall>=0.98, p50<=10ms)",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
