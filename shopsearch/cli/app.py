"""The `shopsearch` command: a thin typer layer over ingest, qdrant and encoders.

Library code raises typed `ShopsearchError`s; `main` renders each one once, as a one-line
message and an exit code (2 for bad usage), never as a traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.text import Text

from shopsearch.cli import (
    commands_eval,
    commands_ingest,
    commands_model,
    commands_query,
    commands_train,
)
from shopsearch.errors import ShopsearchError

app = typer.Typer(
    name="shopsearch",
    help="Semantic, filtered, hybrid product search for online shops.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.command("ingest")(commands_ingest.ingest)
app.command("query")(commands_query.query)
app.command("info")(commands_query.info)
app.command("eval")(commands_eval.evaluate)
app.command("train")(commands_train.train)
model_app = typer.Typer(help="Export and inspect encoders.", no_args_is_help=True)
model_app.command("export")(commands_model.export)
app.add_typer(model_app, name="model")


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        from shopsearch import __version__

        print(f"shopsearch {__version__}")
        raise typer.Exit()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; typer handles usage errors, we render ours."""
    try:
        app(args=argv, prog_name="shopsearch")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except ShopsearchError as exc:
        Console(stderr=True, highlight=False).print(
            Text.assemble(("error: ", "bold red"), str(exc)), soft_wrap=True
        )
        return exc.exit_code
    except KeyboardInterrupt:
        Console(stderr=True).print("interrupted")
        return 130
    return 0


def run() -> None:
    sys.exit(main())
