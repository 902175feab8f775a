"""Options shared by several commands, declared once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from shopsearch.encoders.manifest import DEFAULT_PRECISION as DEFAULT_PRECISION
from shopsearch.encoders.protocol import TextEncoder
from shopsearch.errors import UsageError
from shopsearch.store.connection import Connection

Collection = Annotated[
    str | None,
    typer.Option(
        "--collection", "-c", help="Collection name [env SHOPSEARCH_COLLECTION; default products]."
    ),
]
DataPath = Annotated[
    Path | None,
    typer.Option(
        "--path",
        help="Directory of embedded (Qdrant Edge) collections "
        "[env SHOPSEARCH_DATA_DIR; default ~/.local/share/shopsearch].",
    ),
]
QdrantUrl = Annotated[
    str | None,
    typer.Option(
        "--qdrant-url", help="Use a Qdrant server instead of the embedded store [env QDRANT_URL]."
    ),
]
ApiKey = Annotated[
    str | None, typer.Option("--api-key", help="Qdrant server API key [env QDRANT_API_KEY].")
]
ModelDir = Annotated[
    Path | None,
    typer.Option(
        "--model",
        help="Exported encoder directory [env SHOPSEARCH_MODEL_DIR; "
        "default ~/.cache/shopsearch/models/all-MiniLM-L6-v2].",
    ),
]
Precision = Annotated[
    str, typer.Option("--precision", help="Encoder weights: int8 (default) or fp32.")
]
Threads = Annotated[
    int | None, typer.Option("--threads", help="Encoder threads [default: all cores].", min=1)
]
Filters = Annotated[
    list[str] | None,
    typer.Option(
        "--filter",
        "-f",
        help="Payload filter, repeatable and ANDed: brand=DeWalt, price<=150, "
        "color in (red,blue), in_stock=true, brand!=X.",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
Bm25Weight = Annotated[
    float | None,
    typer.Option(
        "--bm25-weight",
        help="RRF: weight of the BM25 list against the dense list's 1 [default: 3]; "
        "1 for plain RRF.",
        show_default=False,
    ),
]
MinConfidence = Annotated[
    float | None,
    typer.Option(
        "--min-confidence",
        help="Drop the results whose calibrated confidence (the probability of relevance, "
        "0..1) is under this; the page is not refilled, and a sort orders only the products "
        "above it. `no confident match` means no result reaches the default cut (docs/cli.md).",
        show_default=False,
    ),
]
FUSION_HELP = (
    "adaptive (the default: DBSF, its first results re-ranked by how many query words each "
    "product holds), rrf (BM25's list weighted by --bm25-weight, 3 by default; a weight picks "
    "it), dbsf, or learned (the model `shopsearch fusion fit` stored with the collection)."
)
FixTypos = Annotated[
    bool,
    typer.Option(
        "--fix-typos/--no-fix-typos",
        help="Replace a query word no product uses by the catalog word one edit away.",
    ),
]


BoostFields = Annotated[
    list[str] | None,
    typer.Option(
        "--boost-field",
        help="FIELD:WEIGHT: add WEIGHT * f / (f + scale) of a rank field (`ingest "
        "--rank-field`) to each result's score, over the collection's stored ranking "
        "(`shopsearch ranking`); repeatable, weights from -10 to 10.",
        show_default=False,
    ),
]
InStockFirst = Annotated[
    bool,
    typer.Option(
        "--in-stock-first", help="Show products whose in_stock is false after all others."
    ),
]


def connection(
    collection: str | None, path: Path | None, url: str | None, api_key: str | None
) -> Connection:
    return Connection.from_options(collection=collection, path=path, url=url, api_key=api_key)


def load_encoder(
    model: Path | None, precision: str, threads: int | None, queries: Sequence[str] | None = None
) -> TextEncoder:
    """The encoder; given the `queries` a one-shot process will search, they are encoded in a
    forked child while the collection loads (`ForkedQueryEncoder`)."""
    if precision not in ("fp32", "int8"):
        raise UsageError(f"bad --precision {precision!r}: use fp32 or int8")
    if queries is not None:
        from shopsearch.encoders.forked_query import ForkedQueryEncoder

        return ForkedQueryEncoder.start(model, queries, precision, threads)  # type: ignore[arg-type]
    from shopsearch.encoders.onnx_encoder import OnnxEncoder

    return OnnxEncoder.load(model, precision=precision, threads=threads)  # type: ignore[arg-type]


def utf8_text(text: str, what: str) -> str:
    """`text` unchanged, or UsageError: an argument of invalid UTF-8 reaches Python with its
    bytes escaped as lone surrogates, which no tokenizer, JSON document or Qdrant request can
    carry. `what` names the argument ("the query")."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8: {text!r}") from None
    return text


def writable_file(path: Path | None, flag: str) -> None:
    """UsageError unless `path` (None: not given) can be written as a file: checked before a
    command does its work, so that a typo in an output path does not cost that work. An
    existing file is overwritten."""
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"{flag} {path} is a directory: give a file name")
    parent = path.absolute().parent
    if not parent.is_dir():
        missing = "is not a directory" if parent.exists() else "does not exist"
        raise UsageError(f"{flag} {path}: its directory {parent} {missing}")
    target = path if path.exists() else parent
    if not os.access(target, os.W_OK):
        raise UsageError(f"{flag} {path}: no permission to write {target}")


def writable_dir(path: Path | None, flag: str) -> None:
    """UsageError unless `path` (None: not given) is a directory, or can be made one, that this
    process may write in: checked before a command does its work. A missing directory is
    made later, by the command, with its missing parents."""
    if path is None:
        return
    if path.exists() and not path.is_dir():
        raise UsageError(f"{flag} {path} is a file, not a directory")
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{flag} {path}: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK):
        raise UsageError(f"{flag} {path}: no permission to write in {existing}")
