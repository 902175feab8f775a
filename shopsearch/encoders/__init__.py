"""Encoders: exported ONNX models run with onnxruntime, so ingest and query never need torch.

Only the runtime pieces are imported here. Export (`shopsearch.encoders.export.export_model`)
needs the `train` extra and is imported where it is used.
"""

from shopsearch.encoders.manifest import Manifest
from shopsearch.encoders.onnx_encoder import OnnxEncoder
from shopsearch.encoders.resolve import default_model_dir, resolve_base_model

__all__ = ["Manifest", "OnnxEncoder", "default_model_dir", "resolve_base_model"]
