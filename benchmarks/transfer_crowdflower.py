"""What the paper's two stages buy on a shop they never saw: the training ablation on CrowdFlower.

The five systems of `train_homedepot.py` (zero-shot, MNRL, stage 1, stage 1 + CoSENT, stage 1
+ ROAR), each trained on Home Depot's train judgments only, are evaluated zero-shot on
CrowdFlower's dev half: its 9,913 products (title and description) ingested into one Edge
collection per system, then `shopsearch eval` as a user runs it, dense (exact) and the
default hybrid. CrowdFlower's 1..4 grades (medians; 99.7% whole) give the graded ordering
that ROAR is built for, so beside full-corpus nDCG@10 and Recall@100 the table has re-rank
order accuracy per grade pair (4>3, 3>2, 2>1, 4>1: each query's judged products ranked by
the system). Paired comparisons over the 124 queries (95% CI: the randomisation test
inverted; p: that test): each system against zero-shot, stage 1 against MNRL, ROAR against
stage 1 and against CoSENT. Nothing here is fit, tuned or chosen: CrowdFlower only
evaluates.

Every system encodes at one maximum length (`--max-length`, default 256, the shipped
model's), whatever it was trained at (32 tokens on Home Depot's titles): a CrowdFlower
product text is title and description, and a model cut to 32 tokens there would be scored
on a text it is never deployed on. The exported models are copied with only that number
changed.

    python benchmarks/transfer_crowdflower.py [--run-dir DIR] [--data DIR] [--work DIR]
        [--max-length 256] [--systems S ...]

--run-dir is `train_homedepot.py`'s run directory (the newest under its default --work when
not given); its int8 or fp32 exports under `<precision>/models/<system>` are the models.
Prints the tables (markdown) and writes transfer.md / transfer.json in --work. About 2-4
minutes a system on the 2-core CPU (encoding the catalog), after the training run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from eval_homedepot import DEFAULT_DATA, SHOPS, cli, ensure_shop_collection

from shopsearch.evaluation.evaluate import ALL, System, evaluate
from shopsearch.evaluation.judgments import load_judgments
from shopsearch.evaluation.runs import read_run

SYSTEMS = ("zero-shot", "mnrl", "stage1", "stage1-cosent", "stage1-roar")
LABELS = {
    "zero-shot": "zero-shot",
    "mnrl": "MNRL",
    "stage1": "stage 1 (FN mask)",
    "stage1-cosent": "stage 1 + CoSENT",
    "stage1-roar": "stage 1 + ROAR",
}
MODES = {"dense": "dense", "hybrid": None}  # eval mode -> system name (hybrid: by fusion)
PAIRS = ("4>3", "3>2", "2>1", "4>1")
COMPARISONS = (
    ("mnrl", "stage1"),
    ("stage1", "stage1-cosent"),
    ("stage1", "stage1-roar"),
    ("stage1-cosent", "stage1-roar"),
)
DEFAULT_TRAIN_WORK = Path("/tmp/shopsearch-bench/train-homedepot")


def newest_run(work: Path) -> Path:
    runs = [p.parent.parent.parent for p in work.glob("*/*/models/stage1-roar/manifest.json")]
    if not runs:
        raise SystemExit(f"no train_homedepot.py run with exported models under {work}")
    return max(runs, key=lambda p: p.stat().st_mtime)


def model_at_length(source: Path, out: Path, max_length: int) -> Path:
    """A copy of the exported model `source` that encodes up to `max_length` tokens."""
    if not (out / "manifest.json").is_file():
        staging = out.with_name(out.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(source, staging)
        manifest = json.loads((staging / "manifest.json").read_text())
        manifest["max_seq_length"] = max_length
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        staging.rename(out)
    return out


def evaluated(system: str, model: Path, data: Path, work: Path) -> dict[str, Any]:
    """Ingest (once) and evaluate one system; its eval JSON with the saved runs' stems."""
    shop = SHOPS["crowdflower"]
    record = work / "eval.json"
    if record.is_file():
        return json.loads(record.read_text())
    t0 = time.perf_counter()
    where = ensure_shop_collection(shop, data, work, model)
    ingest_s = time.perf_counter() - t0
    runs = work / "runs"
    t0 = time.perf_counter()
    doc = json.loads(
        cli(
            *("eval", "-j", str(data / "judgments-dev.parquet"), "--grades", shop.grades),
            *("--mode", "dense", "--mode", "hybrid", "--exact"),
            *("--save-runs", str(runs), "--json"),
            *where,
        )
    )
    names = [s["name"] for s in doc["systems"]]
    out = {
        "system": system,
        "ingest_s": ingest_s,
        "eval_s": time.perf_counter() - t0,
        "names": dict(zip(MODES, names, strict=True)),
        "runs": str(runs),
        "doc": doc,
    }
    record.write_text(json.dumps(out, indent=2) + "\n")
    return out


def cell(doc: dict[str, Any], mode: str, system: str, metric: str) -> float:
    for row in doc["results"][mode]:
        if row["stratum"] == ALL[0] and row["system"] == system:
            return row["metrics"][metric]["mean"]
    raise KeyError((mode, system, metric))


