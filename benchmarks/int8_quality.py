"""Is int8 safe? Full-corpus Home Depot dev quality of the int8 encoder against fp32.

Each precision builds its own collection from the 54,667 titles (documents encoded with
that precision) and searches it with queries encoded the same way: the whole int8 path
against the whole fp32 path. Dense retrieval with exact search, so the only difference is the
encoder. `shopsearch eval` then compares the two run files, paired over queries (bootstrap
CI, randomisation p). Target of the performance issue: |nDCG@10 int8 - fp32| <= 0.005.

    python benchmarks/int8_quality.py [--work DIR] [--model-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from bench_catalog import HOMEDEPOT, table

from shopsearch.encoders import default_model_dir


def cli(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"shopsearch {' '.join(args)} failed:\n{proc.stderr}")
    return proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    model = str(args.model_dir or default_model_dir())
    judgments = str(HOMEDEPOT / "judgments-dev.parquet")
    runs = {}
    for precision in ("fp32", "int8"):
        where = [
            "--collection",
            f"homedepot-{precision}",
            "--path",
            str(args.work / "hd"),
            "--model",
            model,
            "--precision",
            precision,
        ]
        if not (args.work / "hd" / f"homedepot-{precision}").exists():
            cli(
                "ingest",
                str(HOMEDEPOT / "products.parquet"),
                "--map",
                "id=product_uid",
                "--rejects",
                str(args.work / "hd-rejects.jsonl"),
                "--json",
                *where,
            )
        out = args.work / f"runs-{precision}"
        cli(
            "eval",
            "-j",
            judgments,
            "--mode",
            "dense",
            "--exact",
            "--no-rerank",
            "--save-runs",
            str(out),
            "--json",
            *where,
        )
        runs[precision] = next(out.glob("*.jsonl"))
    doc = json.loads(
        cli(
            "eval",
            "-j",
            judgments,
            "--run",
            f"fp32={runs['fp32']}",
            "--run",
            f"int8={runs['int8']}",
            "--no-rerank",
            "--json",
        )
    )
    rows = []
    for metric in ("nDCG@10", "Recall@100", "MRR"):
        cells = {
            r["system"]: r["metrics"][metric]
            for r in doc["results"]["full"]
            if r["label"] == "all queries"
        }
        c = cells["int8"]
        ok = abs(c["delta"]) <= 0.005 if metric == "nDCG@10" else None
        rows.append(
            [
                metric,
                f"{cells['fp32']['mean']:.4f}",
                f"{c['mean']:.4f}",
                f"{c['delta']:+.4f}",
                f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
                f"{c['p_value']:.3g}",
                "" if ok is None else ("met" if ok else "MISSED"),
            ]
        )
    print(f"Home Depot dev, {doc['queries']} queries, dense exact search, full corpus\n")
    print(
        table(
            ["metric", "fp32", "int8", "Δ int8-fp32", "95% CI", "p", "target |Δ nDCG@10| <= 0.005"],
            rows,
        )
    )


if __name__ == "__main__":
    main()
