"""Shared fixtures. The real base model is exported once per session: it takes ~15 s."""

import socket
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of all-MiniLM-L6-v2 exported to ONNX (fp32 + int8) with its manifest."""
    from shopsearch.encoders.export import export_model

    out_dir = tmp_path_factory.mktemp("exported") / "all-MiniLM-L6-v2"
    export_model(None, out_dir)
    return out_dir


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (bound, then released): an unreachable server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
