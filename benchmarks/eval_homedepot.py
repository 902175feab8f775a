"""Reproduce the design-time Home Depot dev baselines with `shopsearch eval`, end to end.

Exports all-MiniLM-L6-v2 (unless --model-dir), ingests the 54,667 product titles into an
embedded collection (product text = the title), then runs the CLI exactly as a user would:

    shopsearch eval -j judgments-dev.parquet --mode bm25 --mode dense --exact ...

and prints full-corpus nDCG@10 / Recall@100 (relevance >= 2.5) and re-rank nDCG@10 /
order accuracy (gap 0.5) next to the baselines, plus the BM25-vs-dense p-values. It takes
minutes (encoding the catalog dominates); it is a benchmark, not a test.

    python benchmarks/eval_homedepot.py [--data ../shared/data] [--work DIR] [--hnsw]
        [--report report.html]

--work keeps the collection between runs (ingest is skipped when it is already there).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
COLLECTION = "homedepot"
BASELINES = {"bm25": (0.387, 0.768), "dense": (0.261, 0.677)}  # nDCG@10 / R@100 (docs/DESIGN.md)


def cli(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=capture, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"shopsearch {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout or ""


def ensure_collection(hd: Path, work: Path, model_dir: Path | None) -> list[str]:
    """The Home Depot titles in an embedded collection under `work` (kept between runs);
    returns the CLI flags that name it and its model."""
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir or work / "model"
    if not (model / "manifest.json").is_file():
        cli("model", "export", "--out", str(model))
    where = ["--collection", COLLECTION, "--path", str(work / "data"), "--model", str(model)]
    if not (work / "data" / COLLECTION).exists():
        t0 = time.perf_counter()
        summary = json.loads(
            cli(
                "ingest",
                str(hd / "products.parquet"),
                "--map",
                "id=product_uid",
                "--rejects",
                str(work / "rejects.jsonl"),
                "--json",
                *where,
            )
        )
        print(
            f"ingested {summary['upserted']} products in {time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    return where


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None, help="keep model + collection here")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--hnsw", action="store_true", help="also evaluate dense with HNSW")
    parser.add_argument("--report", type=Path, default=None, help="write the HTML report")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="shopsearch-homedepot-"))
    hd = args.data / "homedepot"
    where = ensure_collection(hd, work, args.model_dir)
    modes = ["--mode", "bm25", "--mode", "dense"]
    report = ["--report", str(args.report)] if args.report else []
    t0 = time.perf_counter()
    doc = json.loads(
        cli(
            "eval",
            "-j",
            str(hd / "judgments-dev.parquet"),
            *modes,
            "--exact",
            "--json",
            *report,
            *where,
        )
    )
    elapsed = time.perf_counter() - t0
    runs = [("bm25", "bm25", doc), ("dense", "dense (exact)", doc)]
    if args.hnsw:
        hnsw = json.loads(
            cli(
                "eval", "-j", str(hd / "judgments-dev.parquet"), "--mode", "dense", "--json", *where
            )
        )
        runs.append(("dense", "dense (HNSW)", hnsw))

    def cell(d: dict, mode: str, system: str, metric: str) -> dict:
        for row in d["results"][mode]:
            if row["label"] == "all queries" and row["system"] == system:
                return row["metrics"][metric]
        raise KeyError(system)

    print(
        f"Home Depot dev: {doc['queries']} queries; grades {doc['grades']}; eval {elapsed:.0f} s\n"
    )
    print(
        "| system | nDCG@10 full | baseline | Recall@100 | baseline | MRR | "
        "nDCG@10 rerank | OrderAcc rerank |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for system, label, d in runs:
        base = BASELINES[system]
        f = [cell(d, "full", system, m)["mean"] for m in ("nDCG@10", "Recall@100", "MRR")]
        r = [cell(d, "rerank", system, m)["mean"] for m in ("nDCG@10", "OrderAcc")]
        print(
            f"| {label} | {f[0]:.3f} | {base[0]:.3f} | {f[1]:.3f} | {base[1]:.3f} | "
            f"{f[2]:.3f} | {r[0]:.3f} | {r[1]:.3f} |"
        )
    print("\ndense (exact) vs bm25, paired over queries:\n")
    print("| mode | metric | Δ | 95% CI | p |")
    print("|---|---|---|---|---|")
    for mode in ("full", "rerank"):
        for metric in ("nDCG@10", "Recall@100", "MRR", "OrderAcc"):
            c = cell(doc, mode, "dense", metric)
            print(
                f"| {mode} | {metric} | {c['delta']:+.3f} | "
                f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {c['p_value']:.4g} |"
            )


if __name__ == "__main__":
    main()
