"""The two-stage training pipeline on sentence-transformers' Trainer.

Stage 1 (FN-masked contrastive) teaches retrieval from "substitute-or-better" pairs; stage 2
(ROAR) then orders each query's graded candidates. `train_model` runs one stage or both in
sequence from a judgments file and a catalog and returns the directory of the final
sentence-transformers model, which `shopsearch model export` turns into the ONNX runtime model.

Layout of `out_dir`: `stage1/` and `stage2/`, each with `data/` (the built dataset, reused on
resume so a resumed run sees identical batches), `checkpoints/` (Trainer checkpoints, one per
epoch or every `checkpoint_steps`) and `model/` (the finished stage). With `resume`, a finished
stage is skipped and an interrupted one continues from its last checkpoint.

Needs the `train` extra; never imported on the query path.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shopsearch.encoders.resolve import resolve_base_model
from shopsearch.errors import ModelNotFoundError, UsageError
from shopsearch.training.cpu_features import has_bf16_units
from shopsearch.training.data import (
    GradeMap,
    Judgments,
    Stage1Data,
    build_dev_evaluator,
    build_stage1,
    build_stage2,
    load_judgments,
    load_product_texts,
    mine_hard_negatives,
    parse_grade_map,
)

logger = logging.getLogger(__name__)

STAGES = ("1", "2", "both")
MODEL_SUBDIR = "model"
CONFIG_FILE = "train_config.json"
KNOWN_POSITIVES_FILE = "data_known_positives.json"  # beside the stage-1 rows in data/


@dataclass
class TrainConfig:
    """Everything `train_model` needs besides the input files; defaults suit a CPU run."""

    stage: str = "both"
    base_model: str | None = None
    epochs: float = 1.0
    batch_size: int = 64  # stage 1: pairs per batch (in-batch negatives)
    stage2_batch_size: int = 16  # stage 2: queries per batch, each with its candidates
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    seed: int = 42
    max_length: int = 64
    max_steps: int | None = None  # caps each stage (smoke runs); None = full epochs
    checkpoint_steps: int | None = None  # None = one checkpoint per epoch
    logging_steps: int = 50
    resume: bool = False
    bf16: bool | None = None  # bf16 autocast; None: where the hardware has bf16 units
    # grades
    grades: str | None = None  # see data.parse_grade_map
    positive_threshold: float | None = None
    # stage 1
    temperature: float = 0.05
    # m < 0 masks only negatives scoring more than -m above the positive: m >= 0 also hides
    # informative negatives. With the base model's mined negatives this trains best
    # (benchmarks/RESULTS.md, the training section).
    margin: float | None = -0.1
    symmetric: bool = False
    guide_model: str | None = None
    hard_negatives: str = "model"  # none | bm25 | model
    num_hard_negatives: int = 1
    negatives_top_k: int = 50
    negatives_skip_top: int = 0
    # stage 2
    roar_temperature: float = 0.05
    roar_beta: float = 1.0
    roar_margins: float | list[float] = 0.0
    anchor_weight: float = 0.0
    max_candidates: int = 16
    # dev evaluation
    dev_queries: int = 200
    dev_corpus_size: int = 5000
    # inputs' column maps
    product_columns: dict[str, str] = field(default_factory=dict)
    judgment_columns: dict[str, str] = field(default_factory=dict)
    product_template: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise UsageError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.hard_negatives not in ("none", "bm25", "model"):
            raise UsageError("--hard-negatives must be none, bm25 or model")
        for name in ("batch_size", "stage2_batch_size", "max_length", "max_candidates"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name} must be >= 1")
        if self.epochs <= 0 or self.learning_rate <= 0:
            raise UsageError("epochs and learning rate must be > 0")


@dataclass
class StageResult:
    stage: int
    model_dir: Path
    train_rows: int
    steps: int
    seconds: float
    train_loss: float | None
    dev_metrics: dict[str, float]
    skipped: bool = False
    bf16: bool = False  # trained under bf16 autocast


def train_model(
    judgments: Path,
    products: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    dev_judgments: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Train stage 1, stage 2 or both; return the final stage's model directory."""
    return run_training(judgments, products, out_dir, config, dev_judgments, progress)[-1].model_dir


