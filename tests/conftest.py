"""Shared fixtures. The real base model is exported once per session: it takes ~15 s."""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of all-MiniLM-L6-v2 exported to ONNX (fp32 + int8) with its manifest."""
    from shopsearch.encoders.export import export_model

    out_dir = tmp_path_factory.mktemp("exported") / "all-MiniLM-L6-v2"
    export_model(None, out_dir)
    return out_dir
