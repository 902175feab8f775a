"""Evaluate BM25, dense and hybrid search on a shop's dev judgments with `shopsearch eval`.

One script for both benchmark shops (`--shop`, default homedepot; `eval_crowdflower.py` is
this script with `--shop crowdflower`). It exports all-MiniLM-L6-v2 (unless --model-dir),
ingests the shop's catalog into an embedded collection under --work, then runs the CLI
exactly as a user would:

    shopsearch eval -j judgments-dev.parquet --mode bm25 --mode dense --mode hybrid --exact

and prints full-corpus nDCG@10 / Recall@100 / MRR and re-rank nDCG@10 / order accuracy per
system, the paired comparisons (each against BM25, and hybrid against dense), and nDCG@10
per stratum (query length, lexical match, typo correction): where semantic search helps
and where it hurts. It takes minutes (encoding the catalog dominates); it is a benchmark,
not a test.

- homedepot: 54,667 product titles (`product_uid`), dev 1,226 queries; ratings are means
  of 1..3: gain (r-1)/2, relevant r >= 2.5. The design-time baselines are printed beside.
- crowdflower: 9,913 products with descriptions (product text = title + description),
  dev 124 queries; ratings are medians of 1..4 (x.5 where judged twice): gain (r-1)/3,
  relevant r >= 3. Evaluation only: nothing is fit, tuned or chosen on it here.

    python benchmarks/eval_homedepot.py [--shop homedepot|crowdflower] [--data DIR]
        [--work DIR] [--hnsw] [--report report.html]

--work keeps the model and collection between runs (ingest is skipped when the collection
is already there); both shops can share one work directory.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@dataclass(frozen=True)
class Shop:
    name: str
    title: str
    collection: str
    ingest_flags: tuple[str, ...]  # how its catalog maps onto shopsearch's fields and text
    grades: str  # the protocol's rating scale, given rather than detected
    baselines: dict[str, tuple[float, float]]  # system -> design-time nDCG@10, Recall@100


SHOPS = {
    "homedepot": Shop(
        "homedepot",
        "Home Depot dev",
        "homedepot",
        ("--map", "id=product_uid"),
        "1..3",
        {"bm25": (0.387, 0.768), "dense": (0.261, 0.677)},  # docs/DESIGN.md
    ),
    "crowdflower": Shop(
        "crowdflower",
        "CrowdFlower dev",
        "crowdflower",
        ("--template", "{title}|{description}"),
        "1..4",
        {},
    ),
}
COLLECTION = SHOPS["homedepot"].collection  # kept for the scripts that share its collection


def cli(*args: str, capture: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args], capture_output=capture, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"shopsearch {' '.join(args)} failed:\n{proc.stderr}")
    if proc.stderr and "warning" in proc.stderr:
        print(proc.stderr, file=sys.stderr, end="")
    return proc.stdout or ""


def ensure_shop_collection(shop: Shop, data: Path, work: Path, model_dir: Path | None) -> list[str]:
    """The shop's catalog in an embedded collection under `work` (kept between runs);
    returns the CLI flags that name it and its model."""
    work.mkdir(parents=True, exist_ok=True)
    model = model_dir or work / "model"
    if not (model / "manifest.json").is_file():
        cli("model", "export", "--out", str(model))
    where = ["--collection", shop.collection, "--path", str(work / "data"), "--model", str(model)]
    if not (work / "data" / shop.collection).exists():
        t0 = time.perf_counter()
        summary = json.loads(
            cli(
                "ingest",
                str(data / "products.parquet"),
                *shop.ingest_flags,
                "--rejects",
                str(work / f"rejects-{shop.name}.jsonl"),
                "--json",
                *where,
            )
        )
        print(
            f"ingested {summary['upserted']} {shop.name} products in "
            f"{time.perf_counter() - t0:.0f} s",
            file=sys.stderr,
        )
    return where


def ensure_collection(hd: Path, work: Path, model_dir: Path | None) -> list[str]:
    """The Home Depot collection (bm25_params.py and typo_tolerance.py share it)."""
    return ensure_shop_collection(SHOPS["homedepot"], hd, work, model_dir)


def cell(doc: dict, mode: str, system: str, metric: str, group=("all", "all queries")) -> dict:
    for row in doc["results"][mode]:
        if (row["stratum"], row["label"]) == group and row["system"] == system:
            return row["metrics"][metric]
    raise KeyError((system, group))


def _p(p: float | None) -> str:
    return "–" if p is None else ("< 0.001" if p < 1e-3 else f"{p:.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shop", choices=sorted(SHOPS), default="homedepot")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=None, help="keep model + collection here")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--hnsw", action="store_true", help="also evaluate dense with HNSW")
    parser.add_argument("--report", type=Path, default=None, help="write the HTML report")
    args = parser.parse_args(argv)
    shop = SHOPS[args.shop]
    work = args.work or Path(tempfile.mkdtemp(prefix=f"shopsearch-{shop.name}-"))
    data = args.data / shop.name
    judgments = str(data / "judgments-dev.parquet")
    where = ensure_shop_collection(shop, data, work, args.model_dir)
    runs_dir = work / f"runs-{shop.name}"
    report = ["--report", str(args.report)] if args.report else []

    def evaluated(*flags: str) -> dict:
        """`shopsearch eval --json` on the shop's dev judgments and grade scale."""
        return json.loads(cli("eval", "-j", judgments, "--grades", shop.grades, "--json", *flags))

    t0 = time.perf_counter()
    doc = evaluated(
        *("--mode", "bm25", "--mode", "dense", "--mode", "hybrid"),
        *("--exact", "--save-runs", str(runs_dir)),
        *report,
        *where,
    )
    elapsed = time.perf_counter() - t0
    names = [s["name"] for s in doc["systems"]]  # bm25, dense, the hybrid (named by fusion)
    hybrid = names[2]
    rows = [(name, name if name != "dense" else "dense (exact)", doc) for name in names]
    if args.hnsw:
        rows.append(("dense", "dense (HNSW)", evaluated("--mode", "dense", *where)))
    # hybrid against dense, from the saved runs (full corpus): no second search
    versus_dense = evaluated(
        *("--run", f"dense={runs_dir / 'dense.jsonl'}"),
        *("--run", f"{hybrid}={runs_dir / f'{hybrid}.jsonl'}"),
    )

    print(
        f"{shop.title}: {doc['queries']} queries; grades {doc['grades']}; "
        f"collection coverage {doc['collection_coverage']:.1%}; eval {elapsed:.0f} s\n"
    )
    # The design-time baselines, where the shop has them, beside the two full-corpus metrics.
    design = bool(shop.baselines)
    head = ["system", "nDCG@10 full", "Recall@100", "MRR", "nDCG@10 rerank", "OrderAcc rerank"]
    if design:
        head[2:2] = ["design baseline"]
        head[4:4] = ["design baseline"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for system, label, d in rows:
        values = [cell(d, "full", system, m)["mean"] for m in ("nDCG@10", "Recall@100", "MRR")]
        values += [cell(d, "rerank", system, m)["mean"] for m in ("nDCG@10", "OrderAcc")]
        shown = [f"{v:.3f}" for v in values]
        if design:
            base = shop.baselines.get(system)
            shown[1:1] = [f"{base[0]:.3f}" if base else "–"]
            shown[3:3] = [f"{base[1]:.3f}" if base else "–"]
        print(f"| {label} | " + " | ".join(shown) + " |")
    print("\nPaired over queries (95% CI: the randomisation test inverted; p: that test):\n")
    print("| comparison | mode | metric | Δ | 95% CI | p |")
    print("|---|---|---|---|---|---|")
    pairs = [(f"{s} vs bm25", doc, s) for s in names[1:]]
    pairs.append((f"{hybrid} vs dense", versus_dense, hybrid))
    for label, d, system in pairs:
        for mode in ("full", "rerank") if d is doc else ("full",):
            for metric in ("nDCG@10", "Recall@100", "MRR", "OrderAcc"):
                c = cell(d, mode, system, metric)
                print(
                    f"| {label} | {mode} | {metric} | {c['delta']:+.3f} | "
                    f"[{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] | {_p(c['p_value'])} |"
                )
    print("\nFull-corpus nDCG@10 per stratum (Δ against bm25, p):\n")
    print("| stratum | queries | bm25 | " + " | ".join(names[1:]) + " |")
    print("|---|---|---|" + "---|" * len(names[1:]))
    groups = [("all", "all queries")] + [
        (r["stratum"], r["label"])
        for r in doc["results"]["full"]
        if r["system"] == "bm25" and r["stratum"] != "all"
    ]
    for group in groups:
        base = cell(doc, "full", "bm25", "nDCG@10", group)
        cells = []
        for s in names[1:]:
            c = cell(doc, "full", s, "nDCG@10", group)
            if c["n"] and c.get("delta") is not None:
                mark = "*" if c["p_value"] < 0.05 else ""
                cells.append(f"{c['mean']:.3f} ({c['delta']:+.3f}, p {_p(c['p_value'])}){mark}")
            else:
                cells.append("–")
        name = group[1] if group[0] == "all" else f"{group[0]}: {group[1]}"
        mean = "–" if base["mean"] is None else f"{base['mean']:.3f}"
        print(f"| {name} | {base['n']} | {mean} | " + " | ".join(cells) + " |")
    print("\n(*: p < 0.05, where the 95% CI excludes 0)")
    for warning in doc["warnings"]:
        print(f"warning: {warning}", file=sys.stderr)


if __name__ == "__main__":
    main()
