"""`shopsearch fusion fit`: a thin layer over `shopsearch.evaluation.fusion_fit`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json


def fit(
    judgments: Annotated[
        Path,
        typer.Option(
            "--judgments",
            "-j",
            help="Judged queries to fit on (parquet, CSV, JSONL), as for `shopsearch eval`; "
            "not the queries you evaluate on.",
        ),
    ],
    column_map: Annotated[
        list[str] | None,
        typer.Option("--map", help="Judgments column for a field: FIELD=COLUMN (repeatable)."),
    ] = None,
    candidates: Annotated[
        int, typer.Option("--candidates", min=1, help="Candidates per retriever.")
    ] = 100,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the queries.")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the fit.")] = 0,
    fix_typos: opt.FixTypos = True,
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    model: opt.ModelDir = None,
    precision: opt.Precision = opt.DEFAULT_PRECISION,
    threads: opt.Threads = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Fit the collection's learned fusion (`query --fusion learned`) on judged queries."""
    from rich.progress import Progress

    from shopsearch.evaluation.fusion_fit import fit_fusion
    from shopsearch.evaluation.judgments import load_judgments, parse_column_map
    from shopsearch.search.product_search import ProductSearch, SearchOptions
    from shopsearch.store.documents import write_fusion

    judged = load_judgments(judgments, parse_column_map(column_map or []))
    encoder = opt.load_encoder(model, precision, threads)
    backend = opt.connection(collection, path, qdrant_url, api_key).open()
    try:
        search = ProductSearch(backend, encoder)
        options = SearchOptions(candidates=candidates, fix_typos=fix_typos)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("searching judged queries", total=len(judged.queries))
            fitted = fit_fusion(
                search,
                judged,
                options,
                epochs=epochs,
                seed=seed,
                on_chunk=lambda n: progress.advance(task, n),
            )
        with backend.writing():
            write_fusion(backend, fitted.model.to_dict())
    finally:
        backend.close()
    summary = {
        "collection": backend.location,
        "queries": fitted.queries,
        "candidates": fitted.candidates,
        "gained_found": fitted.judged_found,  # judged products with a gain above 0 found
        "gained": fitted.judged,
    }
    if as_json:
        print_json(summary)
        return
    Console(highlight=False).print(
        f"learned fusion fit on {fitted.queries:,} queries ({fitted.candidates:,} candidates; "
        f"{fitted.judged_found:,} of the {fitted.judged:,} judged products with a gain among "
        "them), "
        f"stored with {backend.location}. Search with `--fusion learned`.",
        markup=False,
    )
