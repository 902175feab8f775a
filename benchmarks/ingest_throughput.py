"""Ingest throughput: parquet -> indexed, searchable Edge shard, against encoding alone.

Encoding is the bulk of ingest's work, so the pipeline overlaps reading, validation, BM25,
upserts and indexing with it; the target is ingest >= 0.9x the encoder-only throughput on
the same product texts, measured in the same run. Catalog: the 54,667 Home Depot products
with synthetic attributes (benchmarks/bench_catalog.py). Reports products/s, the ratio, and
the ingest process's peak RSS.

Then the daily sync a shop runs: the same catalog with --changed of its products edited
and as many discontinued, re-ingested with --prune into the collection just built. Only
the edited products are encoded again; its time is reported against the fresh ingest's.

    python benchmarks/ingest_throughput.py [--work DIR] [--precision int8 fp32] [--limit N]
        [--changed 0.01]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
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


def next_day(catalog: Path, changed: float) -> tuple[Path, int, int]:
    """`catalog` with every (1/changed)-th product's title edited and as many others gone."""
    step = max(2, round(1 / changed))
    data = pq.read_table(catalog)
    position = np.arange(data.num_rows) % step
    edited, kept = position == 0, position != step // 2
    titles = [
        f"{title} (new model)" if edit else title
        for title, edit in zip(data["title"].to_pylist(), edited, strict=True)
    ]
    data = data.set_column(data.schema.get_field_index("title"), "title", pa.array(titles))
    out = catalog.with_name(f"{catalog.stem}-next-day.parquet")
    pq.write_table(data.filter(pa.array(kept)), out)
    return out, int(edited.sum()), int((~kept).sum())


def ingest(
    catalog: Path, data_dir: Path, model_dir: Path, precision: str, *flags: str
) -> tuple[float, float, dict]:
    """`shopsearch ingest --json` in its own process: wall s, peak RSS MiB, the report."""
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
        "--json",
        "--rejects",
        str(data_dir.parent / "ingest.rejects.jsonl"),
        *flags,
    )
    return wall, peak_mib, json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--precision", nargs="+", default=["int8", "fp32"])
    parser.add_argument("--limit", type=int, default=0, help="first N products only (0: all)")
    parser.add_argument(
        "--changed", type=float, default=0.01, help="share of products edited (and removed)"
    )
    args = parser.parse_args()

    model_dir = args.model_dir or default_model_dir()
    catalog = write_catalog(args.work / "homedepot-attrs.parquet")
    if args.limit:
        small = args.work / f"homedepot-attrs-{args.limit}.parquet"
        if not small.exists():
            pq.write_table(pq.read_table(catalog).slice(0, args.limit), small)
        catalog = small
    texts = product_texts(catalog)
    tomorrow, n_edited, n_gone = next_day(catalog, args.changed)
    rows, sync_rows = [], []
    for precision in args.precision:
        encode_rate = encoder_only(model_dir, precision, texts)
        data_dir = args.work / f"ingest-{precision}"
        wall, peak_mib, report = ingest(catalog, data_dir, model_dir, precision, "--recreate")
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
        _, _, sync = ingest(tomorrow, data_dir, model_dir, precision, "--prune")
        encoded = sync["upserted"] - sync["unchanged"]
        assert (encoded, sync["pruned"]) == (n_edited, n_gone), sync
        sync_rows.append(
            [
                precision,
                f"{sync['read']:,}",
                f"{encoded:,} / {sync['unchanged']:,} / {sync['pruned']:,}",
                f"{sync['index_seconds']:.1f} of {sync['seconds']:.1f}",
                f"{report['seconds']:.1f}",
                f"{sync['seconds'] / report['seconds']:.2f}x",
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

    print(
        f"\nthe next day: {args.changed:.0%} of titles edited, {n_gone:,} products gone, "
        "re-ingested with --prune into the collection above\n"
    )
    print(
        table(
            [
                "encoder",
                "rows read",
                "encoded / unchanged / pruned",
                "index s of ingest s",
                "fresh ingest s",
                "time vs fresh",
            ],
            sync_rows,
        )
    )


if __name__ == "__main__":
    main()
