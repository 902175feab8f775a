"""Run the service: load the encoder and open the collection, then serve until stopped."""

from __future__ import annotations

from pathlib import Path

from shopsearch.encoders.manifest import Precision
from shopsearch.encoders.onnx_encoder import OnnxEncoder
from shopsearch.service import DEFAULT_SEARCH_THREADS
from shopsearch.service.batching import BatchingEncoder
from shopsearch.service.live import LiveCollection
from shopsearch.store.connection import Connection

GRACEFUL_SHUTDOWN_SECONDS = 30


def serve(
    connection: Connection,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    model: Path | None = None,
    precision: Precision = "int8",
    threads: int | None = None,
    search_threads: int = DEFAULT_SEARCH_THREADS,
    api_key: str | None = None,
) -> None:
    """Serve `connection`'s collection over HTTP at host:port until SIGINT or SIGTERM."""
    import uvicorn

    from shopsearch.service.app import create_app

    encoder = BatchingEncoder(OnnxEncoder.load(model, precision=precision, threads=threads))
    live = LiveCollection(
        connection.open, encoder, holder=f"shopsearch serve at http://{host}:{port}"
    )
    app = create_app(live, api_key=api_key, search_threads=search_threads)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    uvicorn.Server(config).run()
