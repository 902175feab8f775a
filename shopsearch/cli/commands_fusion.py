"""`shopsearch fusion fit`: a thin layer over `shopsearch.evaluation.fusion_fit`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.errors import UsageError

if TYPE_CHECKING:
    from shopsearch.encoders.protocol import TextEncoder
    from shopsearch.evaluation.judgments import Judgments
    from shopsearch.store.connection import Connection


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
    business: Annotated[
        list[str] | None,
        typer.Option(
            "--business",
            help="Fit business ranking weights of this rank field instead of the learned "
            "fusion (repeatable): a grid search maximising nDCG@10 of the default search, "
            "stored as the collection's ranking (`shopsearch ranking`).",
            show_default=False,
        ),
    ] = None,
    in_stock_first: Annotated[
        bool,
        typer.Option("--in-stock-first", help="With --business: fit with in-stock first on."),
    ] = False,
    confidence: Annotated[
        bool,
        typer.Option(
            "--confidence",
            help="Fit the relevance floor's confidence model instead of the learned fusion, on "
            "the judged results of the default search's top 10, and store it with the "
            "collection: searches use it over the package's prior.",
        ),
    ] = False,
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
    if in_stock_first and not business:
        raise UsageError("--in-stock-first goes with --business FIELD")
    if confidence and business:
        raise UsageError("--confidence and --business fit different things: give one")
    encoder = opt.load_encoder(model, precision, threads)
    if confidence:
        _fit_confidence(judged, encoder, candidates, fix_typos,
                        opt.connection(collection, path, qdrant_url, api_key), as_json)  # fmt: skip
        return
    if business:
        _fit_business(judged, encoder, business, in_stock_first, candidates, fix_typos,
                      opt.connection(collection, path, qdrant_url, api_key), as_json)  # fmt: skip
        return
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
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


def _fit_confidence(
    judged: Judgments,
    encoder: TextEncoder,
    candidates: int,
    fix_typos: bool,
    connection: Connection,
    as_json: bool,
) -> None:
    """`fusion fit --confidence`: fit the relevance floor's model and store it with the
    collection (shopsearch.evaluation.confidence_fit)."""
    from rich.progress import Progress

    from shopsearch.cli.commands_eval import calibration_line
    from shopsearch.evaluation.confidence_fit import fit_confidence
    from shopsearch.search.product_search import ProductSearch, SearchOptions
    from shopsearch.store.documents import write_confidence

    with connection.opened() as backend:
        search = ProductSearch(backend, encoder)
        options = SearchOptions(candidates=candidates, fix_typos=fix_typos)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("searching judged queries", total=len(judged.queries))
            fitted = fit_confidence(
                search, judged, options, on_chunk=lambda n: progress.advance(task, n)
            )
        with backend.writing():
            write_confidence(backend, fitted.model.to_dict())
    model = fitted.model
    summary = {
        "collection": backend.location,
        "queries": fitted.queries,
        "results": fitted.results,
        "features": list(model.features),
        "intercept": round(model.intercept, 4),
        "weights": [round(w, 4) for w in model.weights],
        "calibration": fitted.calibration.to_dict(),
    }
    if as_json:
        print_json(summary)
        return
    terms = " ".join(f"{w:+.2f} {n}" for n, w in zip(model.features, model.weights, strict=True))
    console = Console(highlight=False)
    console.print(
        f"confidence model fit on {fitted.results:,} judged results of {fitted.queries:,} "
        f"queries: {model.intercept:+.2f} {terms}, stored with {backend.location}; searches "
        "use it from now on (`ingest --recreate` returns to the package's prior).",
        markup=False,
    )
    console.print(calibration_line(fitted.calibration), markup=False)


def _fit_business(
    judged: Judgments,
    encoder: TextEncoder,
    fields: list[str],
    in_stock_first: bool,
    candidates: int,
    fix_typos: bool,
    connection: Connection,
    as_json: bool,
) -> None:
    """`fusion fit --business`: fit the ranking's weights and store them with the collection."""
    from shopsearch.evaluation.fusion_fit import fit_business
    from shopsearch.search.product_search import ProductSearch, SearchOptions
    from shopsearch.store.documents import write_ranking

    with connection.opened() as backend:
        search = ProductSearch(backend, encoder)
        options = SearchOptions(candidates=candidates, fix_typos=fix_typos)
        fitted = fit_business(
            search, judged, options, list(dict.fromkeys(fields)), in_stock_first=in_stock_first
        )
        write_ranking(backend, fitted.ranking.to_dict())
    summary = {
        "collection": backend.location,
        "queries": fitted.queries,
        **fitted.ranking.to_dict(),
        "ndcg@10": round(fitted.ndcg, 4),
        "ndcg@10_without": round(fitted.baseline, 4),
    }
    if as_json:
        print_json(summary)
        return
    weights = ", ".join(f"{n}:{w:g}" for n, w in fitted.ranking.weights)
    Console(highlight=False).print(
        f"business ranking fit on {fitted.queries:,} queries: {weights}"
        f"{' with in-stock first' if in_stock_first else ''} (nDCG@10 {fitted.ndcg:.4f}, "
        f"{fitted.baseline:.4f} without), stored with {backend.location}.",
        markup=False,
    )
