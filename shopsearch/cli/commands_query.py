"""`shopsearch query` (one query, or a batch file -> run file), `shopsearch facets` and
`shopsearch info`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated

import typer

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.errors import UsageError
from shopsearch.evaluation.runs import search_rankings, write_ranking
from shopsearch.search.business_ranking import parse_boosts
from shopsearch.search.facets import FACET_FIELDS, RANGE_FIELDS, check_facet_fields
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions, prepare_query
from shopsearch.search.responses import (
    collection_document,
    facets_document,
    search_answer,
    unmatched_filter_hints,
)
from shopsearch.search.rules import fired_rules
from shopsearch.search.sorting import parse_sort
from shopsearch.search.spelling import TypoCorrector
from shopsearch.store.backend import FusionMethod, SearchMode


def query(
    text: Annotated[str | None, typer.Argument(help="What the shopper typed.")] = None,
    filters: opt.Filters = None,
    mode: Annotated[SearchMode, typer.Option("--mode", help="hybrid, dense or bm25.")] = (
        SearchMode.HYBRID
    ),
    fusion: Annotated[FusionMethod, typer.Option("--fusion", help=opt.FUSION_HELP)] = (
        FusionMethod.ADAPTIVE
    ),
    bm25_weight: opt.Bm25Weight = None,
    min_confidence: opt.MinConfidence = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=10_000)] = 10,
    offset: Annotated[
        int,
        typer.Option(
            "--offset",
            min=0,
            max=10_000,
            help="Skip the first N results (one per family, where variants collapse): "
            "--offset 10 is page 2 of --top-k 10.",
        ),
    ] = 0,
    candidates: Annotated[
        int, typer.Option("--candidates", min=1, help="Per-retriever depth before fusion.")
    ] = 100,
    exact: Annotated[
        bool, typer.Option("--exact", help="Exact (brute force) dense search.")
    ] = False,
    fix_typos: opt.FixTypos = True,
    sort: Annotated[
        str | None,
        typer.Option(
            "--sort",
            help="FIELD:asc|desc: order the relevant results (the best --candidates) by an "
            "indexed number field (price), equal values by relevance.",
            show_default=False,
        ),
    ] = None,
    rules: Annotated[
        bool,
        typer.Option(
            "--rules/--no-rules",
            help="Apply the collection's merchandising rules (`shopsearch rules`); "
            "--no-rules searches by relevance alone.",
        ),
    ] = True,
    synonyms: Annotated[
        bool,
        typer.Option(
            "--synonyms/--no-synonyms",
            help="Widen the BM25 side of the query with the collection's synonyms "
            "(`shopsearch synonyms`).",
        ),
    ] = True,
    boost_field: opt.BoostFields = None,
    in_stock_first: opt.InStockFirst = False,
    all_variants: Annotated[
        bool,
        typer.Option(
            "--all-variants",
            help="List every variant of a product family (same parent_id), not only the "
            "best match of each.",
        ),
    ] = False,
    facet: Annotated[
        list[str] | None,
        typer.Option(
            "--facet",
            help="Count the values of a field among the best --candidates results, "
            f"repeatable: {', '.join(FACET_FIELDS)}; {', '.join(RANGE_FIELDS)} gets its range.",
            show_default=False,
        ),
    ] = None,
    facet_limit: Annotated[
        int, typer.Option("--facet-limit", min=1, max=10_000, help="Values per --facet field.")
    ] = 10,
    batch: Annotated[
        Path | None,
        typer.Option("--batch", help='JSONL of {"query_id", "query", "filters"?} to run.'),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run file for --batch [default: stdout].")
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
    """Search the catalog: dense + BM25 fused (default), with payload filters."""
    if (text is None) == (batch is None):
        raise UsageError("give a query TEXT or --batch FILE (one of the two)")
    if out is not None and batch is None:
        raise UsageError("--out goes with --batch")
    opt.writable_file(out, "--out")
    if offset and batch is not None:
        raise UsageError("--offset pages one query's results; --batch writes whole rankings")
    if facet and batch is not None:
        raise UsageError("--facet counts one query's results; --batch writes whole rankings")
    facet_names = check_facet_fields(facet) if facet else []
    options = SearchOptions(
        mode=mode,
        fusion=fusion,
        bm25_weight=bm25_weight,
        top_k=top_k,
        offset=offset,
        candidates=candidates,
        exact=exact,
        fix_typos=fix_typos,
        collapse_variants=not all_variants,
        rules=rules,
        synonyms=synonyms,
        sort=None if sort is None else parse_sort(sort),
        ranking=parse_boosts(boost_field or [], in_stock_first),
        payload_fields=["product_id"] if batch else None,
        # One query's answer shows each result's confidence; a run file holds none.
        confidence=batch is None,
        min_confidence=min_confidence,
    )
    queries = (
        list(_read_batch(batch, filters or []))
        if batch
        else [Query(opt.utf8_text(text or "", "the query"), parse_filters(filters or []))]
    )
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        # Prepared before the encoder starts, so that a one-shot query is encoded, searched
        # and faceted as corrected, the correction made once.
        typos = TypoCorrector.stored(backend)
        if batch is None:
            queries = [prepare_query(typos, queries[0], options)]
        searched = queries[0].searched or ""
        encoder = (
            None
            if mode is SearchMode.BM25 and min_confidence is None
            else opt.load_encoder(model, precision, threads, queries=None if batch else [searched])
        )
        search = ProductSearch(backend, encoder, typos)
        if options.ranking is not None:
            options.ranking.check(search.meta)  # a weight on a field it lacks: exit 2
        if batch is not None:
            _run_batch(search, queries, options, out)
            return
        queries = [search.prepare(queries[0], options)]  # with its synonyms, for the answer
        hits = search.search(queries[0], options)
        counted = search.facets(queries[0], options, facet_names, facet_limit) if facet else None
        if as_json:
            doc = search_answer(search, queries[0], filters or [], options, hits, counted)
        else:
            hints = unmatched_filter_hints(search, filters or [], hits)
    if as_json:
        print_json(doc, ensure_ascii=False)
        return
    for hint in hints:
        print(f"hint: {hint.message}", file=sys.stderr)
    for effect in fired_rules(hits):  # what the merchandising rules did
        print(f"rule {effect['rule']}: {effect['effect']}", file=sys.stderr)
    for applied in queries[0].synonyms or ():  # what widened the BM25 side
        print(f"synonyms: {applied.matched} -> {', '.join(applied.added)}", file=sys.stderr)
    from rich.console import Console  # not imported for --json: see app._print_error

    from shopsearch.cli.render import results_table

    console = Console()
    console.print(results_table(text or "", searched, hits, mode, offset, min_confidence))
    if counted is not None:
        from shopsearch.cli.render import facet_tables

        heading = f"facets of the best {counted.products} results (--candidates)"
        console.print(*facet_tables(heading, counted))


def facets(
    fields: Annotated[
        list[str] | None,
        typer.Argument(
            help=f"Fields to count, one or more: {', '.join(FACET_FIELDS)}; or "
            f"{', '.join(RANGE_FIELDS)}, whose lowest and highest value is shown.",
            show_default=False,
        ),
    ] = None,
    filters: opt.Filters = None,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", min=1, max=10_000, help="Values per field, most products first."
        ),
    ] = 10,
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Count the products holding each value of a field, among those that pass the filters:
    a filter sidebar's counts, and the exact values --filter matches."""
    names = check_facet_fields(fields or [])
    conditions = parse_filters(filters or [])
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        counted = ProductSearch(backend, None).catalog_facets(conditions, names, limit)
    if as_json:
        print_json({"filters": filters or [], **facets_document(counted)}, ensure_ascii=False)
        return
    from rich.console import Console

    from shopsearch.cli.render import facet_tables

    passed = f" pass {' and '.join(filters)}" if filters else ""
    Console().print(*facet_tables(f"{counted.products:,} products{passed}", counted))


