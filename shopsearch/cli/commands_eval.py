"""`shopsearch eval`: graded metrics, strata, paired significance and an HTML report.

A thin layer: systems come from run files (`--run [NAME=]PATH`) and/or from searching a
collection (`--mode`, repeatable); everything else lives in `shopsearch.evaluation`.
Judgments that name no product of the collection (or run) are an error, and a collection
holding under 90% of the judged products a warning on stderr (`evaluation.coverage`):
a wrong collection must not read as a bad model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.errors import UsageError
from shopsearch.evaluation.calibration import Calibration
from shopsearch.evaluation.coverage import check_run, run_coverage
from shopsearch.evaluation.evaluate import ALL, Evaluation, System
from shopsearch.evaluation.evaluate import evaluate as score_systems
from shopsearch.evaluation.judgments import (
    load_judgments,
    parse_column_map,
    parse_gains,
    parse_scale,
)
from shopsearch.evaluation.metrics import MODES, MetricConfig
from shopsearch.evaluation.runs import read_run, write_run
from shopsearch.evaluation.significance import DEFAULT_RESAMPLES, DEFAULT_SEED
from shopsearch.store.backend import FusionMethod, SearchMode


def evaluate(
    judgments: Annotated[
        Path,
        typer.Option(
            "--judgments",
            "-j",
            help="Judgments (parquet, CSV, JSONL): query_id, query, "
            "product_id|product_uid, relevance (a rating) or an ESCI label, count?",
        ),
    ],
    column_map: Annotated[
        list[str] | None,
        typer.Option(
            "--map",
            help="Judgments column for a field: FIELD=COLUMN (repeatable; "
            "fields query_id, query, product_id, grade, count).",
        ),
    ] = None,
    runs: Annotated[
        list[str] | None,
        typer.Option("--run", help="A run file to score, [NAME=]PATH (repeatable)."),
    ] = None,
    modes: Annotated[
        list[SearchMode] | None,
        typer.Option(
            "--mode", help="Search the collection in this mode (repeatable: hybrid, dense, bm25)."
        ),
    ] = None,
    fusion: Annotated[FusionMethod, typer.Option("--fusion", help=opt.FUSION_HELP)] = (
        FusionMethod.ADAPTIVE
    ),
    bm25_weight: opt.Bm25Weight = None,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, max=10_000)] = 100,
    candidates: Annotated[
        int, typer.Option("--candidates", min=1, help="Per-retriever depth before fusion.")
    ] = 100,
    exact: Annotated[bool, typer.Option("--exact", help="Exact (brute force) dense search.")] = (
        False
    ),
    fix_typos: opt.FixTypos = True,
    rerank: Annotated[
        bool, typer.Option(help="Also score each query's judged products (re-rank mode).")
    ] = True,
    catalog: Annotated[
        Path | None,
        typer.Option(
            "--catalog",
            help="Catalog file for category strata [default: the collection's payloads].",
        ),
    ] = None,
    catalog_map: Annotated[
        list[str] | None,
        typer.Option("--catalog-map", help="Catalog column for a field, as ingest's --map."),
    ] = None,
    ndcg_k: Annotated[
        list[int] | None, typer.Option("--ndcg-k", min=1, help="nDCG cut-offs [10].")
    ] = None,
    recall_k: Annotated[
        list[int] | None, typer.Option("--recall-k", min=1, help="Recall cut-offs [100].")
    ] = None,
    gains: Annotated[
        list[str] | None,
        typer.Option("--gain", help="ESCI gain LABEL=VALUE [E=1 S=0.1 C=0.01 I=0]."),
    ] = None,
    grades: Annotated[
        str | None,
        typer.Option(
            "--grades",
            "--rating-range",
            help="Scale of numeric ratings, LO..HI (e.g. 1..4), for gain=(r-LO)/(HI-LO) "
            "[detected: floor(lowest)..ceil(highest) rating].",
        ),
    ] = None,
    relevant: Annotated[
        str | None,
        typer.Option(
            "--relevant",
            help="Relevant for Recall/MRR: rating >= X, or an ESCI label and better "
            "[ratings: 3/4 up the scale, rounded down to a half grade (2.5 on 1..3, "
            "3 on 1..4); ESCI: S].",
        ),
    ] = None,
    pair_gap: Annotated[
        float, typer.Option("--pair-gap", min=0.0, help="Numeric ratings: pairs need this gap.")
    ] = 0.5,
    resamples: Annotated[
        int, typer.Option("--resamples", min=100, help="Bootstrap / randomisation resamples.")
    ] = DEFAULT_RESAMPLES,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the resampling.")] = DEFAULT_SEED,
    report: Annotated[
        Path | None, typer.Option("--report", help="Write a self-contained HTML report here.")
    ] = None,
    save_runs: Annotated[
        Path | None,
        typer.Option("--save-runs", help="Directory to write the searched systems' run files."),
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
    """Graded retrieval metrics, strata, significance and an HTML report."""
    if not runs and not modes:
        raise UsageError("nothing to evaluate: give --run FILE and/or --mode MODE (collection)")
    # Checked before the judgments are read and the collection searched, not after.
    opt.writable_file(report, "--report")
    opt.writable_dir(save_runs, "--save-runs")
    judged = load_judgments(
        judgments,
        parse_column_map(column_map or []),
        gains=parse_gains(gains or []),
        rating_range=parse_scale(grades),
        relevant=relevant,
        pair_gap=pair_gap,
    )
    config = MetricConfig(tuple(ndcg_k or (10,)), tuple(recall_k or (100,)))
    systems: list[System] = []
    for spec in runs or []:
        name, sep, file = spec.partition("=")
        file_path = Path(file if sep else spec)
        run = read_run(file_path)
        name = name if sep else file_path.stem
        check_run(name, str(file_path), run_coverage(run, judged), str(judgments))
        systems.append(System(name, run, source=str(file_path)))
    payloads: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    coverage: float | None = None
    facts: dict[str, dict[str, str]] = {}
    calibration: Calibration | None = None
    if modes:
        from shopsearch.search.product_search import SearchOptions

        if bm25_weight is not None and SearchMode.HYBRID not in modes:
            raise UsageError("--bm25-weight weighs hybrid searches: add --mode hybrid")

        searched = SearchOptions(
            fusion=fusion,
            bm25_weight=bm25_weight,
            top_k=top_k,
            candidates=candidates,
            exact=exact,
            fix_typos=fix_typos,
        )
        searched_systems, found, calibration = _search_systems(
            judged,
            modes,
            searched,
            rerank,
            payloads,
            opt.connection(collection, path, qdrant_url, api_key),
            lambda: opt.load_encoder(model, precision, threads),
            str(judgments),
            warnings,
        )
        systems += searched_systems
        coverage, facts = found.coverage, found.strata
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise UsageError(f"system names must differ (got {', '.join(names)}); use --run NAME=PATH")
    if save_runs is not None:
        save_runs.mkdir(parents=True, exist_ok=True)
        for s in systems:
            if s.source.startswith("collection"):
                write_run(save_runs / f"{s.name}.jsonl", s.full.values())
                if s.rerank is not None:
                    write_run(save_runs / f"{s.name}.rerank.jsonl", s.rerank.values())
    categories = _categories(catalog, catalog_map or [], payloads)
    ev = score_systems(
        judged,
        systems,
        config,
        categories,
        resamples=resamples,
        seed=seed,
        extra_strata=facts,
        collection_coverage=coverage,
        warnings=warnings,
    )
    ev.calibration = calibration
    err = Console(stderr=True, highlight=False)
    for warning in ev.warnings:  # before the results, and with --json too: it changes them
        err.print(f"[bold red]warning:[/] {escape(warning)}")
    if report is not None:
        from shopsearch.evaluation.report import write_report

        write_report(ev, report)
    if as_json:
        print_json(ev.to_dict())
        return
    _print_tables(ev, Console(highlight=False))
    if report is not None:
        err.print(f"report: {report}", markup=False)


def _search_systems(
    judged,
    modes,
    searched,
    rerank,
    payloads,
    connection,
    load_encoder,
    judgments_path: str,
    warnings: list[str],
) -> tuple[list[System], Any, Any]:
    """`searched`: the options of every mode's search, but the mode. The collection's
    coverage of the judged products is checked before any search: none is an error
    (`CoverageError`), under 90% a warning appended to `warnings`. With a hybrid mode, the
    relevance floor's calibration on its results is read too (`calibration_of`)."""
    from dataclasses import replace

    from rich.progress import Progress

    from shopsearch.evaluation.coverage import check_collection
    from shopsearch.evaluation.systems import calibration_of, collection_facts, search_system
    from shopsearch.search.product_search import ProductSearch

    needs_encoder = any(m is not SearchMode.BM25 for m in modes)
    encoder = load_encoder() if needs_encoder else None
    out = []
    calibration = None
    with connection.opened() as backend:
        search = ProductSearch(backend, encoder)
        facts = collection_facts(search, judged, searched)
        where = f"'{connection.collection}' ({backend.location})"
        warnings += check_collection(
            facts.found, facts.judged, where, judgments_path, facts.missing
        )
        for pid, payload in facts.payloads.items():
            payloads.setdefault(pid, payload)
        with Progress(console=Console(stderr=True), transient=True) as progress:
            for mode in dict.fromkeys(modes):
                # --bm25-weight weighs the hybrid systems; the others compare against them.
                weight = searched.bm25_weight if mode is SearchMode.HYBRID else None
                options = replace(searched, mode=mode, bm25_weight=weight)
                total = len(judged.queries) * (2 if rerank else 1)
                task = progress.add_task(f"searching ({mode.value})", total=total)
                out.append(
                    search_system(
                        search,
                        judged,
                        options,
                        rerank=rerank,
                        payloads=payloads,
                        on_chunk=lambda n, t=task: progress.advance(t, n),
                    )
                )
                if mode is SearchMode.HYBRID and calibration is None:
                    progress.update(task, description="reading confidences (hybrid)")
                    calibration = calibration_of(search, judged, out[-1], options)
    return out, facts, calibration


