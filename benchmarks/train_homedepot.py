"""Does each training ingredient earn its place? The issue-4 ablation on Home Depot.

Trains on judgments-train and scores on judgments-dev with docs/DESIGN.md's protocol: full-corpus
nDCG@10 and Recall@100 (relevance >= 2.5) over all 54,667 products, and re-ranking each query's
judged products: nDCG@10 and pairwise order accuracy (gap 0.5). Five systems, each dense-only,
fused with BM25 (DBSF), and fused by a learned fusion fit on the train judgments (`shopsearch
fusion fit`, the dense and BM25 candidates ranked by a small model), plus BM25 alone as the
reference row:

    zero-shot      all-MiniLM-L6-v2 as shipped
    mnrl           sentence-transformers' MultipleNegativesRankingLoss on the stage-1 pairs
    stage1         stage 1: FalseNegativeMaskedContrastiveLoss (identity + margin mask)
    stage1-cosent  stage1, then CoSENTLoss on stage 2's graded groups (as level-scored pairs)
    stage1-roar    stage1, then ROAR (shopsearch's stage 2)

Fair by construction: every run goes through shopsearch.training.pipeline with one TrainConfig
(steps per stage, batch size, learning rate, warm-up, seed, max length); the two baselines use
`train_with_loss`, i.e. the same Trainer arguments, on the rows our stages train on: MNRL
reads stage 1's pairs (`stage1_rows`: mined once, whichever arm runs first) and CoSENT
`build_stage2`'s groups. Stage 1 is trained once and is the start of both stage-2
variants. CoSENT sees stage 2's groups flattened to (query, product, level) pairs, batches of
stage2-batch-size x the mean group size, so a step holds as many judgments as a ROAR step.
Each model is exported with `export_model`, the titles ingested into its own Edge collection,
and `shopsearch eval` run as a user would (`--mode dense --exact`, `--mode hybrid --fusion
dbsf`, then `shopsearch fusion fit` and `--mode hybrid --fusion learned`); paired
significance (bootstrap CI, randomisation p) compares stage1-roar with stage1 and
stage1-cosent from the saved runs.

    python benchmarks/train_homedepot.py [--work DIR] [--systems S ...] [--stage1-steps 0]
        [--stage2-steps 200] [--epochs 1] [--batch-size 64] [--max-length 32]
        [--learning-rate 5e-5] [--anchor-weight 0.5] [--margin -0.1|none] [--guide base]
        [--hard-negatives model|bm25|none] [--bf16 auto|on|off] [--int8]
        [--device auto|cpu|cuda] [--quick] [--train-only]

Prints (and writes to ablation.md and ablation.json in DIR/<knobs>/, the run's directory;
ablation-<systems>.md for a --systems subset) the table of systems x modes with
train steps and wall times, the significance table, the acceptance checks of issue 4 (met /
MISSED with the measured value) and the total wall time. --work keeps models, collections and
eval results: a rerun skips what is finished (results are keyed by the training knobs). The
default step counts fit 90 minutes on the 2-core CPU; --quick is a smoke run of minutes
(2 steps per stage, 200 train queries, 100 dev queries over a 2,000-product catalog) whose
numbers mean nothing. A GPU is used for training when present (--device auto), never needed.
Trained encoders keep --max-length at inference (it is saved with them); zero-shot keeps 256.

Measured at the defaults with --int8 on the 2-core CPU, training in bf16 (--bf16 auto, AMX):
40.9 min from an empty work directory on a fast spell (2026-11-23: mining 4.1 min once,
MNRL and stage 1 9.6 min each, CoSENT 5.2, ROAR 3.9); 77.6 min on a slow spell (2026-11-22),
when mining took 4-5.5 min an arm (MNRL and stage 1 each mined; they now share one mining).
A stage-1 or MNRL step, 64 pairs and their 64 mined negatives, takes ~1.5-2.6 s (10-16 min
an arm on a slow spell); ROAR 200 steps of 16 groups and CoSENT 200 steps of ~110 pairs,
4-11 min each; each system's export + int8 ingest of 54,667 titles (HNSW included) + eval,
1.5-4 min. Without mined negatives and at m = 0.05 (the defaults before) it took 38.9 min
in bf16 and 78 min in fp32. RESULTS.md section 6 has the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any

from bench_catalog import HOMEDEPOT, run_shopsearch, table

from shopsearch.encoders.resolve import resolve_base_model
from shopsearch.evaluation.evaluate import ALL, System, evaluate
from shopsearch.evaluation.judgments import load_judgments as load_dev_judgments
from shopsearch.evaluation.runs import read_run
from shopsearch.training.data import (
    Judgments,
    build_stage2,
    load_judgments,
    load_product_texts,
    parse_grade_map,
)
from shopsearch.training.export import export_model
from shopsearch.training.pipeline import (
    StageResult,
    TrainConfig,
    load_model,
    run_training,
    stage1_rows,
    train_with_loss,
    use_bf16,
)

SYSTEMS = ("zero-shot", "mnrl", "stage1", "stage1-cosent", "stage1-roar")
# ablation mode -> (the `shopsearch eval` flags, the system name eval gives it). "learned":
# hybrid ranked by the learned fusion `shopsearch fusion fit` fits on the train judgments.
MODES = {
    "dense": (["--mode", "dense"], "dense"),
    "fused": (["--mode", "hybrid", "--fusion", "dbsf"], "hybrid-dbsf"),
    "learned": (["--mode", "hybrid", "--fusion", "learned"], "hybrid-learned"),
}
# Searched in the first `shopsearch eval`; "learned" needs its fit first, and an eval of its own.
FIRST_MODES = ("dense", "fused")
METRICS = (  # (eval mode, metric, column)
    ("full", "nDCG@10", "full nDCG@10"),
    ("full", "Recall@100", "Recall@100"),
    ("rerank", "nDCG@10", "re-rank nDCG@10"),
    ("rerank", "OrderAcc", "OrderAcc"),
)
PRODUCT_ID = "product_uid"
# Together under 90 minutes on the 2-core CPU: see the measured runtime in the module docstring.
DEFAULT_STAGE1_STEPS = 0  # one epoch of the 24,002 pairs: 376 steps of 64
# Of 425 a stage-2 epoch (6,787 groups of 16 queries). A full epoch doubles ROAR and CoSENT
# time and measured no better (RESULTS.md section 6, sixteenth session).
DEFAULT_STAGE2_STEPS = 200
TIME_LIMIT_S = 90 * 60
QUICK_STEPS, QUICK_TRAIN_QUERIES, QUICK_DEV_QUERIES, QUICK_PRODUCTS = 2, 200, 100, 2000
# The design-time baselines (docs/DESIGN.md), Home Depot dev, full corpus: (nDCG@10, Recall@100)
DESIGN_BASELINES = [
    ("BM25", 0.387, 0.768),
    ("all-MiniLM-L6-v2 zero-shot", 0.261, 0.677),
    ("plain MNRL, 1 epoch", 0.341, 0.771),
    ("plain MNRL, 1 epoch + BM25 (DBSF)", 0.393, 0.810),
]
START = time.perf_counter()


def log(message: str) -> None:
    minutes, seconds = divmod(round(time.perf_counter() - START), 60)
    print(f"[{minutes:3d}:{seconds:02d}] {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Inputs:
    train_judgments: Path
    dev_judgments: Path
    products: Path  # the catalog the training texts come from
    eval_products: Path  # the catalog each system's collection holds


def quick_inputs(out: Path) -> Inputs:
    """--quick: the first 200 train and 100 dev queries (by id), and a 2,000-product catalog
    holding every product those dev queries judged (the rest a seeded sample)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    inputs = Inputs(
        out / "judgments-train.parquet",
        out / "judgments-dev.parquet",
        HOMEDEPOT / "products.parquet",
        out / "products.parquet",
    )
    if inputs.eval_products.is_file():
        return inputs
    out.mkdir(parents=True, exist_ok=True)

    def keep(t: pa.Table, column: str, values: list[Any]) -> pa.Table:
        return t.filter(pc.is_in(t[column], pa.array(values, t.schema.field(column).type)))

    for name, n in (("judgments-train", QUICK_TRAIN_QUERIES), ("judgments-dev", QUICK_DEV_QUERIES)):
        judged = pq.read_table(HOMEDEPOT / f"{name}.parquet")
        first = sorted(set(judged["query_id"].to_pylist()))[:n]
        pq.write_table(keep(judged, "query_id", first), out / f"{name}.parquet")
    wanted = set(pq.read_table(inputs.dev_judgments)[PRODUCT_ID].to_pylist())
    catalog = pq.read_table(HOMEDEPOT / "products.parquet")
    others = sorted(set(catalog[PRODUCT_ID].to_pylist()) - wanted)
    extra = np.random.default_rng(0).choice(
        others, size=max(QUICK_PRODUCTS - len(wanted), 0), replace=False
    )
    wanted.update(extra.tolist())
    pq.write_table(keep(catalog, PRODUCT_ID, sorted(wanted)), inputs.eval_products)
    return inputs


