"""The one thing search and ingest need from an encoder.

Kept as a structural protocol so the ONNX runtime encoder (the default, torch-free) and a
sentence-transformers model (training, benchmarks) are interchangeable without either
package importing the other.
"""

from collections.abc import Sequence
from typing import Protocol

import numpy as np


class TextEncoder(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def dimension(self) -> int: ...

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space: same fingerprint, comparable vectors."""
        ...

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray: ...