def _categories(catalog: Path | None, mapping: list[str], payloads: dict[str, dict[str, Any]]):
    if catalog is None:
        return {pid: p.get("category") for pid, p in payloads.items() if p.get("category")}
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.ingest.readers import parse_column_map as catalog_map
    from shopsearch.ingest.validate import Product, validate

    reader = CatalogReader(catalog, catalog_map(mapping))
    out: dict[str, list[str] | None] = {}
    for batch in reader.batches(4096):
        for raw in batch:
            product = validate(raw)
            if isinstance(product, Product) and product.category:
                out[product.id] = list(product.category)
    return out


def _fmt(value: float, digits: int = 3) -> str:
    return (
        "–"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{value:.{digits}f}")
    )


def _print_tables(ev: Evaluation, console: Console) -> None:
    """System names, sources (paths) and strata (catalog categories) are the user's text:
    escaped, or rich would read `[...]` in them as markup."""
    baseline = escape(ev.baseline.name)
    for s in ev.systems:
        note = f" — {s.missing_queries} judged queries missing" if s.missing_queries else ""
        console.print(Text.assemble((s.name, "bold"), f": {s.source}{note}"))
    console.print(f"{len(ev.query_ids)} judged queries; {ev.scheme.summary()}", markup=False)
    for mode in MODES:
        title = "full-corpus retrieval" if mode == "full" else "re-ranking judged products"
        table = Table(title=f"{title} (mean over queries; Δ vs {baseline}, 95% CI, p)")
        table.add_column("metric")
        for s in ev.systems:
            table.add_column(escape(s.name), justify="right")
        for s in ev.systems[1:]:
            table.add_column(f"Δ {escape(s.name)}", justify="right")
        for metric in ev.metrics:
            if ev.mean(ev.baseline, mode, metric)[1] == 0:
                continue
            cells = [metric] + [_fmt(ev.mean(s, mode, metric)[0]) for s in ev.systems]
            for s in ev.systems[1:]:
                c = ev.comparisons[mode][s.name][ALL][metric]
                cells.append(_delta(c))
            table.add_row(*cells)
        console.print(table)
    key = ev.metrics[0]
    for mode in MODES:
        if len(ev.groups()) == 1:
            break
        table = Table(title=f"{key} per stratum ({'full corpus' if mode == 'full' else 're-rank'})")
        table.add_column("stratum")
        table.add_column("queries", justify="right")
        for s in ev.systems:
            table.add_column(escape(s.name), justify="right")
        for s in ev.systems[1:]:
            table.add_column(f"Δ {escape(s.name)}", justify="right")
        for group in ev.groups():
            n = int(ev.mask(group).sum())
            cells = [escape(group[1] if group == ALL else f"{group[0]}: {group[1]}"), str(n)]
            cells += [_fmt(ev.mean(s, mode, key, group)[0]) for s in ev.systems]
            cells += [_delta(ev.comparisons[mode][s.name][group][key]) for s in ev.systems[1:]]
            table.add_row(*cells)
        console.print(table)
    if ev.calibration is not None:
        console.print(calibration_line(ev.calibration), markup=False)


def calibration_line(cal: Calibration) -> str:
    """The relevance floor's calibration in one line: ECE and the default cut's effect."""
    at = cal.at(cal.cut)
    judged = len(cal.confidence)
    if not judged:
        return f"relevance floor ({cal.system}): no judged product among the first {cal.k}"
    return (
        f"relevance floor ({cal.system}, {judged} judged results among the first {cal.k}): "
        f"ECE {cal.ece:.3f}; at the default cut {at['cut']:g}: precision {_fmt(at['precision'])}"
        f" (all: {cal.relevant.mean():.3f}), recall {_fmt(at['recall'])}, no confident match "
        f"on {at['no_confident_match']} of {len(cal.firsts)} queries"
    )


def _delta(c: Any) -> str:
    if c.n == 0:
        return "–"
    p = "p=1" if c.p_value == 1 else (f"p<{1e-3:g}" if c.p_value < 1e-3 else f"p={c.p_value:.3f}")
    mark = "*" if c.significant else ""
    return f"{c.delta:+.3f} {c.ci_text()} {p}{mark}"