def run_training(
    judgments: Path,
    products: Path,
    out_dir: Path,
    config: TrainConfig | None = None,
    dev_judgments: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[StageResult]:
    """`train_model` with the per-stage results (steps, time, losses, dev metrics)."""
    cfg = config or TrainConfig()
    report = progress or (lambda message: logger.info("%s", message))
    out_dir = Path(out_dir).expanduser().absolute()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / CONFIG_FILE).write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")

    grade_map = parse_grade_map(cfg.grades, cfg.positive_threshold)
    report(f"reading judgments {judgments}")
    train_j = load_judgments(Path(judgments), grade_map, cfg.judgment_columns)
    dev_j = (
        load_judgments(Path(dev_judgments), grade_map, cfg.judgment_columns)
        if dev_judgments
        else None
    )
    report(f"reading products {products}")
    texts = load_product_texts(Path(products), cfg.product_columns, cfg.product_template)

    source = resolve_base_model(cfg.base_model)
    results: list[StageResult] = []
    if cfg.stage in ("1", "both"):
        results.append(_stage1(cfg, source, train_j, dev_j, texts, out_dir / "stage1", report))
        source = str(results[-1].model_dir)
    if cfg.stage in ("2", "both"):
        results.append(_stage2(cfg, source, train_j, dev_j, texts, out_dir / "stage2", report))
    return results


def train_with_loss(
    source: str | None,
    make_loss: Callable[[Any], Any],
    dataset: Any | Callable[[], Any],
    stage_dir: Path,
    config: TrainConfig | None = None,
    stage: int = 1,
    progress: Callable[[str], None] | None = None,
) -> StageResult:
    """Train `source` on `dataset` with any loss under exactly the Trainer arguments of stage
    `stage` (batch size, steps, learning rate, warmup, seed, max length, checkpoints, resume).

    For ablations: a baseline loss (e.g. sentence-transformers' MultipleNegativesRankingLoss)
    gets the same budget and batches as ours. `source` is a model directory or name (None: the
    default base model); `make_loss` receives the loaded model. `dataset` may be a function
    that builds it, called only if training runs (mined rows cost minutes to build). Writes
    `stage_dir/model` and `result.json` as the built-in stages do; with `resume`, a finished
    run is returned as is.
    """
    cfg = config or TrainConfig()
    report = progress or (lambda message: logger.info("%s", message))
    stage_dir = Path(stage_dir).expanduser().absolute()
    done = _finished(cfg, stage_dir, stage)
    if done is not None:
        report(f"{stage_dir} already finished: {done.model_dir}")
        return done
    if callable(dataset):
        dataset = dataset()
    model = load_model(resolve_base_model(source), cfg)
    batch_size = cfg.batch_size if stage == 1 else cfg.stage2_batch_size
    return _fit(
        cfg, stage, model, make_loss(model), dataset, None, batch_size, None, {}, stage_dir, report
    )


# -- stages ------------------------------------------------------------------------------
def _stage1(
    cfg: TrainConfig,
    source: str,
    judgments: Judgments,
    dev: Judgments | None,
    texts: dict[str, str],
    stage_dir: Path,
    report: Callable[[str], None],
) -> StageResult:
    from shopsearch.training.losses.false_negative_masked_contrastive import (
        FalseNegativeMaskedContrastiveLoss,
    )

    done = _finished(cfg, stage_dir, 1)
    if done is not None:
        report(f"stage 1 already finished: {done.model_dir}")
        return done
    model = load_model(source, cfg)
    dataset = stage1_rows(cfg, judgments, texts, stage_dir, lambda: model, report)
    known = [tuple(p) for p in json.loads((stage_dir / KNOWN_POSITIVES_FILE).read_text())]
    guide = load_model(resolve_base_model(cfg.guide_model), cfg) if cfg.guide_model else None
    loss = FalseNegativeMaskedContrastiveLoss(
        model,
        temperature=cfg.temperature,
        margin=cfg.margin,
        guide=guide,
        symmetric=cfg.symmetric,
        known_positives=known,
        guide_name=cfg.guide_model,
    )
    return _fit(cfg, 1, model, loss, dataset, None, cfg.batch_size, dev, texts, stage_dir, report)


def stage1_rows(
    cfg: TrainConfig,
    judgments: Judgments,
    texts: dict[str, str],
    stage_dir: Path,
    miner: Callable[[], Any],
    report: Callable[[str], None] = logger.info,
) -> Any:
    """Stage 1's training rows, built into `stage_dir` once and read back after (with `resume`).

    Mining costs minutes, so a baseline trained on the same pairs (the benchmark's MNRL) reads
    the rows stage 1 built, or builds them for it. `miner` returns the model that mines
    (`hard_negatives="model"`: stage 1's base model); it is called only if rows are built.
    """

    def build() -> Any:
        model = miner() if cfg.hard_negatives == "model" else None
        data = stage1_data(cfg, judgments, texts, model, report)
        stage_dir.mkdir(parents=True, exist_ok=True)
        # Written before the rows, whose directory marks a complete build (`_built_once`).
        (stage_dir / KNOWN_POSITIVES_FILE).write_text(json.dumps(data.known_positives))
        report(f"stage 1: {len(data.known_positives)} known positives")
        return data.dataset

    return _built_once(cfg, stage_dir, build, "stage 1 pairs", report)


