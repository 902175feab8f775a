"""Fit the relevance floor's calibration (shopsearch/search/confidence.py) on Home Depot train.

Each train query is searched as `shopsearch query` searches it by default (hybrid, adaptive
fusion, top 10); each result's evidence (dense cosine, BM25 coverage, raw BM25 score) is read
as the query path reads it (`confidence.read_evidence`); the judged ones are labelled
relevant when their rating is >= 2.5 (`--labels judged`, the default: where the judgments
say nothing there is no label, so the confidence is the probability that a judge calls the
result relevant; `--labels all` counts an unjudged result as not relevant, the full-corpus
convention, which on Home Depot's sparse judgments caps every confidence near 0.4).
A logistic regression (numpy, Newton's method, a small L2 penalty) fit on those labels is
written as the package's prior (`--out`, by default shopsearch/search/confidence_prior.json)
with its model card.

It then reports, on Home Depot dev (never fit on), the reliability diagram's figures (bins of
predicted confidence against the share of relevant results, with counts), the log loss,
Brier score and expected calibration error, and precision and recall at the default cut
(`DEFAULT_MIN_CONFIDENCE`): precision is the share relevant among the results the cut keeps,
recall the share of the relevant results of the top 10 it keeps. CrowdFlower dev (relevant:
rating >= 3) is evaluated the same way and chooses nothing. Last, what the evidence costs a
query: the median time of a one-query search with and without `confidence`.

    python benchmarks/fit_confidence.py [--data DIR] [--work DIR] [--model-dir DIR]
        [--train-queries N] [--dev-queries N] [--out FILE] [--no-write]

--work holds the model and the collections as eval_homedepot.py keeps them (ingested there
when missing: minutes for Home Depot's 54,667 products); --train-queries samples the train
queries (seeded), for a quicker fit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_homedepot import DEFAULT_DATA, SHOPS, ensure_shop_collection

from shopsearch.encoders import OnnxEncoder
from shopsearch.evaluation.confidence_fit import L2, calibration_of, fit_logistic, sampled
from shopsearch.evaluation.confidence_fit import labelled as labelled_results
from shopsearch.evaluation.judgments import load_judgments
from shopsearch.search.confidence import (
    DEFAULT_MIN_CONFIDENCE,
    FEATURES,
    PRIOR_FILE,
    ConfidenceModel,
)
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.connection import Connection


def labelled(
    search: ProductSearch,
    path: Path,
    limit: int | None,
    seed: int,
    judged_only: bool,
    features: tuple[str, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features, labels and query index of each top-10 result of the default search (those
    judged, with `judged_only`): `evaluation.confidence_fit.labelled`, as `fusion fit
    --confidence` reads them; the judgments' default relevance (2.5 on Home Depot's 1..3,
    3 on CrowdFlower's 1..4)."""
    judged = sampled(load_judgments(path), limit, seed)
    done = 0

    def progress(n: int) -> None:
        nonlocal done
        done += n
        print(f"  {path.parent.name}: {done}/{len(judged.queries)} queries", file=sys.stderr)

    data = labelled_results(search, judged, SearchOptions(), features, judged_only, progress)
    return data.x, data.y, data.q


def assess(
    p: np.ndarray, y: np.ndarray, q: np.ndarray, cut: float = DEFAULT_MIN_CONFIDENCE
) -> dict:
    """Reliability bins, ECE, precision and recall at `cut` (`evaluation.calibration`, as
    the eval report draws them), log loss and Brier."""
    eps = 1e-12
    cal = calibration_of("default", p, y, q, cut)
    at = cal.at(cut)
    return {
        "results": len(p),
        "relevant_share": float(y.mean()),
        "log_loss": float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps))),
        "brier": float(np.mean((p - y) ** 2)),
        "ece": cal.ece,
        "cut": cut,
        "kept": at["kept"],
        "precision": at["precision"],
        "recall": at["recall"],
        "no_confident_match": at["no_confident_match"],
        "bins": cal.bins(),
    }


