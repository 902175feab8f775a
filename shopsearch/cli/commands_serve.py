"""`shopsearch serve`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from shopsearch.cli import options as opt
from shopsearch.errors import MissingExtraError, UsageError
from shopsearch.service import DEFAULT_SEARCH_THREADS


def serve(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")
    ] = 8000,
    collection: opt.Collection = None,
    path: opt.DataPath = None,
    qdrant_url: opt.QdrantUrl = None,
    qdrant_api_key: Annotated[
        str | None,
        typer.Option("--qdrant-api-key", help="Qdrant server API key [env QDRANT_API_KEY]."),
    ] = None,
    model: opt.ModelDir = None,
    precision: opt.Precision = opt.DEFAULT_PRECISION,
    threads: opt.Threads = None,
    search_threads: Annotated[
        int | None,
        typer.Option(
            "--search-threads",
            min=1,
            max=1_000,
            help=f"Searches a process works on at once; more wait their turn in arrival order. "
            "1: the lowest tail latency at a moderate load; more: concurrent searches batched, "
            f"the most throughput under a heavy one. [default: {DEFAULT_SEARCH_THREADS}; 1 "
            "with --workers]",
            show_default=False,
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            min=1,
            max=64,
            help="Processes serving the port. One process's searches take turns on one "
            "interpreter lock: one worker per core uses them all. An embedded collection is "
            "copied for each worker but the first, which takes the writes. With workers, "
            "--threads defaults to the cores / workers.",
        ),
    ] = 1,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            help="Key that writes (PUT/DELETE /products) must send [env SHOPSEARCH_API_KEY]; "
            "without one, writes are open to anyone who can reach the service.",
        ),
    ] = None,
) -> None:
    """Serve the collection over HTTP: search, product updates, health and metrics
    (OpenAPI at /docs). Stop with Ctrl-C or SIGTERM: requests in flight finish first."""
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(
            f"shopsearch serve needs the serve extra ({exc.name} is missing): "
            "pip install 'shopsearch[serve]'"
        ) from None
    if precision not in ("fp32", "int8"):
        raise UsageError(f"bad --precision {precision!r}: use fp32 or int8")
    key = api_key or os.environ.get("SHOPSEARCH_API_KEY") or None
    if workers > 1:
        from shopsearch.service.workers import serve_workers

        serve_workers(
            opt.connection(collection, path, qdrant_url, qdrant_api_key),
            workers,
            host=host,
            port=port,
            model=model,
            precision=precision,
            threads=threads,
            search_threads=search_threads,
            api_key=key,
        )
        return
    from shopsearch.service.server import serve as run

    run(
        opt.connection(collection, path, qdrant_url, qdrant_api_key),
        host=host,
        port=port,
        model=model,
        precision=precision,  # type: ignore[arg-type]
        threads=threads,
        search_threads=search_threads or DEFAULT_SEARCH_THREADS,
        api_key=key,
    )