def compared(
    judgments: Any, results: dict[str, dict[str, Any]], mode: str, base: str, other: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """`other` against `base` in eval mode `mode`, paired over queries, from the saved runs:
    {full|rerank: {metric: comparison}}."""
    systems = []
    for name in (base, other):
        run = Path(results[name]["runs"]) / results[name]["names"][mode]
        systems.append(
            System(
                name,
                read_run(run.with_suffix(".jsonl")),
                read_run(run.with_suffix(".rerank.jsonl")),
                source=name,
            )
        )
    ev = evaluate(judgments, systems)
    return {
        m: {metric: c.to_dict() for metric, c in ev.comparisons[m][other][ALL].items()}
        for m in ("full", "rerank")
    }


def _ci(c: dict[str, Any]) -> str:
    if c.get("delta") is None or c["delta"] != c["delta"]:
        return "–"
    p = c["p_value"]
    shown = "< 0.001" if p < 1e-3 else f"{p:.3f}"
    return f"{c['delta']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] p {shown}"


def render(doc: dict[str, Any]) -> str:
    lines = [
        f"CrowdFlower dev, {doc['queries']} queries, {doc['products']} products; models trained "
        f"on Home Depot train ({doc['run_dir']}), encoding up to {doc['max_length']} tokens; "
        f"{doc['wall_s'] / 60:.1f} min.",
        "",
        "| system | mode | full nDCG@10 | Recall@100 | re-rank nDCG@10 | OrderAcc | "
        + " | ".join(f"OrderAcc {p}" for p in PAIRS)
        + " |",
        "|---" * (6 + len(PAIRS)) + "|",
    ]
    for row in doc["rows"]:
        values = [row[k] for k in ("ndcg_full", "recall_full", "ndcg_rerank", "orderacc")]
        values += [row[f"orderacc {p}"] for p in PAIRS]
        lines.append(
            f"| {LABELS[row['system']]} | {row['mode']} | "
            + " | ".join(f"{v:.3f}" for v in values)
            + " |"
        )
    lines += [
        "",
        "Paired over queries (Δ [95% CI] p):",
        "",
        "| comparison | mode | full nDCG@10 | Recall@100 | re-rank OrderAcc | "
        + " | ".join(f"OrderAcc {p}" for p in PAIRS)
        + " |",
        "|---" * (5 + len(PAIRS)) + "|",
    ]
    for c in doc["comparisons"]:
        cells = [
            _ci(c["full"]["nDCG@10"]),
            _ci(c["full"]["Recall@100"]),
            _ci(c["rerank"]["OrderAcc"]),
        ]
        cells += [_ci(c["rerank"][f"OrderAcc[{p}]"]) for p in PAIRS]
        lines.append(
            f"| {LABELS[c['other']]} vs {LABELS[c['base']]} | {c['mode']} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench/transfer-cf"))
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    args = parser.parse_args()
    start = time.perf_counter()
    run_dir = (args.run_dir or newest_run(DEFAULT_TRAIN_WORK)).absolute()
    exports = next(run_dir / p / "models" for p in ("int8", "fp32") if (run_dir / p).is_dir())
    data = args.data / "crowdflower"
    work = args.work.absolute() / f"{run_dir.name}-l{args.max_length}"
    results: dict[str, dict[str, Any]] = {}
    rows = []
    for system in (s for s in SYSTEMS if s in args.systems):
        print(f"{system}: ingesting and evaluating", flush=True)
        model = model_at_length(exports / system, work / "models" / system, args.max_length)
        results[system] = result = evaluated(system, model, data, work / system)
        for mode, name in result["names"].items():
            d = result["doc"]
            row = {
                "system": system,
                "mode": mode,
                "ndcg_full": cell(d, "full", name, "nDCG@10"),
                "recall_full": cell(d, "full", name, "Recall@100"),
                "ndcg_rerank": cell(d, "rerank", name, "nDCG@10"),
                "orderacc": cell(d, "rerank", name, "OrderAcc"),
            }
            row.update({f"orderacc {p}": cell(d, "rerank", name, f"OrderAcc[{p}]") for p in PAIRS})
            rows.append(row)
    judgments = load_judgments(data / "judgments-dev.parquet", rating_range=(1.0, 4.0))
    comparisons = []
    pairs = [("zero-shot", s) for s in results if s != "zero-shot"] + list(COMPARISONS)
    for base, other in pairs:
        if base in results and other in results:
            for mode in MODES:
                comparisons.append(
                    {
                        "base": base,
                        "other": other,
                        "mode": mode,
                        **compared(judgments, results, mode, base, other),
                    }
                )
    first = next(iter(results.values()))["doc"]
    doc = {
        "run_dir": str(run_dir),
        "max_length": args.max_length,
        "queries": first["queries"],
        "products": pq.ParquetFile(data / "products.parquet").metadata.num_rows,
        "rows": rows,
        "comparisons": comparisons,
        "wall_s": time.perf_counter() - start,
    }
    markdown = render(doc)
    print(markdown)
    (work / "transfer.md").write_text(markdown)
    (work / "transfer.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    print(f"wrote {work / 'transfer.md'}")


if __name__ == "__main__":
    main()
