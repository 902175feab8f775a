"""`shopsearch train`: a thin layer over `shopsearch.training.pipeline`.

torch and sentence-transformers load only inside the command (they cost seconds and are an
optional extra); without the `train` extra the command fails with one clear message.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json
from shopsearch.errors import MissingExtraError, UsageError


def train(
    judgments: Annotated[
        Path, typer.Option("--judgments", help="Training judgments (parquet, csv, jsonl).")
    ],
    products: Annotated[
        Path, typer.Option("--products", help="Catalog the judgments refer to (as for ingest).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output directory (stage1/, stage2/).")],
    stage: Annotated[
        str, typer.Option("--stage", help="1 (contrastive), 2 (ROAR) or both, in sequence.")
    ] = "both",
    dev_judgments: Annotated[
        Path | None,
        typer.Option("--dev-judgments", help="Judgments for a dev evaluation each epoch."),
    ] = None,
    column_map: Annotated[
        list[str] | None,
        typer.Option("--map", help="Catalog field from another column: FIELD=COLUMN (repeatable)."),
    ] = None,
    judgment_map: Annotated[
        list[str] | None,
        typer.Option(
            "--judgment-map",
            help="Judgment field (query_id, query, product_id, grade) from a column: FIELD=COLUMN.",
        ),
    ] = None,
    grades: Annotated[
        str | None,
        typer.Option(
            "--grades",
            help="Grade levels: esci, bins:1.5,2,2.5,3 (numeric ratings), or LABEL=LEVEL,... "
            "[default: bins:1.5,2,2.5,3].",
        ),
    ] = None,
    positive_threshold: Annotated[
        float | None,
        typer.Option(
            "--positive-threshold",
            help="Stage-1 positives: relevance >= this [default: 2.5 for bins, 2 for esci].",
        ),
    ] = None,
    base: Annotated[
        str | None,
        typer.Option("--base", help="Base model: directory or name [default: all-MiniLM-L6-v2]."),
    ] = None,
    epochs: Annotated[float, typer.Option("--epochs", min=0.01)] = 1.0,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=2, help="Stage-1 pairs per batch.")
    ] = 64,
    stage2_batch_size: Annotated[
        int, typer.Option("--stage2-batch-size", min=1, help="Stage-2 queries per batch.")
    ] = 16,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate.")] = 2e-5,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    max_length: Annotated[int, typer.Option("--max-length", min=8, help="Max tokens.")] = 64,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="Cap each stage's steps.")
    ] = None,
    hard_negatives: Annotated[
        str,
        typer.Option(
            "--hard-negatives",
            help="Stage-1 mined negatives: none, bm25, or model (the base model's top 50).",
        ),
    ] = "model",
    num_hard_negatives: Annotated[int, typer.Option("--num-hard-negatives", min=1)] = 1,
    temperature: Annotated[float, typer.Option("--temperature", help="Stage-1 tau.")] = 0.05,
    margin: Annotated[
        float | None,
        typer.Option(
            "--margin",
            help="Stage-1 false-negative margin m: mask negatives scoring above the positive - m.",
        ),
    ] = -0.1,
    no_margin: Annotated[
        bool, typer.Option("--no-margin", help="Disable the margin mask.")
    ] = False,
    symmetric: Annotated[
        bool, typer.Option("--symmetric", help="Add product->query term.")
    ] = False,
    guide: Annotated[
        str | None, typer.Option("--guide", help="Frozen guide model for the margin mask.")
    ] = None,
    roar_temperature: Annotated[float, typer.Option("--roar-temperature")] = 0.05,
    roar_beta: Annotated[float, typer.Option("--roar-beta")] = 1.0,
    roar_margins: Annotated[
        str,
        typer.Option(
            "--roar-margins", help="gamma per adjacent level pair, low to high: 0.1,0.1,... or one."
        ),
    ] = "0",
    anchor_weight: Annotated[
        float, typer.Option("--anchor-weight", help="lambda of the stage-1 anchor term.")
    ] = 0.0,
    max_candidates: Annotated[
        int, typer.Option("--max-candidates", min=2, help="Stage-2 candidates per query.")
    ] = 16,
    checkpoint_steps: Annotated[
        int | None,
        typer.Option("--checkpoint-steps", min=1, help="Checkpoint every N steps [per epoch]."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Skip finished stages, continue from checkpoints.")
    ] = False,
    bf16: Annotated[
        bool | None,
        typer.Option(
            "--bf16/--no-bf16",
            help="bf16 autocast (fp32 weights) [default: where the CPU or GPU has bf16 units].",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
) -> None:
    """Two-stage training: FN-masked contrastive (stage 1), then ROAR (stage 2)."""
    from shopsearch.ingest.readers import parse_column_map

    opt.writable_dir(out, "--out")  # before torch loads and the judgments are read

    try:
        import accelerate  # noqa: F401  (the Trainer needs it)
        import datasets  # noqa: F401
        import sentence_transformers  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"shopsearch train needs the train extra ({exc.name} is missing): "
            "pip install 'shopsearch[train]'"
        ) from None
    from shopsearch.training.pipeline import TrainConfig, run_training

    config = TrainConfig(
        stage=stage,
        base_model=base,
        epochs=epochs,
        batch_size=batch_size,
        stage2_batch_size=stage2_batch_size,
        learning_rate=lr,
        seed=seed,
        max_length=max_length,
        max_steps=max_steps,
        checkpoint_steps=checkpoint_steps,
        resume=resume,
        bf16=bf16,
        grades=grades,
        positive_threshold=positive_threshold,
        temperature=temperature,
        margin=None if no_margin else margin,
        symmetric=symmetric,
        guide_model=guide,
        hard_negatives=hard_negatives,
        num_hard_negatives=num_hard_negatives,
        roar_temperature=roar_temperature,
        roar_beta=roar_beta,
        roar_margins=_margins(roar_margins),
        anchor_weight=anchor_weight,
        max_candidates=max_candidates,
        product_columns=parse_column_map(column_map or []),
        judgment_columns=_judgment_map(judgment_map or []),
    )
    console = Console(stderr=True, highlight=False, markup=False)  # messages name paths
    results = run_training(
        judgments, products, out, config, dev_judgments, progress=lambda m: console.print(m)
    )
    if as_json:
        payload = [
            {
                "stage": r.stage,
                "model_dir": str(r.model_dir),
                "steps": r.steps,
                "seconds": round(r.seconds, 1),
                "train_loss": r.train_loss,
                "dev_metrics": r.dev_metrics,
                "skipped": r.skipped,
                "bf16": r.bf16,
            }
            for r in results
        ]
        print_json(payload)
        return
    final = results[-1].model_dir
    Console(highlight=False, markup=False).print(
        f"trained stage {', '.join(str(r.stage) for r in results)} -> {final}\n"
        f"export it with: shopsearch model export {final} --out DIR"
    )


def _margins(text: str) -> float | list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"bad --roar-margins {text!r}: numbers separated by commas") from None
    if not values:
        raise UsageError("--roar-margins needs at least one number")
    return values[0] if len(values) == 1 else values


def _judgment_map(items: list[str]) -> dict[str, str]:
    from shopsearch.ingest.readers import parse_column_map
    from shopsearch.training.data import JUDGMENT_FIELDS

    return parse_column_map(items, JUDGMENT_FIELDS, "--judgment-map")