class Ablation:
    """Trains and evaluates the systems under one work directory, skipping finished work."""

    def __init__(
        self, cfg: TrainConfig, stage2_steps: int | None, inputs: Inputs, run_dir: Path, int8: bool
    ) -> None:
        self.cfg = cfg  # stage 1 (and MNRL)
        self.cfg2 = replace(cfg, max_steps=stage2_steps)  # ROAR and CoSENT
        self.inputs = inputs
        self.train_dir = run_dir / "train"
        self.precision = "int8" if int8 else "fp32"
        self.eval_dir = run_dir / self.precision
        self.collections_dir = self.eval_dir / "collections"
        self.reused: list[str] = []  # steps found finished in --work

    # -- training -------------------------------------------------------------------------
    def stages(self, system: str) -> list[StageResult]:
        """The stages behind `system`, trained now or found finished."""
        if system == "zero-shot":
            return []
        if system == "stage1":
            return [self.stage1]
        if system == "stage1-roar":
            cfg = replace(self.cfg2, stage="2", base_model=str(self.stage1.model_dir))
            return [self.stage1, self._note(self._train(cfg, "stage1-roar"))]
        judgments, texts = self.training_data
        if system == "mnrl":
            from sentence_transformers.sentence_transformer.losses import (
                MultipleNegativesRankingLoss,
            )

            def pairs() -> Any:
                """Stage 1's own rows, mined negatives included: read from stage 1's directory,
                or built (mined with the base model) there for stage 1 to read in turn."""
                rows = stage1_rows(
                    self.cfg,
                    judgments,
                    texts,
                    self.stage1_dir,
                    lambda: load_model(resolve_base_model(self.cfg.base_model), self.cfg),
                    log,
                )
                return rows.remove_columns("label")  # keys for our identity mask; MNRL has none

            result = train_with_loss(
                self.cfg.base_model,
                lambda model: MultipleNegativesRankingLoss(model, scale=1 / self.cfg.temperature),
                pairs,  # built only if MNRL is not already trained in --work
                self.train_dir / "mnrl",
                self.cfg,
                stage=1,
                progress=log,
            )
            return [self._note(result)]
        from sentence_transformers.sentence_transformer.losses import CoSENTLoss

        groups = build_stage2(judgments, texts, self.cfg.max_candidates, seed=self.cfg.seed)
        pairs, mean_group = cosent_pairs(groups)
        cfg = replace(
            self.cfg2, stage2_batch_size=max(2, round(self.cfg2.stage2_batch_size * mean_group))
        )
        result = train_with_loss(
            str(self.stage1.model_dir),
            lambda model: CoSENTLoss(model, scale=1 / cfg.roar_temperature),
            pairs,
            self.train_dir / "stage1-cosent",
            cfg,
            stage=2,
            progress=log,
        )
        return [self.stage1, self._note(result)]

    @cached_property
    def stage1(self) -> StageResult:
        return self._note(self._train(replace(self.cfg, stage="1"), "stage1"))

    @property
    def stage1_dir(self) -> Path:
        """Where `run_training` keeps stage 1's rows and model for the `stage1` system."""
        return self.train_dir / "stage1" / "stage1"

    @cached_property
    def training_data(self) -> tuple[Judgments, dict[str, str]]:
        """Train judgments and product texts, read exactly as `run_training` reads them."""
        cfg = self.cfg
        grades = parse_grade_map(cfg.grades, cfg.positive_threshold)
        return (
            load_judgments(self.inputs.train_judgments, grades, cfg.judgment_columns),
            load_product_texts(self.inputs.products, cfg.product_columns, cfg.product_template),
        )

    def _train(self, cfg: TrainConfig, name: str) -> StageResult:
        out = self.train_dir / name
        results = run_training(
            self.inputs.train_judgments, self.inputs.products, out, cfg, None, log
        )
        return results[-1]

    def _note(self, result: StageResult) -> StageResult:
        if result.skipped and str(result.model_dir) not in self.reused:
            self.reused.append(str(result.model_dir))
        return result

    # -- evaluation -----------------------------------------------------------------------
    def where(self, system: str) -> list[str]:
        return [
            "--collection",
            system,
            "--path",
            str(self.collections_dir),
            "--model",
            str(self.eval_dir / "models" / system),
            "--precision",
            self.precision,
        ]

    def evaluate(self, system: str, model_dir: Path | None) -> dict[str, Any]:
        """Export, ingest the catalog, run `shopsearch eval` in both modes; cached as JSON."""
        record = self.eval_dir / f"{system}.json"
        if record.is_file():
            self.reused.append(str(record))
            result = json.loads(record.read_text())
            if "learned" not in result["metrics"]:
                self.learned(result)
                record.write_text(json.dumps(result, indent=2) + "\n")
            return result
        start = time.perf_counter()
        self.export(system, model_dir)
        export_s = time.perf_counter() - start
        log(f"{system}: ingesting {self.inputs.eval_products.name}")
        ingest_s, _, out = run_shopsearch(
            "ingest",
            str(self.inputs.eval_products),
            "--map",
            f"id={PRODUCT_ID}",
            "--rejects",
            str(self.eval_dir / "rejects.jsonl"),
            "--recreate",
            "--json",
            *self.where(system),
        )
        upserted = json.loads(out)["upserted"]
        log(f"{system}: {upserted} products in {ingest_s:.0f} s; evaluating")
        doc = self.run_eval(system, FIRST_MODES)
        result = {
            "system": system,
            "queries": doc["queries"],
            "products": upserted,
            "export_s": export_s,
            "ingest_s": ingest_s,
            "eval_s": doc["eval_s"],
            "metrics": {mode: metrics_of(doc, MODES[mode][1]) for mode in FIRST_MODES},
            "runs": {mode: str(self.runs_dir(system) / MODES[mode][1]) for mode in FIRST_MODES},
        }
        self.learned(result)
        record.write_text(json.dumps(result, indent=2) + "\n")
        log(f"{system}: evaluated in {time.perf_counter() - start:.0f} s")
        return result

    def export(self, system: str, model_dir: Path | None) -> Path:
        """`system`'s model exported to ONNX where the evaluations read it."""
        out = self.eval_dir / "models" / system
        log(f"{system}: exporting {model_dir or 'the base model'}")
        export_model(str(model_dir) if model_dir else None, out, quantize=self.precision == "int8")
        return out

    def runs_dir(self, system: str) -> Path:
        return self.eval_dir / "runs" / system

    def run_eval(self, system: str, modes: Iterable[str]) -> dict[str, Any]:
        """`shopsearch eval` of the dev judgments in `modes`, dense search exact; its --json
        document, with its wall time as eval_s."""
        flags = [flag for mode in modes for flag in MODES[mode][0]]
        eval_s, _, out = run_shopsearch(
            "eval",
            "-j",
            str(self.inputs.dev_judgments),
            *flags,
            "--exact",
            "--save-runs",
            str(self.runs_dir(system)),
            "--json",
            *self.where(system),
        )
        return {**json.loads(out), "eval_s": eval_s}

    def learned(self, result: dict[str, Any]) -> None:
        """Fit the system's learned fusion on the train judgments, then score it on dev (added
        to `result`; a result recorded before learned fusion existed gets it here too)."""
        system = result["system"]
        log(f"{system}: fitting the learned fusion on {self.inputs.train_judgments.name}")
        fit_s, _, _ = run_shopsearch(
            "fusion", "fit", "-j", str(self.inputs.train_judgments), "--json", *self.where(system)
        )
        doc = self.run_eval(system, ["learned"])
        result["metrics"]["learned"] = metrics_of(doc, MODES["learned"][1])
        result["runs"]["learned"] = str(self.runs_dir(system) / MODES["learned"][1])
        result["eval_s"] += fit_s + doc["eval_s"]
        result["fusion_fit_s"] = fit_s

    def bm25(self, systems: Iterable[str]) -> dict[str, Any]:
        """BM25 alone, once: the reference row (it is the same in every collection, so any of
        `systems` whose collection is on disk serves; a reused result may have lost its own)."""
        record = self.eval_dir / "bm25.json"
        if record.is_file():
            self.reused.append(str(record))
            return json.loads(record.read_text())
        built = [s for s in systems if (self.collections_dir / s).is_dir()]
        if not built:
            raise RuntimeError(f"no collection under {self.collections_dir} for BM25")
        collection = built[0]
        eval_s, _, out = run_shopsearch(
            "eval",
            "-j",
            str(self.inputs.dev_judgments),
            "--mode",
            "bm25",
            "--json",
            *self.where(collection),
        )
        result = {"eval_s": eval_s, "metrics": metrics_of(json.loads(out), "bm25")}
        record.write_text(json.dumps(result, indent=2) + "\n")
        return result

    def significance(self, results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """stage1-roar against stage1 and stage1-cosent, paired over dev queries, both modes."""
        judged = load_dev_judgments(self.inputs.dev_judgments)
        rows = []
        for baseline in ("stage1", "stage1-cosent"):
            if baseline not in results or "stage1-roar" not in results:
                continue
            for mode in MODES:
                systems = [
                    System(
                        name,
                        read_run(Path(results[name]["runs"][mode] + ".jsonl")),
                        read_run(Path(results[name]["runs"][mode] + ".rerank.jsonl")),
                        source=name,
                    )
                    for name in (baseline, "stage1-roar")
                ]
                ev = evaluate(judged, systems)
                for eval_mode, metric in (("rerank", "OrderAcc"), ("full", "nDCG@10")):
                    c = ev.comparisons[eval_mode]["stage1-roar"][ALL][metric]
                    rows.append(
                        {
                            "comparison": f"stage1-roar vs {baseline}",
                            "mode": mode,
                            "metric": f"{'re-rank' if eval_mode == 'rerank' else 'full'} {metric}",
                            **c.to_dict(),
                        }
                    )
        return rows


def cosent_pairs(groups: Any) -> tuple[Any, float]:
    """Stage 2's graded groups as (query, product text, grade level) rows for CoSENTLoss, and
    the mean group size."""
    from datasets import Dataset

    rows: dict[str, list[Any]] = {"query": [], "candidate": [], "score": []}
    for query, candidates, levels in zip(
        groups["query"], groups["candidates"], groups["label"], strict=True
    ):
        rows["query"] += [query] * len(candidates)
        rows["candidate"] += candidates
        rows["score"] += [float(level) for level in levels]
    return Dataset.from_dict(rows), len(rows["query"]) / len(groups)


def metrics_of(doc: dict[str, Any], system: str) -> dict[str, float]:
    """The ablation's four numbers for one system of an eval JSON document (all queries)."""
    out = {}
    for mode, metric, column in METRICS:
        row = next(
            r for r in doc["results"][mode] if r["stratum"] == ALL[0] and r["system"] == system
        )
        out[column] = row["metrics"][metric]["mean"]
    return out


def acceptance(
    metrics: dict[tuple[str, str], dict[str, float]], wall_s: float | None, quick: bool
) -> list[dict[str, str]]:
    """Issue 4's targets that the systems run can answer: target, measured, verdict (none for
    a --quick run: its tiny catalog makes every number incomparable with the targets)."""
    checks: list[dict[str, str]] = []

    def check(target: str, measured: str, ok: bool | None) -> None:
        verdict = "" if ok is None or quick else ("met" if ok else "MISSED")
        checks.append({"target": target, "measured": measured, "verdict": verdict})

    for mode, column, target in (
        ("dense", "full nDCG@10", 0.40),
        ("fused", "full nDCG@10", 0.43),
        ("fused", "Recall@100", 0.83),
        ("learned", "full nDCG@10", 0.43),
        ("learned", "Recall@100", 0.83),
    ):
        value = metrics.get(("stage1-roar", mode), {}).get(column)
        if value is not None:
            check(f"stage1-roar {mode}: {column} >= {target}", f"{value:.3f}", value >= target)
    for a, b, column, strict in (
        ("stage1-roar", "stage1", "OrderAcc", True),
        ("stage1-roar", "stage1-cosent", "OrderAcc", True),
        ("stage1", "mnrl", "full nDCG@10", False),  # equal steps by construction
    ):
        if (a, "dense") in metrics and (b, "dense") in metrics:
            x, y = metrics[(a, "dense")][column], metrics[(b, "dense")][column]
            op = ">" if strict else ">="
            check(
                f"dense {column}: {a} {op} {b}",
                f"{x:.4f} vs {y:.4f}",
                x > y or (not strict and x == y),
            )
    if wall_s is None:
        check("whole benchmark < 90 min", "not measured: reused --work results", None)
    else:
        check("whole benchmark < 90 min", f"{wall_s / 60:.1f} min", wall_s < TIME_LIMIT_S)
    return checks


def pick_device(choice: str) -> str:
    """Hide CUDA from torch for `cpu` (before torch is imported); `cuda` must be there."""
    if choice == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import torch

    available = torch.cuda.is_available()
    if choice == "cuda" and not available:
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return torch.cuda.get_device_name(0) if available else "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench/train-homedepot"))
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument(
        "--stage1-steps",
        type=int,
        default=DEFAULT_STAGE1_STEPS,
        help=f"steps of stage 1 and MNRL (0: whole --epochs) [{DEFAULT_STAGE1_STEPS}]",
    )
    parser.add_argument(
        "--stage2-steps",
        type=int,
        default=DEFAULT_STAGE2_STEPS,
        help=f"steps of ROAR and CoSENT (0: whole --epochs) [{DEFAULT_STAGE2_STEPS}]",
    )
    parser.add_argument("--epochs", type=float, default=1.0, help="for a stage given 0 steps")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--batch-size", type=int, default=64, help="stage-1 pairs per batch")
    parser.add_argument("--max-length", type=int, default=32, help="tokens, train and inference")
    parser.add_argument(
        "--anchor-weight",
        type=float,
        default=0.5,
        help="ROAR's stage-1 anchor term (lambda) [0.5]",
    )
    parser.add_argument(
        "--margin",
        type=lambda text: None if text == "none" else float(text),
        default=TrainConfig.margin,
        help=f"stage 1's false-negative margin m; none: identity mask only [{TrainConfig.margin}]",
    )
    parser.add_argument(
        "--guide",
        default=None,
        help="frozen guide model that judges stage 1's margin mask (a path or hub name; "
        "base: the base model) [none: the model in training]",
    )
    parser.add_argument(
        "--hard-negatives",
        choices=("none", "bm25", "model"),
        default=TrainConfig.hard_negatives,
        help="a mined negative per stage-1 pair, for stage 1 and MNRL alike: from BM25's or "
        "the base model's top 50 for the query, judged positives excluded "
        f"[{TrainConfig.hard_negatives}]",
    )
    parser.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bf16 autocast in training; auto: where the hardware has bf16 units [auto]",
    )
    parser.add_argument("--int8", action="store_true", help="ingest and evaluate with int8")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, 2 steps")
    parser.add_argument(
        "--train-only",
        action="store_true",
        help="train and export the systems' models, evaluate nothing (transfer_crowdflower.py "
        "evaluates them on another shop)",
    )
    args = parser.parse_args()
    if min(args.stage1_steps, args.stage2_steps) < 0:
        parser.error("--stage1-steps and --stage2-steps must be >= 0")

    device = pick_device(args.device)
    work = args.work.expanduser().absolute()
    inputs = (
        quick_inputs(work / "quick-data")
        if args.quick
        else Inputs(
            HOMEDEPOT / "judgments-train.parquet",
            HOMEDEPOT / "judgments-dev.parquet",
            HOMEDEPOT / "products.parquet",
            HOMEDEPOT / "products.parquet",
        )
    )
    stage1_steps = QUICK_STEPS if args.quick else (args.stage1_steps or None)
    stage2_steps = QUICK_STEPS if args.quick else (args.stage2_steps or None)
    cfg = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.learning_rate,
        max_steps=stage1_steps,
        anchor_weight=args.anchor_weight,
        margin=args.margin,
        guide_model=resolve_base_model(None) if args.guide == "base" else args.guide,
        hard_negatives=args.hard_negatives,
        bf16={"auto": None, "on": True, "off": False}[args.bf16],
        resume=True,  # skip finished stages of an earlier run in --work
        product_columns={"id": PRODUCT_ID},
    )
    # Results are keyed by the knobs that change the models, so a rerun never mixes them.
    steps = "-".join(
        f"s{n}" if n is not None else f"e{args.epochs:g}" for n in (stage1_steps, stage2_steps)
    )
    knobs = f"b{cfg.batch_size}-l{cfg.max_length}-lr{cfg.learning_rate:g}-a{cfg.anchor_weight:g}"
    knobs += f"-m{cfg.margin:g}" if cfg.margin is not None else "-mnone"
    if args.guide:
        knobs += f"-g{Path(args.guide).name}"
    if cfg.hard_negatives != "none":
        knobs += f"-hn{cfg.hard_negatives}{cfg.num_hard_negatives}"
    if use_bf16(cfg):
        knobs += "-bf16"
    tag = f"{steps}-{knobs}"
    run_dir = work / (tag + ("-quick" if args.quick else ""))
    ablation = Ablation(cfg, stage2_steps, inputs, run_dir, args.int8)
    log(f"training on {device}; work in {ablation.train_dir.parent}")

    metrics: dict[tuple[str, str], dict[str, float]] = {}
    results: dict[str, dict[str, Any]] = {}
    rows: list[dict[str, Any]] = []
    for system in (s for s in SYSTEMS if s in args.systems):
        stages = ablation.stages(system)
        if args.train_only:
            ablation.export(system, stages[-1].model_dir if stages else None)
            continue
        result = ablation.evaluate(system, stages[-1].model_dir if stages else None)
        results[system] = result
        for mode in MODES:
            metrics[(system, mode)] = result["metrics"][mode]
            rows.append(
                {
                    "system": system,
                    "mode": mode,
                    **result["metrics"][mode],
                    "train_steps": "+".join(str(s.steps) for s in stages) or "0",
                    "train_s": sum(s.seconds for s in stages),
                    "eval_s": result["export_s"] + result["ingest_s"] + result["eval_s"],
                }
            )
    if args.train_only:
        log(f"trained and exported; models in {ablation.eval_dir / 'models'}")
        return
    bm25 = ablation.bm25(results)
    significance = ablation.significance(results)
    wall_s = time.perf_counter() - START
    first = next(iter(results.values()))
    doc = {
        "config": {
            **asdict(cfg),
            "stage2_max_steps": stage2_steps,
            "quick": args.quick,
            "precision": ablation.precision,
        },
        "device": device,
        "inputs": {k: str(v) for k, v in asdict(inputs).items()},
        "queries": first["queries"],
        "products": first["products"],
        "rows": rows,
        "bm25": bm25,
        "systems": results,
        "significance": significance,
        "acceptance": acceptance(metrics, None if ablation.reused else wall_s, args.quick),
        "design_baselines": DESIGN_BASELINES,
        "wall_s": wall_s,
        "reused": ablation.reused,
    }
    markdown = render(doc)
    print(markdown)
    # one report per knob setting and system subset: a partial rerun never overwrites the full one
    subset = "" if set(args.systems) == set(SYSTEMS) else "-" + "+".join(args.systems)
    report = run_dir / f"ablation{subset}"
    report.with_suffix(".md").write_text(markdown)
    report.with_suffix(".json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    log(f"wrote {report}.md and {report}.json")


def render(doc: dict[str, Any]) -> str:
    """The markdown report of an ablation.json document."""
    cfg = doc["config"]
    columns = [column for _, _, column in METRICS]
    rows = [
        [
            r["system"],
            r["mode"],
            *(f"{r[c]:.3f}" for c in columns),
            r["train_steps"],
            f"{r['train_s']:.0f}",
            f"{r['eval_s']:.0f}",
        ]
        for r in doc["rows"]
    ]
    bm25 = doc["bm25"]
    rows.append(
        [
            "BM25 (reference)",
            "bm25",
            *(f"{bm25['metrics'][c]:.3f}" for c in columns),
            "–",
            "–",
            f"{bm25['eval_s']:.0f}",
        ]
    )

    def steps_of(n: int | None) -> str:
        return f"{n} steps" if n else f"{cfg['epochs']:g} epoch(s)"

    steps = (
        f"stage 1 / MNRL: {steps_of(cfg['max_steps'])}, "
        f"stage 2: {steps_of(cfg['stage2_max_steps'])}"
    )
    lines = [
        f"# Training ablation, Home Depot dev{' (--quick smoke run)' if cfg['quick'] else ''}",
        "",
        f"{doc['queries']} dev queries, {doc['products']} products. {steps}; "
        f"batch {cfg['batch_size']} pairs (stage 2: {cfg['stage2_batch_size']} queries), max "
        f"length {cfg['max_length']}, lr {cfg['learning_rate']:g}, seed {cfg['seed']}; "
        f"{cfg['precision']} encoders; training on {doc['device']}. Dense: exact search; fused: "
        "hybrid with BM25, DBSF; learned: hybrid ranked by the learned fusion `shopsearch "
        "fusion fit` fit on the train judgments. Train s: Trainer time of every stage (stage 1 "
        "included); eval s: export + ingest + every mode's search + the fusion's fit.",
        "",
        table(["system", "mode", *columns, "train steps", "train s", "eval s"], rows),
        "",
        "The design-time dev baselines (full nDCG@10 / Recall@100): "
        + "; ".join(f"{name} {n:.3f} / {r:.3f}" for name, n, r in doc["design_baselines"])
        + ".",
    ]
    if doc["significance"]:
        header = ["comparison", "mode", "metric", "Δ", "95% CI", "p", "queries"]
        cells = [
            [
                s["comparison"],
                s["mode"],
                s["metric"],
                f"{s['delta']:+.4f}",
                f"[{s['ci_low']:+.4f}, {s['ci_high']:+.4f}]",
                f"{s['p_value']:.3g}",
                s["n"],
            ]
            for s in doc["significance"]
        ]
        lines += ["", "Paired over dev queries (bootstrap 95% CI, randomisation p):", ""]
        lines += [table(header, cells)]
    checks = [[c["target"], c["measured"], c["verdict"]] for c in doc["acceptance"]]
    reused = f"; reused from --work: {len(doc['reused'])} finished steps" if doc["reused"] else ""
    lines += [
        "",
        table(["target (issue 4)", "measured", ""], checks),
        "",
        f"Total wall time: {doc['wall_s']:.0f} s ({doc['wall_s'] / 60:.1f} min){reused}",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
