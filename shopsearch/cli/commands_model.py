"""`shopsearch model export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from shopsearch.cli import options as opt
from shopsearch.cli.output import print_json


def export(
    model: Annotated[
        str | None,
        typer.Argument(
            help="sentence-transformers model: a local directory or a name "
            "[default: sentence-transformers/all-MiniLM-L6-v2]."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output directory [default: the default model directory, "
            "$SHOPSEARCH_MODEL_DIR or ~/.cache/shopsearch/models/all-MiniLM-L6-v2; "
            "only for the default model].",
        ),
    ] = None,
    quantize: Annotated[
        bool, typer.Option("--quantize/--no-quantize", help="Also write an int8 model.")
    ] = True,
    if_missing: Annotated[
        bool, typer.Option("--if-missing", help="Do nothing if a model is already exported there.")
    ] = False,
    as_json: opt.JsonOut = False,
) -> None:
    """Export a sentence-transformers model to ONNX (fp32 + int8) with a manifest."""
    from shopsearch.encoders.manifest import Manifest
    from shopsearch.encoders.resolve import DEFAULT_BASE_MODEL, default_model_dir
    from shopsearch.errors import UsageError

    if out is None and model not in (None, DEFAULT_BASE_MODEL):
        # The default directory holds the encoder the default collections were built with.
        raise UsageError(
            f"--out is needed to export {model}: the default directory is the default model's"
        )
    target = out or default_model_dir()
    exported = not (if_missing and (target / "manifest.json").is_file())
    if exported:
        from shopsearch.training.export import export_model

        # Text, not str: rich would read `[...]` in a path or message as markup.
        with Console(stderr=True).status(Text(f"exporting to {target}")) as status:
            manifest = export_model(
                model, target, quantize=quantize, progress=lambda m: status.update(Text(m))
            )
    else:
        manifest = Manifest.load(target)
        wanted = model or DEFAULT_BASE_MODEL
        if model is not None and wanted != manifest.model_name:
            raise UsageError(
                f"{target} already holds {manifest.model_name}, not {wanted}: pick another --out"
            )
    if as_json:
        doc = {"dir": str(target), "exported": exported, "fingerprint": manifest.fingerprint}
        print_json({**doc, **manifest.to_dict()})
        return
    done = "exported" if exported else "already exported (--if-missing)"
    Console(highlight=False, markup=False).print(
        f"{done} {manifest.model_name} (dim {manifest.dimension}) to {target}: "
        + ", ".join(f"{k}={v}" for k, v in manifest.files.items())
        + f"\nfingerprint {manifest.fingerprint}"
    )