def best_cut(p: np.ndarray, y: np.ndarray) -> float:
    """The cut (a multiple of 0.01) whose precision and recall have the best F1."""
    best, chosen = -1.0, 0.5
    for cut in np.arange(0.01, 1.0, 0.01):
        kept = p >= cut
        if not kept.any():
            break
        precision = y[kept].mean()
        recall = (kept & (y == 1)).sum() / max((y == 1).sum(), 1)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        if f1 > best:
            best, chosen = f1, round(float(cut), 2)
    return chosen


def show(title: str, report: dict, queries: np.ndarray) -> None:
    print(f"\n{title}: {report['results']} results of {len(set(queries.tolist()))} queries, "
          f"{report['relevant_share']:.1%} relevant")  # fmt: skip
    print(f"log loss {report['log_loss']:.4f}, Brier {report['brier']:.4f}, "
          f"ECE {report['ece']:.4f}")  # fmt: skip
    print("\n| predicted | results | mean predicted | observed relevant |")
    print("|---|---|---|---|")
    for b in report["bins"]:
        print(f"| {b['low']:.1f}-{b['high']:.1f} | {b['results']} | {b['predicted']:.3f} | "
              f"{b['observed']:.3f} |")  # fmt: skip
    precision = "–" if report["precision"] is None else f"{report['precision']:.3f}"
    recall = "–" if report["recall"] is None else f"{report['recall']:.3f}"
    none, firsts = report["no_confident_match"], set(queries.tolist())
    print(f"\nat the default cut {report['cut']}: kept {report['kept']}/{report['results']}, "
          f"precision {precision} (all top 10: {report['relevant_share']:.3f}), "
          f"recall {recall}; no_confident_match on {none}/{len(firsts)} queries")  # fmt: skip


def timing(search: ProductSearch, texts: list[str]) -> tuple[float, float]:
    """Median ms of a one-query search, without and with the confidences (encoded already)."""
    plain, scored = SearchOptions(), SearchOptions(confidence=True)
    ms: dict[bool, list[float]] = {False: [], True: []}
    for text in texts:
        query = search.prepare(Query(text), plain)
        search.search(query, plain)  # the query's vector cached, the shard warm
        for with_confidence, options in ((False, plain), (True, scored)):
            t0 = time.perf_counter()
            search.search(query, options)
            ms[with_confidence].append((time.perf_counter() - t0) * 1000)
    return statistics.median(ms[False]), statistics.median(ms[True])