def stage1_data(
    cfg: TrainConfig,
    judgments: Judgments,
    texts: dict[str, str],
    model: Any | None = None,
    report: Callable[[str], None] = logger.info,
) -> Stage1Data:
    """Stage-1 pairs with `cfg`'s mined hard negatives (mining with `model` needs it given)."""
    negatives = None
    num_negatives = 0
    if cfg.hard_negatives != "none":
        report(f"stage 1: mining hard negatives with {cfg.hard_negatives}")
        start = time.perf_counter()
        negatives = mine_hard_negatives(
            judgments,
            texts,
            cfg.hard_negatives,
            top_k=cfg.negatives_top_k,
            skip_top=cfg.negatives_skip_top,
            model=model,
        )
        num_negatives = cfg.num_hard_negatives
        report(f"stage 1: mined in {time.perf_counter() - start:.1f} s")
    return build_stage1(judgments, texts, num_negatives, negatives, seed=cfg.seed)


def _stage2(
    cfg: TrainConfig,
    source: str,
    judgments: Judgments,
    dev: Judgments | None,
    texts: dict[str, str],
    stage_dir: Path,
    report: Callable[[str], None],
) -> StageResult:
    from shopsearch.training.losses.roar import ROARDataCollator, ROARLoss

    done = _finished(cfg, stage_dir, 2)
    if done is not None:
        report(f"stage 2 already finished: {done.model_dir}")
        return done
    model = load_model(source, cfg)
    dataset = _built_once(
        cfg,
        stage_dir,
        lambda: build_stage2(judgments, texts, cfg.max_candidates, seed=cfg.seed),
        f"stage 2 query groups (<= {cfg.max_candidates} candidates each)",
        report,
    )
    loss = ROARLoss(
        model,
        temperature=cfg.roar_temperature,
        beta=cfg.roar_beta,
        margins=cfg.roar_margins,
        anchor_weight=cfg.anchor_weight,
        anchor_temperature=cfg.temperature,
        anchor_margin=cfg.margin,
        anchor_min_grade=judgments.grade_map.positive_level,
    )
    collator = ROARDataCollator(preprocess_fn=model.preprocess)
    return _fit(
        cfg, 2, model, loss, dataset, collator, cfg.stage2_batch_size, dev, texts, stage_dir, report
    )


def _built_once(
    cfg: TrainConfig,
    stage_dir: Path,
    build: Callable[[], Any],
    what: str,
    report: Callable[[str], None],
) -> Any:
    """A stage's training rows, saved to `stage_dir/data` when built and read back on resume,
    so a resumed run sees the same rows in the same batches. Anything `build` writes beside
    the rows must be written before it returns: the rows' directory marks a complete build."""
    data_dir = stage_dir / "data"
    if cfg.resume and data_dir.is_dir():
        from datasets import load_from_disk

        dataset = load_from_disk(str(data_dir))
        report(f"{what}: reusing {len(dataset)} from {data_dir}")
        return dataset
    dataset = build()
    stage_dir.mkdir(parents=True, exist_ok=True)
    dataset.save_to_disk(str(data_dir))
    report(f"{what}: {len(dataset)}")
    return dataset


def _fit(
    cfg: TrainConfig,
    stage: int,
    model: Any,
    loss: Any,
    dataset: Any,
    collator: Any | None,
    batch_size: int,
    dev: Judgments | None,
    texts: dict[str, str],
    stage_dir: Path,
    report: Callable[[str], None],
) -> StageResult:
    import torch
    from sentence_transformers import SentenceTransformerTrainingArguments

    ckpt_dir = stage_dir / "checkpoints"
    evaluator = (
        build_dev_evaluator(
            dev, texts, cfg.dev_queries, cfg.dev_corpus_size, seed=cfg.seed, name="dev"
        )
        if dev is not None
        else None
    )
    by_steps = cfg.checkpoint_steps is not None
    bf16 = use_bf16(cfg)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps if cfg.max_steps is not None else -1,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=cfg.learning_rate,
        warmup_ratio=cfg.warmup_ratio,
        seed=cfg.seed,
        data_seed=cfg.seed,
        # In-batch negatives want full batches; a tiny dataset still gets its one batch.
        dataloader_drop_last=stage == 1 and len(dataset) >= 2 * batch_size,
        save_strategy="steps" if by_steps else "epoch",
        save_steps=cfg.checkpoint_steps or 500,
        save_total_limit=2,
        eval_strategy="epoch" if evaluator is not None else "no",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        bf16=bf16,
        # transformers accepts bf16 autocast on a CPU only when told it trains on one
        use_cpu=bf16 and not torch.cuda.is_available(),
        report_to="none",
        disable_tqdm=False,
    )
    trainer = _make_trainer(model, args, dataset, loss, evaluator, collator)
    resume_from = cfg.resume and _has_checkpoint(ckpt_dir)
    report(
        f"stage {stage}: training on {len(dataset)} rows"
        + (" with bf16 autocast" if bf16 else "")
        + (f", resuming from {ckpt_dir}" if resume_from else "")
    )
    start = time.perf_counter()
    with _hub_offline():
        output = trainer.train(resume_from_checkpoint=True if resume_from else None)
    seconds = time.perf_counter() - start
    model_dir = stage_dir / MODEL_SUBDIR
    model.save(str(model_dir))
    metrics = evaluator(model) if evaluator is not None else {}
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    result = StageResult(
        stage=stage,
        model_dir=model_dir,
        train_rows=len(dataset),
        steps=int(output.global_step),
        seconds=seconds,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        dev_metrics={k: float(v) for k, v in metrics.items()},
        bf16=bf16,
    )
    summary = {**asdict(result), "model_dir": str(model_dir), "logged_losses": losses}
    (stage_dir / "result.json").write_text(json.dumps(summary, indent=2) + "\n")
    report(f"stage {stage}: {result.steps} steps in {seconds:.0f} s -> {model_dir}")
    return result


