"""The `shopsearch` command: a thin typer layer over ingest, qdrant and encoders.

Library code raises typed `ShopsearchError`s; `main` renders each one once, as a one-line
message and an exit code (2 for bad usage), never as a traceback.

Ctrl-C ends any command with "interrupted" and exit code 130, never a traceback. Inside a
command it raises KeyboardInterrupt as usual, so that the command unwinds (closing what it
opened) and may say what it kept (`Interrupted`). Outside one (while Python imports the CLI,
parses arguments, or tears down after the command) there is nothing to unwind, and the
process ends at once (`_end_interrupted`).
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any


def _end_interrupted(signum: int | None = None, frame: object = None) -> None:
    """SIGINT where no command runs: say so and end the process, running no more Python."""
    os.write(2, b"interrupted\n")
    os._exit(130)


try:  # the heaviest imports of a cold start: a Ctrl-C during them must not print a traceback
    import typer

    from shopsearch.errors import Interrupted, ShopsearchError
except KeyboardInterrupt:
    _end_interrupted()

# command -> (module in shopsearch.cli, function). Only the invoked command's module is
# imported: `shopsearch query` must not pay for pyarrow (ingest) or the evaluation stack.
COMMANDS: dict[str, tuple[str, str]] = {
    "ingest": ("commands_ingest", "ingest"),
    "query": ("commands_query", "query"),
    "facets": ("commands_query", "facets"),
    "info": ("commands_query", "info"),
    "eval": ("commands_eval", "evaluate"),
    "train": ("commands_train", "train"),
    "serve": ("commands_serve", "serve"),
}
GROUPS: dict[str, tuple[str, dict[str, tuple[str, str]]]] = {
    "model": ("Export encoders to ONNX.", {"export": ("commands_model", "export")}),
    "fusion": ("Learned fusion of dense and BM25 results.", {"fit": ("commands_fusion", "fit")}),
    "rules": (
        "Merchandising rules stored with the collection: pin, hide, boost, bury.",
        {
            "set": ("commands_rules", "set_rules"),
            "show": ("commands_rules", "show"),
            "test": ("commands_rules", "test"),
        },
    ),
    "synonyms": (
        "Synonyms stored with the collection: they widen the BM25 side of a query.",
        {
            "set": ("commands_synonyms", "set_synonyms"),
            "show": ("commands_synonyms", "show"),
        },
    ),
    "ranking": (
        "Business ranking stored with the collection: rank field weights, in-stock first.",
        {
            "set": ("commands_ranking", "set_ranking"),
            "show": ("commands_ranking", "show"),
        },
    ),
}

HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    name="shopsearch",
    help="Semantic, filtered, hybrid product search for online shops.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings=HELP_OPTIONS,
)
_registered: set[str] = set()


def register(names: set[str] | None = None) -> typer.Typer:
    """Add the named commands (default: all) to `app`, importing their modules."""
    for name in [*COMMANDS, *GROUPS]:
        if names is not None and name not in names:
            continue
        if name in _registered:
            continue
        if name in COMMANDS:
            module, function = COMMANDS[name]
            app.command(name)(_load(module, function))
        else:
            help_text, sub = GROUPS[name]
            group = typer.Typer(help=help_text, no_args_is_help=True, context_settings=HELP_OPTIONS)
            for sub_name, (module, function) in sub.items():
                group.command(sub_name)(_load(module, function))
            app.add_typer(group, name=name)
        _registered.add(name)
    return app


def _load(module: str, function: str) -> typer.models.CommandFunctionType:
    command = getattr(importlib.import_module(f"shopsearch.cli.{module}"), function)

    @functools.wraps(command)  # typer reads the signature through __wrapped__
    def interruptible(*args: Any, **kwargs: Any) -> Any:
        with _command_running():
            return command(*args, **kwargs)

    return interruptible


_sigint_in_command = False  # whether a Ctrl-C reached the running command


def _interrupt_command(signum: int, frame: object) -> None:
    """SIGINT while a command runs: Python's own handler, remembering that it fired."""
    global _sigint_in_command
    _sigint_in_command = True
    signal.default_int_handler(signum, frame)  # type: ignore[arg-type]


