"""Typo tolerance on Home Depot: each query searched as typed and as corrected, paired.

Home Depot's shopper queries are short and often misspelled ("toliet", "riobi"). Ingest stores
the catalog's vocabulary, and `ProductSearch` replaces a query word no product uses by a
catalog word one edit away (`shopsearch/search/spelling.py`). This searches every judged query
twice through `ProductSearch`, the query path of `shopsearch query` and `shopsearch eval`,
once as typed (`fix_typos=False`) and once corrected, and pairs the two with the evaluation
protocol's tests (full-corpus nDCG@10 and Recall@100, relevance >= 2.5):

- the zero-shot collection of `eval_homedepot.py` (built by the CLI's ingest, so it holds the
  vocabulary): BM25, dense (exact) and hybrid (RRF, the CLI default), on the 8,191 train
  queries (where the rules were chosen) and the 1,226 dev queries;
- with `--ablation DIR` (a `train_homedepot.py --int8` run directory's `int8/`), each trained
  system's collection on dev, dense (exact) and fused (DBSF), as that benchmark scores them.

It also times the correction alone over the dev queries.

    python benchmarks/typo_tolerance.py [--work DIR] [--ablation DIR] [--data DIR]

--work is shared with eval_homedepot.py (its collection is built there once, ~2 min; one
built before typo tolerance has no vocabulary: use a new --work). Results: RESULTS.md
section 8.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path

from eval_homedepot import COLLECTION, DEFAULT_DATA, ensure_collection

from shopsearch.encoders import OnnxEncoder
from shopsearch.evaluation.evaluate import ALL, evaluate
from shopsearch.evaluation.judgments import Judgments, load_judgments
from shopsearch.evaluation.systems import search_system
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.spelling import TypoCorrector
from shopsearch.store.backend import FusionMethod, SearchMode
from shopsearch.store.edge import EdgeBackend

METRICS = ("nDCG@10", "Recall@100")


@dataclass(frozen=True)
class Target:
    name: str
    collection: Path  # an Edge collection directory
    model: Path


def compare(target: Target, judgments: Judgments, split: str, modes: list[SearchOptions]) -> None:
    backend = EdgeBackend(target.collection)
    search = ProductSearch(backend, OnnxEncoder.load(target.model, precision="int8"))
    if not search.typos.vocabulary:
        raise SystemExit(f"{target.collection} has no vocabulary: ingest it again")
    changed = sum(search.searched_text(Query(q.text)) != q.text for q in judgments.queries.values())
    print(f"\n{target.name}, {len(judgments.queries)} {split} queries ({changed} corrected)\n")
    print("| mode | nDCG@10 typed -> corrected | Δ [95% CI], p | Recall@100 | Δ, p |")
    print("|---|---|---|---|---|")
    for options in modes:
        started = time.perf_counter()
        systems = [
            search_system(
                search,
                judgments,
                replace(options, fix_typos=fix),
                "corrected" if fix else "typed",
                rerank=False,
            )
            for fix in (False, True)
        ]
        ev = evaluate(judgments, systems)
        cells = []
        for metric in METRICS:
            before, _ = ev.mean(ev.systems[0], "full", metric)
            after, _ = ev.mean(ev.systems[1], "full", metric)
            c = ev.comparisons["full"]["corrected"][ALL][metric]
            cells += [
                f"{before:.4f} -> {after:.4f}",
                f"{c.delta:+.4f} [{c.ci_low:+.4f}, {c.ci_high:+.4f}], {c.p_value:.2g}",
            ]
        label = options.mode.value + (
            f" ({options.fusion.value})" if options.mode is SearchMode.HYBRID else ""
        )
        print(f"| {label} | " + " | ".join(cells) + f" |  ({time.perf_counter() - started:.0f} s)")
    backend.close()


def time_correction(target: Target, judgments: Judgments) -> None:
    backend = EdgeBackend(target.collection)
    typos = TypoCorrector.stored(backend)  # the vocabulary alone: no shard to load
    texts = [q.text for q in judgments.queries.values()]
    for text in texts:  # warm the alphabet
        typos.correct(text)
    times = []
    for text in texts:
        started = time.perf_counter()
        typos.correct(text)
        times.append((time.perf_counter() - started) * 1e6)
    times.sort()
    print(
        f"\ncorrection alone, {len(texts)} dev queries: mean {statistics.fmean(times):.0f} µs, "
        f"p50 {times[len(times) // 2]:.0f} µs, p99 {times[int(len(times) * 0.99)]:.0f} µs, "
        f"max {times[-1]:.0f} µs"
    )
    backend.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-homedepot"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--ablation", type=Path, default=None, help="a train_homedepot int8/ dir")
    parser.add_argument("--skip-train", action="store_true", help="dev only")
    args = parser.parse_args()
    hd = args.data / "homedepot"
    where = ensure_collection(hd, args.work, args.model_dir)
    model = Path(where[where.index("--model") + 1])
    zero_shot = Target("zero-shot", args.work / "data" / COLLECTION, model)
    dev = load_judgments(hd / "judgments-dev.parquet")
    cli_modes = [
        SearchOptions(mode=SearchMode.BM25, top_k=100),
        SearchOptions(mode=SearchMode.DENSE, top_k=100, exact=True),
        SearchOptions(mode=SearchMode.HYBRID, top_k=100, exact=True),
    ]
    if not args.skip_train:
        compare(zero_shot, load_judgments(hd / "judgments-train.parquet"), "train", cli_modes)
    compare(zero_shot, dev, "dev", cli_modes)
    time_correction(zero_shot, dev)
    if args.ablation:
        ablation_modes = [
            SearchOptions(mode=SearchMode.DENSE, top_k=100, exact=True),
            SearchOptions(mode=SearchMode.HYBRID, fusion=FusionMethod.DBSF, top_k=100, exact=True),
        ]
        for collection in sorted((args.ablation / "collections").iterdir()):
            if collection.name == "zero-shot":
                continue
            system = Target(collection.name, collection, args.ablation / "models" / collection.name)
            compare(system, dev, "dev", ablation_modes)


if __name__ == "__main__":
    main()
