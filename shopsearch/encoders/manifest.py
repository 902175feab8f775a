"""The contract between `model export` and the torch-free runtime encoder.

An exported directory is usable without sentence-transformers only if everything the runtime
must reproduce (pooling, normalisation, prompts, truncation length) is written down beside the
ONNX files. The manifest also pins every file by sha256, so a corrupted or swapped file is
caught, and derives a `fingerprint` that names the embedding space: collections record it, so
vectors from a different encoder are never mixed in silently.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from shopsearch.encoders.resolve import default_model_dir
from shopsearch.errors import ModelIntegrityError, ModelNotFoundError

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1
POOLING_MODES = ("mean", "cls", "max")

Pooling = Literal["mean", "cls", "max"]
Precision = Literal["fp32", "int8"]
# int8 keeps retrieval quality and encodes faster than fp32 (benchmarks/RESULTS.md, the
# int8 section and section 1); fp32 reproduces sentence-transformers.
DEFAULT_PRECISION: Precision = "int8"

_HASH_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large ONNX files never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What the runtime needs to turn text into the exported model's embeddings.

    `files` maps a precision ("fp32", "int8") to its ONNX file and `sha256` maps every file the
    runtime reads (relative path) to its digest. `directory` is where the manifest was loaded
    from or written to; it is not serialised.
    """

    model_name: str
    dimension: int
    max_seq_length: int
    pooling: Pooling
    normalize: bool
    query_prefix: str
    document_prefix: str
    tokenizer: str
    files: Mapping[str, str]
    sha256: Mapping[str, str]
    quantization_config: str | None = None
    format_version: int = FORMAT_VERSION
    directory: Path | None = field(default=None, compare=False, repr=False)

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space; the fp32 and int8 files of one export share it."""
        identity = {
            "fp32_sha256": self.sha256[self.files["fp32"]],
            "tokenizer_sha256": self.sha256[self.tokenizer],
            "pooling": self.pooling,
            "normalize": self.normalize,
            "query_prefix": self.query_prefix,
            "document_prefix": self.document_prefix,
            "max_seq_length": self.max_seq_length,
        }
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def path(self, relative: str) -> Path:
        """Absolute path of a file named in the manifest."""
        if self.directory is None:
            raise ModelNotFoundError("this manifest was not loaded from a model directory")
        return self.directory / relative

    def model_file(self, precision: Precision) -> Path:
        """The ONNX file for a precision, or ModelNotFoundError when the export lacks it."""
        relative = self.files.get(precision)
        if relative is None:
            available = ", ".join(self.files) or "none"
            raise ModelNotFoundError(
                f"the model in {self.directory} has no {precision} file (available: {available}); "
                "use --precision with one of those, or re-run `shopsearch model export` with "
                "quantisation enabled"
            )
        return self.path(relative)

    def verify(self, files: Iterable[str] | None = None) -> None:
        """Recompute sha256 of `files` (default: all recorded); ModelIntegrityError on mismatch."""
        for relative in self.sha256 if files is None else files:
            expected = self.sha256.get(relative)
            if expected is None:
                raise ModelIntegrityError(f"{relative} has no sha256 in {self._manifest_path()}")
            target = self.path(relative)
            if not target.is_file():
                raise ModelIntegrityError(
                    f"{target} is missing but listed in {self._manifest_path()}; "
                    "re-export the model"
                )
            actual = sha256_file(target)
            if actual != expected:
                raise ModelIntegrityError(
                    f"{target} is corrupted or was replaced: sha256 {actual} does not match "
                    f"{expected} in {self._manifest_path()}; re-export the model"
                )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        del data["directory"]
        data["files"] = dict(self.files)
        data["sha256"] = dict(sorted(self.sha256.items()))
        return data

    def write(self, directory: Path) -> Manifest:
        """Write `manifest.json` into `directory`; returns the manifest bound to it."""
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"
        (directory / MANIFEST_FILE).write_text(text, encoding="utf-8")
        return replace(self, directory=directory)

    @classmethod
    def load(cls, directory: Path | None = None) -> Manifest:
        """Read `manifest.json` from `directory` (default: `default_model_dir()`);
        ModelNotFoundError when there is no export there."""
        directory = Path(directory) if directory is not None else default_model_dir()
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise ModelNotFoundError(
                f"no exported model at {directory}; run `shopsearch model export` "
                "(or point SHOPSEARCH_MODEL_DIR at an exported model)"
            )
        try:
            data = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelIntegrityError(f"cannot read {manifest_path}: {exc}") from exc
        return cls.from_dict(data, directory=directory, source=manifest_path)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], directory: Path | None = None, source: Path | None = None
    ) -> Manifest:
        where = source or "the manifest"
        if not isinstance(data, Mapping):
            raise ModelIntegrityError(f"{where} is not a JSON object")
        version = data.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ModelIntegrityError(
                f"{where} has format_version {version!r}; this shopsearch reads up to "
                f"{FORMAT_VERSION}: upgrade shopsearch or re-export the model"
            )
        names = {f.name for f in fields(cls)} - {"directory"}
        missing = sorted(n for n in names if n not in data and n != "quantization_config")
        if missing:
            raise ModelIntegrityError(f"{where} is missing {', '.join(missing)}")
        manifest = cls(**{k: v for k, v in data.items() if k in names}, directory=directory)
        manifest._check(where)
        return manifest

    def _check(self, where: object) -> None:
        if self.pooling not in POOLING_MODES:
            raise ModelIntegrityError(f"{where}: unsupported pooling {self.pooling!r}")
        if "fp32" not in self.files:
            raise ModelIntegrityError(f"{where}: no fp32 model listed under files")
        unpinned = [f for f in (self.tokenizer, *self.files.values()) if f not in self.sha256]
        if unpinned:
            raise ModelIntegrityError(f"{where}: no sha256 for {', '.join(unpinned)}")

    def _manifest_path(self) -> Path | str:
        return self.directory / MANIFEST_FILE if self.directory else MANIFEST_FILE


class ManifestIdentity:
    """`name`, `dimension` and `fingerprint` of an encoder, read from its export's manifest, so
    that every encoder of one export (in-process or forked) names the same embedding space."""

    _manifest: Manifest

    @property
    def name(self) -> str:
        return self._manifest.model_name

    @property
    def dimension(self) -> int:
        return self._manifest.dimension

    @property
    def fingerprint(self) -> str:
        return self._manifest.fingerprint
