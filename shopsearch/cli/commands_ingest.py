"""`shopsearch ingest CATALOG`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.errors import CatalogError, Interrupted
from shopsearch.ingest.fields import CATALOG_FIELDS
from shopsearch.ingest.pipeline import (
    DEFAULT_BATCH_SIZE,
    IngestReport,
    check_rank_fields,
    ingest_catalog,
)
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.readers import CatalogReader, parse_column_map
from shopsearch.store.backend import IndexSettings
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.documents import read_meta


def ingest(
    catalog: Annotated[Path, typer.Argument(help="Catalog file: .parquet, .csv or .jsonl.")],
    column_map: Annotated[
        list[str] | None,
        typer.Option("--map", help="Read a field from another column: FIELD=COLUMN (repeatable)."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="parquet, csv or jsonl [default: from extension]."),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option("--template", help="Product text template, parts separated by '|'."),
    ] = None,
    bm25_k: Annotated[
        float | None,
        typer.Option(
            "--bm25-k",
            help=f"BM25 term-frequency saturation of a new collection [{Bm25Settings.k}].",
        ),
    ] = None,
    bm25_b: Annotated[
        float | None,
        typer.Option(
            "--bm25-b", help=f"BM25 length normalisation of a new collection [{Bm25Settings.b}]."
        ),
    ] = None,
    rejects: Annotated[
        Path | None,
        typer.Option("--rejects", help="Where bad rows go [default: ./<catalog>.rejects.jsonl]."),
    ] = None,
    recreate: Annotated[
        bool,
        typer.Option(
            "--recreate",
            help="Build the collection anew; the old one stays until the new one is built "
            "(on a Qdrant server: until the catalog's first products are read).",
        ),
    ] = False,
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="The catalog is the whole shop: delete the collection's products it no "
            "longer lists (a rejected row keeps its product).",
        ),
    ] = False,
    rank_field: Annotated[
        list[str] | None,
        typer.Option(
            "--rank-field",
            help="Keep this numeric catalog column (popularity, rating, margin ...) for "
            "business ranking (`shopsearch ranking`), repeatable; a new collection's, and "
            "an existing one keeps its own.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = DEFAULT_BATCH_SIZE,
    shards: Annotated[
        int | None,
        typer.Option(
            "--shards",
            min=1,
            help="Qdrant server: shards of a new collection [env SHOPSEARCH_SHARDS; default: "
            "the server's, one per peer].",
            show_default=False,
        ),
    ] = None,
    replicas: Annotated[
        int | None,
        typer.Option(
            "--replicas",
            min=1,
            help="Qdrant server: copies of each shard of a new collection "
            "[env SHOPSEARCH_REPLICAS; default 1].",
            show_default=False,
        ),
    ] = None,
    write_consistency: Annotated[
        int | None,
        typer.Option(
            "--write-consistency",
            min=1,
            help="Qdrant server: copies that must apply a write before it succeeds "
            "[env SHOPSEARCH_WRITE_CONSISTENCY; default 1].",
            show_default=False,
        ),
    ] = None,
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    model: opt.ModelDir = None,
    precision: opt.Precision = opt.DEFAULT_PRECISION,
    threads: opt.Threads = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Read a catalog, encode its products and upsert them (vectors + payload) into Qdrant."""
    ranked = list(dict.fromkeys(rank_field or []))
    check_rank_fields(ranked)
    # Without --rank-field, an existing collection's own are read (`ingest_catalog`).
    fields = [*CATALOG_FIELDS, *(f for f in ranked if f not in CATALOG_FIELDS)]
    mapping = parse_column_map(column_map or [], fields)
    reader = CatalogReader(catalog, mapping, fmt=fmt, rank_fields=ranked)
    text_template = ProductTextTemplate(template) if template else None
    chosen = {name: v for name, v in (("k", bm25_k), ("b", bm25_b)) if v is not None}
    bm25 = Bm25Settings(**chosen) if chosen else None
    connection = opt.connection(collection, path, qdrant_url, api_key)
    index = connection.index_settings(shards, replicas, write_consistency)
    encoder = opt.load_encoder(model, precision, threads)
    backend = connection.open(index)
    err = Console(stderr=True)
    if index != IndexSettings() and not recreate:
        try:
            exists = read_meta(backend) is not None
        except BaseException:
            backend.close()
            raise
        if exists:
            err.print(
                f"note: {backend.location} exists: --shards, --replicas and "
                "--write-consistency (and their variables) apply to a collection ingest "
                "creates; --recreate builds it anew with them",
                highlight=False,
                markup=False,
            )
    progress = Progress(
        TextColumn("ingesting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        TimeElapsedColumn(),
        console=err,
        transient=True,  # the summary line replaces it; an early error leaves no bar
        disable=as_json and not err.is_terminal,
    )
    try:
        with progress:
            task = progress.add_task("ingest", total=reader.total_rows)
            report = ingest_catalog(
                reader,
                backend,
                encoder,
                rejects_path=rejects,
                template=text_template,
                bm25=bm25,
                batch_size=batch_size,
                recreate=recreate,
                prune=prune,
                rank_fields=ranked if rank_field or recreate else None,
                on_rows=lambda n: progress.advance(task, n),
            )
    except KeyboardInterrupt:
        read = int(progress.tasks[0].completed) if progress.tasks else 0
        raise Interrupted(_interrupted_note(read, reader.total_rows, recreate)) from None
    finally:
        backend.close()
    if report.not_pruned:
        err.print(f"warning: nothing pruned: {report.not_pruned}", highlight=False, markup=False)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_summary(report, prune)
    if report.read and not report.upserted:
        # Every row rejected is a catalog this command could not read (e.g. JSONL whose ids
        # sit under another key), not a success.
        raise CatalogError(
            f"no product ingested: all {report.rejected} rows were rejected "
            f"(reasons in {report.rejects_file}; --map id=FIELD if the ids have another name)"
        )


def _interrupted_note(read: int, total: int | None, recreate: bool) -> str:
    """What an interrupted ingest kept, and that running it again finishes the job."""
    of = f" of {total:,}" if total is not None else ""
    if recreate:
        return (
            f"{read:,}{of} rows read; run the same command again to build the collection anew "
            "(an embedded collection keeps its old products until a --recreate completes)"
        )
    return (
        f"{read:,}{of} rows read and stored; run the same command again to resume (stored "
        "products that have not changed are not encoded again)"
    )


def _print_summary(report: IngestReport, prune: bool) -> None:
    out = Console(highlight=False, markup=False)  # paths may hold [...]
    out.print(
        f"read {report.read} = upserted {report.upserted} + rejected {report.rejected}"
        f"  ({report.seconds:.1f} s incl. {report.index_seconds:.1f} s indexing, "
        f"{report.read / max(report.seconds, 1e-9):.0f} rows/s)"
    )
    if report.unchanged:
        out.print(f"{report.unchanged} of them already stored as they are: not encoded again")
    if prune and not report.not_pruned:
        out.print(f"pruned {report.pruned} products the catalog no longer lists")
    out.print(f"collection {report.collection}: {report.points_in_collection} products")
    if report.rejects_file:
        out.print(f"rejected rows and reasons: {report.rejects_file}")
