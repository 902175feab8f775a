"""Ingest throughput: parquet -> indexed, searchable Edge shard, against encoding alone.

Encoding is the bulk of ingest's work, so the pipeline overlaps reading, validation, BM25,
upserts and indexing with it; the target is ingest >= 0.9x the encoder-only throughput on
the same product texts, measured in the same run. Catalog: the 54,667 Home Depot products
with synthetic attributes (benchmarks/bench_catalog.py). Reports products/s, the ratio, and
the ingest process's peak RSS.

    python benchmarks/ingest_throughput.py [--work DIR] [--precision int8 fp32] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pyarrow.parquet as pq
from bench_catalog import run_shopsearch, table, write_catalog

from shopsearch.encoders import OnnxEncoder, default_model_dir
from shopsearch.ingest.pipeline import DEFAULT_BATCH_SIZE
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.readers import CatalogReader
from shopsearch.ingest.validate import Product, validate


def product_texts(catalog: Path) -> list[str]:
    template = ProductTextTemplate()
    texts = []
    for batch in CatalogReader(catalog).batches(DEFAULT_BATCH_SIZE):
        texts += [template.render(p) for p in map(validate, batch) if isinstance(p, Product)]
    return texts


def encoder_only(model_dir: Path, precision: str, texts: list[str]) -> float:
    encoder = OnnxEncoder.load(model_dir, precision=precision)
    encoder.encode_documents(texts[:256])
    start = time.perf_counter()
    for i in range(0, len(texts), DEFAULT_BATCH_SIZE):
        encoder.encode_documents(texts[i : i + DEFAULT_BATCH_SIZE])
    return len(texts) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--precision", nargs="+", default=["int8", "fp32"])
    parser.add_argument("--limit", type=int, default=0, help="first N products only (0: all)")
    args = parser.parse_args()

    model_dir = args.model_dir or default_model_dir()
    catalog = write_catalog(args.work / "homedepot-attrs.parquet")
    if args.limit:
        small = args.work / f"homedepot-attrs-{args.limit}.parquet"
        if not small.exists():
            pq.write_table(pq.read_table(catalog).slice(0, args.limit), small)
        catalog = small
    texts = product_texts(catalog)
    rows = []
    for precision in args.precision:
        encode_rate = encoder_only(model_dir, precision, texts)
        data_dir = args.work / f"ingest-{precision}"
        wall, peak_mib, out = run_shopsearch(
            "ingest",
            str(catalog),
            "--collection",
            "ingest-bench",
            "--path",
            str(data_dir),
            "--model",
            str(model_dir),
            "--precision",
            precision,
            "--recreate",
            "--json",
            "--rejects",
            str(args.work / "ingest.rejects.jsonl"),
        )
        report = json.loads(out)
        assert report["points_in_collection"] == len(texts), report
        ingest_rate = report["read"] / report["seconds"]
        ratio = ingest_rate / encode_rate
        rows.append(
            [
                precision,
                f"{len(texts):,}",
                f"{encode_rate:,.0f}",
                f"{ingest_rate:,.0f}",
                f"{ratio:.2f}x",
                f"{report['index_seconds']:.0f} of {report['seconds']:.0f}",
                f"{wall:.1f}",
                f"{peak_mib:,.0f}",
                "met" if ratio >= 0.9 else "MISSED",
            ]
        )
    print(f"{os.cpu_count()} CPUs; texts = the default product text template\n")
    print(
        table(
            [
                "encoder",
                "products",
                "encoder-only /s",
                "ingest /s",
                "ratio",
                "index build s of ingest s",
                "ingest wall s",
                "peak RSS MiB",
                "target >= 0.9x",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