@contextmanager
def _command_running() -> Iterator[None]:
    """While a command runs, Ctrl-C raises KeyboardInterrupt (`run` has it end the process
    elsewhere), and the command ends as `Interrupted`: typer would turn the KeyboardInterrupt
    into a silent exit 130, telling the user nothing of what was kept.

    A library may turn the KeyboardInterrupt into an error of its own (onnxruntime
    interrupted while it initialises raises ImportError "initialization failed"): any error
    after a Ctrl-C reached the command is that Ctrl-C's doing, and ends as `Interrupted`."""
    global _sigint_in_command
    previous = signal.getsignal(signal.SIGINT)
    switch = previous is _end_interrupted
    if switch:
        _sigint_in_command = False
        signal.signal(signal.SIGINT, _interrupt_command)
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted() from None
    except Interrupted:
        raise
    except Exception:
        if switch and _sigint_in_command:
            raise Interrupted() from None
        raise
    finally:
        if switch:
            signal.signal(signal.SIGINT, previous)


def _invoked(argv: list[str]) -> set[str] | None:
    """The command named on the command line, or None (help, typo): register them all."""
    command = next((a for a in argv if not a.startswith("-")), None)
    known = COMMANDS.keys() | GROUPS.keys()
    if command in known and not {"--help", "-h"} & set(argv[: argv.index(command)]):
        return {command}
    return None


def _print_version(value: bool) -> None:
    if value:
        from shopsearch import __version__

        print(f"shopsearch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        # Eager: handled while parsing, before click asks for a command.
        typer.Option(
            "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    pass


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; typer handles usage errors, we render ours."""
    args = sys.argv[1:] if argv is None else argv
    try:
        try:
            register(_invoked(args))
            app(args=args, prog_name="shopsearch")
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except Interrupted as exc:
            _print_interrupted(str(exc))
            return exc.exit_code
        except ShopsearchError as exc:
            _print_error(str(exc))
            return exc.exit_code
        except OSError as exc:  # a file or device failing under a command: a fault, not a bug
            _print_error(_os_error_text(exc))
            return 1
    except KeyboardInterrupt:  # while importing a command, or while reporting an error
        _print_interrupted("")
        return 130
    return 0


def _print_interrupted(note: str) -> None:
    sys.stderr.write(f"interrupted: {note}\n" if note else "interrupted\n")
    sys.stderr.flush()


def _os_error_text(exc: OSError) -> str:
    """`[Errno 28] No space left on device: 'runs.jsonl'` as `runs.jsonl: no space left on
    device`."""
    reason = exc.strerror or str(exc)
    reason = reason[:1].lower() + reason[1:]
    names = [
        os.fsdecode(n) if isinstance(n, str | bytes) else str(n)
        for n in (exc.filename, exc.filename2)
        if n is not None
    ]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _print_error(message: str) -> None:
    # rich is imported only here and where a command renders for people: a `--json` query
    # skips its import, a noticeable share of a cold start.
    from rich.console import Console
    from rich.text import Text

    Console(stderr=True, highlight=False).print(
        Text.assemble(("error: ", "bold red"), message), soft_wrap=True
    )


# Commands that only read. When one returns, it has closed what it opened and written its
# output, so the process may end without the interpreter's teardown (freeing every module and
# the loaded shard), a noticeable share of a cold `shopsearch query` (benchmarks/RESULTS.md,
# section 4).
# Commands that write keep the normal exit, with every atexit handler run.
READ_ONLY_COMMANDS = frozenset({"query", "info"})


def run() -> None:
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not ignored (nohup, &)
        signal.signal(signal.SIGINT, _end_interrupted)
    args = sys.argv[1:]
    code = main(args)
    invoked = _invoked(args)
    if invoked and invoked <= READ_ONLY_COMMANDS:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:  # a closed pipe: let the normal exit report it
            sys.exit(code)
        os._exit(code)
    sys.exit(code)
