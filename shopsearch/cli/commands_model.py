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
        typer.Option("--out", help="Output directory [default: the default model directory]."),
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
    from shopsearch.encoders.resolve import default_model_dir

    target = out or default_model_dir()
    if if_missing and (target / "manifest.json").is_file():
        manifest = Manifest.load(target)
        Console(stderr=True).print(f"model already exported at {target}", markup=False)
    else:
        from shopsearch.encoders.export import export_model

        # Text, not str: rich would read `[...]` in a path or message as markup.
        with Console(stderr=True).status(Text(f"exporting to {target}")) as status:
            manifest = export_model(
                model, target, quantize=quantize, progress=lambda m: status.update(Text(m))
            )
    if as_json:
        print_json({"dir": str(target), **manifest.to_dict()})
        return
    Console(highlight=False, markup=False).print(
        f"exported {manifest.model_name} (dim {manifest.dimension}) to {target}: "
        + ", ".join(f"{k}={v}" for k, v in manifest.files.items())
    )
