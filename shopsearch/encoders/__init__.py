"""Encoders: exported ONNX models run with onnxruntime, so ingest and query never need torch.

Names are imported on first use (PEP 562), so that importing one light submodule (the manifest,
the protocol) does not import onnxruntime: a cold `shopsearch query` loads that in a forked child
(`forked_query`). Export (`shopsearch.training.export.export_model`) needs the `train` extra and
is imported where it is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shopsearch.encoders.manifest import Manifest
    from shopsearch.encoders.onnx_encoder import OnnxEncoder
    from shopsearch.encoders.resolve import default_model_dir, resolve_base_model

_HOMES = {
    "Manifest": "shopsearch.encoders.manifest",
    "OnnxEncoder": "shopsearch.encoders.onnx_encoder",
    "default_model_dir": "shopsearch.encoders.resolve",
    "resolve_base_model": "shopsearch.encoders.resolve",
}

__all__ = ["Manifest", "OnnxEncoder", "default_model_dir", "resolve_base_model"]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