def _make_trainer(
    model: Any, args: Any, dataset: Any, loss: Any, evaluator: Any, collator: Any | None
) -> Any:
    from sentence_transformers import SentenceTransformerTrainer

    class _Trainer(SentenceTransformerTrainer):
        """Adds the stage-1 loss's masked-negative fractions to each training log."""

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            pop = getattr(self.loss, "pop_mask_stats", None)
            if "loss" in logs and pop is not None:
                logs = {**logs, **{k: round(v, 4) for k, v in pop().items()}}
            super().log(logs, start_time)

    kwargs: dict[str, Any] = {}
    if collator is not None:
        kwargs["data_collator"] = collator
    return _Trainer(
        model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator, **kwargs
    )


# -- helpers -----------------------------------------------------------------------------
def use_bf16(cfg: TrainConfig) -> bool:
    """`cfg.bf16`, or where unset, whether the device the Trainer picks multiplies in bf16.

    Mixed precision keeps fp32 weights and runs the matrix products in bf16. On a CPU with
    AMX that makes each stage markedly faster at unchanged dev quality
    (benchmarks/RESULTS.md, the training section); a CPU without bf16 units would only emulate
    it, slower.
    """
    import torch

    on_gpu = torch.cuda.is_available()
    if cfg.bf16 and on_gpu and not torch.cuda.is_bf16_supported():
        raise UsageError("--bf16: this GPU has no bf16 support; train with --no-bf16")
    if cfg.bf16 is not None:
        return cfg.bf16
    if on_gpu:
        return torch.cuda.is_bf16_supported()
    return has_bf16_units()


def load_model(source: str, cfg: TrainConfig) -> Any:
    """`source` (a resolved path or hub name) as a SentenceTransformer at `cfg`'s max length,
    the way every stage loads it, so a baseline that mines with it sees what stage 1 sees."""
    from sentence_transformers import SentenceTransformer

    try:
        with _hub_offline(Path(source).is_dir()):
            model = SentenceTransformer(source, device=None)
    except OSError as exc:
        raise ModelNotFoundError(f"cannot load base model {source!r}: {exc}") from exc
    model.max_seq_length = cfg.max_length
    return model


def _finished(cfg: TrainConfig, stage_dir: Path, stage: int) -> StageResult | None:
    result_file = stage_dir / "result.json"
    if not (cfg.resume and result_file.is_file() and (stage_dir / MODEL_SUBDIR).is_dir()):
        return None
    data = json.loads(result_file.read_text())
    return StageResult(
        stage=stage,
        model_dir=stage_dir / MODEL_SUBDIR,
        train_rows=int(data.get("train_rows", 0)),
        steps=int(data.get("steps", 0)),
        seconds=float(data.get("seconds", 0.0)),
        train_loss=data.get("train_loss"),
        dev_metrics=data.get("dev_metrics", {}),
        skipped=True,
        bf16=bool(data.get("bf16", False)),
    )


def _has_checkpoint(ckpt_dir: Path) -> bool:
    return ckpt_dir.is_dir() and any(p.name.startswith("checkpoint-") for p in ckpt_dir.iterdir())


class _hub_offline:
    """Keep huggingface_hub off the network (the base model is a local directory)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.previous: str | None = None

    def __enter__(self) -> None:
        if self.enabled:
            self.previous = os.environ.get("HF_HUB_OFFLINE")
            os.environ["HF_HUB_OFFLINE"] = "1"

    def __exit__(self, *exc: object) -> None:
        if not self.enabled:
            return
        if self.previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = self.previous


__all__ = [
    "STAGES",
    "GradeMap",
    "StageResult",
    "TrainConfig",
    "run_training",
    "train_model",
    "train_with_loss",
]