def opened(shop: str, data: Path, work: Path, model_dir: Path | None) -> ProductSearch:
    where = ensure_shop_collection(SHOPS[shop], data / shop, work, model_dir)
    flags = dict(zip(where[::2], where[1::2], strict=True))
    backend = Connection(collection=flags["--collection"], path=Path(flags["--path"])).open()
    encoder = OnnxEncoder.load(Path(flags["--model"]), precision="int8")
    return ProductSearch(backend, encoder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None, help="model + collections here")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--train-queries", type=int, default=None, help="a sample (seeded)")
    parser.add_argument("--dev-queries", type=int, default=None, help="a sample (seeded)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-crowdflower", action="store_true")
    parser.add_argument(
        "--out", type=Path, default=None, help=f"default: the package's {PRIOR_FILE}"
    )
    parser.add_argument("--no-write", action="store_true", help="report, write nothing")
    parser.add_argument("--dump", type=Path, default=None, help="save the features (.npz)")
    parser.add_argument(
        "--features", default="cosine,coverage", help=f"some of {','.join(FEATURES)}"
    )
    parser.add_argument(
        "--labels",
        choices=("judged", "all"),
        default="judged",
        help="judged: the judged results alone; all: every result, an unjudged one not "
        "relevant [judged]",
    )
    args = parser.parse_args(argv)
    judged_only = args.labels == "judged"
    work = args.work or Path(tempfile.mkdtemp(prefix="shopsearch-confidence-"))
    hd = args.data / "homedepot"

    names = tuple(args.features.split(","))
    if not set(names) <= set(FEATURES):
        parser.error(f"--features: some of {','.join(FEATURES)}")
    search = opened("homedepot", args.data, work, args.model_dir)
    x, y, q = labelled(search, hd / "judgments-train.parquet", args.train_queries, args.seed,
                       judged_only, names)  # fmt: skip
    intercept, weights = fit_logistic(x, y)
    train_p = 1.0 / (1.0 + np.exp(-(intercept + x @ weights)))
    dx, dy, dq = labelled(search, hd / "judgments-dev.parquet", args.dev_queries, args.seed,
                          judged_only, names)  # fmt: skip
    dev_p = 1.0 / (1.0 + np.exp(-(intercept + dx @ weights)))
    dumped = {"x": x, "y": y, "q": q, "dx": dx, "dy": dy, "dq": dq}
    dev = assess(dev_p, dy, dq)
    dev_judged = load_judgments(hd / "judgments-dev.parquet").queries.values()
    dev_texts = sorted({j.text for j in dev_judged})
    base_ms, with_ms = timing(search, random.Random(args.seed).sample(dev_texts, 200))
    encoder_name = search.meta.encoder.name
    search.backend.close()

    print(f"fit on {len(set(q.tolist()))} Home Depot train queries, {len(y)} results "
          f"({y.mean():.1%} relevant)")  # fmt: skip
    coefficients = ", ".join(f"{n} {w:+.4f}" for n, w in zip(names, weights, strict=True))
    print(f"intercept {intercept:+.4f}, {coefficients}")
    print(f"the cut of the best F1 on train: {best_cut(train_p, y):.2f} "
          f"(DEFAULT_MIN_CONFIDENCE: {DEFAULT_MIN_CONFIDENCE})")  # fmt: skip
    show("Home Depot train (fit)", assess(train_p, y, q), q)
    show("Home Depot dev (held out)", dev, dq)
    cf = None
    if not args.no_crowdflower:
        cf_search = opened("crowdflower", args.data, work, args.model_dir)
        cf_judgments = args.data / "crowdflower" / "judgments-dev.parquet"
        cx, cy, cq = labelled(cf_search, cf_judgments, None, args.seed, judged_only, names)
        cf_search.backend.close()
        cf_p = 1.0 / (1.0 + np.exp(-(intercept + cx @ weights)))
        dumped.update(cx=cx, cy=cy, cq=cq)
        cf = assess(cf_p, cy, cq)
        show("CrowdFlower dev (evaluation only)", cf, cq)
    print(f"\nper query: {base_ms:.2f} ms without the confidences, {with_ms:.2f} ms with "
          f"(+{with_ms - base_ms:.2f} ms; median of 200 one-query searches, encoded)")  # fmt: skip

    if args.dump is not None:
        np.savez(args.dump, **dumped)

    def summary(r: dict) -> dict:
        keep = ("results", "relevant_share", "log_loss", "brier", "ece", "precision", "recall")
        return {k: round(r[k], 4) if isinstance(r[k], float) else r[k] for k in keep}

    card = {
        "fit_on": "Home Depot train judgments: the top 10 of the default search (hybrid, "
        "adaptive fusion) per query, "
        + (
            "the judged results alone; relevant: rating >= 2.5"
            if judged_only
            else "relevant: rating >= 2.5, an unjudged product not relevant"
        ),
        "train_queries": len(set(q.tolist())),
        "train_results": len(y),
        "encoder": encoder_name,
        "features": "those named in `features` of: cosine, the dense cosine with the query; "
        "coverage, the share of the query's BM25 "
        "terms held; log1p_bm25, log(1 + the raw BM25 score)",
        "method": f"logistic regression, Newton's method, L2 {L2}",
        "date": datetime.date.today().isoformat(),
        "held_out": {
            "homedepot_dev": summary(dev),
            **({"crowdflower_dev": summary(cf)} if cf else {}),
        },
        "script": "benchmarks/fit_confidence.py",
    }
    card["default_cut_chosen_on"] = "Home Depot train: the cut of the best F1"
    model = ConfidenceModel(intercept, tuple(float(w) for w in weights), card, names)
    if not args.no_write:
        out = args.out or Path(__file__).resolve().parents[1] / "shopsearch" / "search" / PRIOR_FILE
        out.write_text(json.dumps(model.to_dict(), indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
