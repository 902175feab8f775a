"""`shopsearch facets` on the 54,667-product Home Depot catalog (benchmarks/bench_catalog.py).

For each countable field the benchmark catalog fills, the top 10 values are counted by
Qdrant's facet API (`EdgeBackend.facet`, exact counts), over the whole catalog and under the
benchmark's filters, and compared in the same run with what a service without facets
would do: scroll the products passing the filters, reading that one payload field, and
count in Python. Both must give the same top 10 (asserted); the table reports p50 of
each and their ratio.

    python benchmarks/facet_latency.py [--work DIR] [--repeats 20] [--collection-dir DIR]

Then a query's facets (`shopsearch query TEXT --facet brand --facet color`): the 1,226 dev
queries, warm and in-process with the int8 encoder, under the benchmark's filters, each
searched alone and searched with its facets counted among its best 100 results (which
goes first alternates query by query); p50 of each and their ratio.

Shares query_latency.py's --work directory (catalog and Edge collection; built on first use).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import qdrant_edge as qe
from bench_catalog import FILTERS, dev_queries, percentiles, table, write_catalog
from query_latency import COLLECTION, ensure_collection, ensure_model

from shopsearch.encoders import OnnxEncoder, default_model_dir
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.conditions import Condition, build_filter
from shopsearch.store.connection import Connection
from shopsearch.store.counts import FacetCount, by_count
from shopsearch.store.edge import EDGE_MODELS, EdgeBackend

# The benchmark catalog fills these (no category, size or currency).
FIELDS = ("brand", "color", "in_stock")
LIMIT = 10


def scrolled_counts(backend: EdgeBackend, field: str, conditions: list[Condition]) -> list:
    """The reference: every passing product's `field`, scrolled 1,024 at a time."""
    shard, offset, counts = backend.shard(), None, Counter()
    flt = build_filter(conditions, EDGE_MODELS)
    while True:
        page = qe.ScrollRequest(offset, 1024, filter=flt, with_payload=[field], with_vector=False)
        records, offset = shard.scroll(page)
        counts.update(r.payload[field] for r in records if r.payload.get(field) is not None)
        if offset is None:
            return by_count([FacetCount(v, n) for v, n in counts.items()])[:LIMIT]


def timed(repeats: int, fn, *args) -> tuple[float, object]:
    samples, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn(*args)
        samples.append(time.perf_counter() - started)
    return percentiles(samples)["p50"], result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--collection-dir",
        type=Path,
        default=None,
        help="time an existing Edge collection instead (e.g. scale_1m.py's), built from "
        "bench_catalog.py's catalog",
    )
    args = parser.parse_args()

    model_dir = ensure_model(args.model_dir or default_model_dir())
    if args.collection_dir is None:
        catalog = write_catalog(args.work / "homedepot-attrs.parquet")
        connection = Connection(collection=COLLECTION, path=args.work / "edge")
        ensure_collection(connection, catalog, model_dir)
        backend = connection.open()
    else:
        backend = EdgeBackend(args.collection_dir)
    assert isinstance(backend, EdgeBackend)
    rows = []
    try:
        for label, conditions in (("none", []), (" and ".join(FILTERS), parse_filters(FILTERS))):
            passing = backend.count(conditions)
            for field in FIELDS:
                facet_ms, facet = timed(args.repeats, backend.facet, field, conditions, LIMIT)
                scroll_ms, scrolled = timed(
                    max(3, args.repeats // 4), scrolled_counts, backend, field, conditions
                )
                assert facet == scrolled, (field, label, facet, scrolled)
                rows.append(
                    [
                        label,
                        f"{passing:,}",
                        field,
                        len(facet),
                        f"{facet_ms:.2f}",
                        f"{scroll_ms:.1f}",
                        f"{scroll_ms / facet_ms:.0f}x",
                    ]
                )
        query_rows = query_facets(backend, OnnxEncoder.load(model_dir, precision="int8"))
    finally:
        backend.close()
    print(f"Top {LIMIT} values per field, exact counts, Edge, p50 in ms:\n")
    header = ["filters", "products", "field", "values", "facet", "scroll + count", "ratio"]
    print(table(header, rows))
    print(f"\nThe dev queries under {' and '.join(FILTERS)}, hybrid RRF, top 10, int8, ms:\n")
    print(table(["search", "p50", "p99", "vs results alone, p50"], query_rows))


def query_facets(backend: EdgeBackend, encoder: OnnxEncoder) -> list[list[str]]:
    """Each arm has a ProductSearch of its own, so that each encodes every query once (a
    ProductSearch keeps the last query's vectors, for its facets). The arms take turns at
    going first: the second search of a query finds its part of the index in the cache."""
    search, faceted_search = ProductSearch(backend, encoder), ProductSearch(backend, encoder)
    conditions = parse_filters(FILTERS)
    options = SearchOptions()
    queries = [Query(text, conditions) for text in dev_queries()]

    def results(query: Query) -> float:
        started = time.perf_counter()
        search.search(query, options)
        return time.perf_counter() - started

    def with_facets(query: Query) -> float:
        started = time.perf_counter()
        faceted_search.search(query, options)
        faceted_search.facets(query, options, ["brand", "color"], LIMIT)
        return time.perf_counter() - started

    for query in queries[:50]:  # warm-up
        results(query)
        with_facets(query)
    alone, faceted = [], []
    for i, query in enumerate(queries):
        if i % 2:
            faceted.append(with_facets(query))
            alone.append(results(query))
        else:
            alone.append(results(query))
            faceted.append(with_facets(query))
    a, f = percentiles(alone), percentiles(faceted)
    return [
        ["results", f"{a['p50']:.2f}", f"{a['p99']:.2f}", "1.00x"],
        [
            "results + brand and color facets",
            f"{f['p50']:.2f}",
            f"{f['p99']:.2f}",
            f"{f['p50'] / a['p50']:.2f}x",
        ],
    ]


if __name__ == "__main__":
    main()