def info(
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    api_key: opt.ApiKey = None,
    as_json: opt.JsonOut = False,
) -> None:
    """Show a collection: where it is, how many products, which encoder built it, and its
    learned fusion (`shopsearch fusion fit`) if it has one."""
    with opt.connection(collection, path, qdrant_url, api_key).opened() as backend:
        doc = collection_document(ProductSearch(backend, None))
    if as_json:
        print_json(doc)
        return
    from rich.console import Console
    from rich.text import Text

    console = Console(highlight=False, soft_wrap=True)
    for key, value in doc.items():
        if key == "placement" and isinstance(value, dict):  # None: left to the server
            value = ", ".join(
                f"{k}={'server default' if v is None else v}" for k, v in value.items()
            )
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(map(str, value)) or "none"
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        elif key == "variants" and value is None:
            value = (
                "not recorded (searched as if products had variants; an ingest with --prune "
                "or --recreate records it)"
            )
        elif value is None:
            value = "none"
        console.print(Text.assemble((key, "bold"), ": ", str(value)))


def _read_batch(path: Path, extra_filters: list[str]) -> Iterator[Query]:
    """Parse every line before searching anything: a bad line fails fast, naming its line.
    A query without an id (or with a null one) is named by its line number. A file without
    a query is refused: a run of no rankings is what a wrong path or an unfinished export
    gives, not a batch to search."""
    try:
        # utf-8-sig: editors on Windows start a UTF-8 file with a byte-order mark.
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read --batch {path}: {exc}") from exc
    if not any(line.strip() for line in lines):
        raise UsageError(f"--batch {path} holds no query (it is empty or blank)")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name} line {number}"
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{where}: invalid JSON ({exc.msg})") from None
        if not isinstance(item, dict) or not isinstance(item.get("query"), str):
            raise UsageError(f'{where}: expected {{"query_id": ..., "query": "..."}}')
        raw_filters = item.get("filters") or []
        if not isinstance(raw_filters, list) or not all(isinstance(f, str) for f in raw_filters):
            raise UsageError(f"{where}: filters must be a list of strings")
        try:
            conditions = parse_filters([*raw_filters, *extra_filters])
            query_id = item.get("query_id")
            query_id = str(number if query_id is None else query_id)
            # JSON may escape a lone surrogate ("\ud800"), which no tokenizer can take.
            text = opt.utf8_text(item["query"], "the query")
            yield Query(text, conditions, query_id=query_id)
        except UsageError as exc:
            raise UsageError(f"{where}: {exc}") from None


def _run_batch(
    search: ProductSearch, queries: list[Query], options: SearchOptions, out: Path | None
) -> None:
    from rich.console import Console
    from rich.progress import Progress

    sink: IO[str] = out.open("w", encoding="utf-8") if out else sys.stdout
    try:
        with Progress(console=Console(stderr=True), disable=out is None) as progress:
            task = progress.add_task("searching", total=len(queries))
            for ranking in search_rankings(
                search, queries, options, on_chunk=lambda n: progress.advance(task, n)
            ):
                write_ranking(sink, ranking)
    finally:
        if out:
            sink.close()
