"""Text -> embeddings on a plain CPU without torch, for the ingest and query paths.

Importing sentence-transformers costs seconds and gigabytes; the query path must start in a
fraction of a second. This encoder reproduces a sentence-transformers model from its ONNX export
with only `tokenizers`, `onnxruntime` and `numpy`, following the manifest written at export time
(pooling, normalisation, prompts, truncation). fp32 texts are batched by token length so that a
batch of short queries is never padded to the length of one long product description; int8 texts
go one per run, since int8 vectors of a batch depend on each other (`_one_per_run`).

Many batches run side by side, one per CPU on a single-threaded session, rather than one after
another on a multi-threaded session: a MiniLM batch of short titles is too small a job to split
across cores without the threads waiting on each other (benchmarks/RESULTS.md section 1).
One text, the query path, still gets all the threads.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from shopsearch.encoders.manifest import (
    DEFAULT_PRECISION,
    Manifest,
    ManifestIdentity,
    Precision,
    check_threads,
)
from shopsearch.errors import ModelIntegrityError, UsageError

_PRECISIONS = ("fp32", "int8")
_ONNX_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}
_HIDDEN_STATE_OUTPUT = "last_hidden_state"


class OnnxEncoder(ManifestIdentity):
    """An exported sentence-transformers model, run by onnxruntime.

    Build it with `OnnxEncoder.load`. Embeddings are float32 rows in input order, L2-normalised
    when the source model normalises. Instances are safe to share between threads: onnxruntime
    sessions and tokenizers are re-entrant and `encode` keeps no state between calls.
    """

    def __init__(
        self,
        manifest: Manifest,
        session: ort.InferenceSession,
        tokenizer: Tokenizer,
        precision: Precision,
        batch_size: int,
        pad_id: int = 0,
    ) -> None:
        self._manifest = manifest
        self._session = session
        self._tokenizer = tokenizer
        self._precision = precision
        self._batch_size = batch_size
        self._pad_id = pad_id
        self._threads = session.get_session_options().intra_op_num_threads
        self._bulk: tuple[ort.InferenceSession, ThreadPoolExecutor] | None = None
        self._bulk_lock = threading.Lock()
        declared = {node.name: node.type for node in session.get_inputs()}
        self._id_dtype = _ONNX_INT_TYPES.get(declared.get("input_ids", ""), np.int64)
        self._feeds_attention_mask = "attention_mask" in declared
        self._feeds_token_type_ids = "token_type_ids" in declared
        outputs = [node.name for node in session.get_outputs()]
        self._output = _HIDDEN_STATE_OUTPUT if _HIDDEN_STATE_OUTPUT in outputs else outputs[0]

    @classmethod
    def load(
        cls,
        model_dir: Path | None = None,
        precision: Precision = DEFAULT_PRECISION,
        threads: int | None = None,
        batch_size: int = 16,
        verify: bool = True,
    ) -> OnnxEncoder:
        """Open an exported model (default: `default_model_dir()`).

        `threads` (default: all CPUs; at most `THREADS_PER_CPU` per CPU) is onnxruntime's
        intra-op thread count for one text and the number of batches encoded side by side for
        many. `verify` checks the files this precision reads against the manifest's sha256
        before loading them (`Manifest.check_files`: each file is hashed once, then known by
        its stat signature), so a damaged file never yields vectors under the export's
        fingerprint; ModelIntegrityError names the file.
        """
        if precision not in _PRECISIONS:
            raise UsageError(
                f"precision must be one of {', '.join(_PRECISIONS)}, not {precision!r}"
            )
        if batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, not {batch_size}")
        check_threads(threads)

        manifest = Manifest.load(model_dir)
        model_path = manifest.model_file(precision)
        tokenizer_path = manifest.path(manifest.tokenizer)
        if verify:
            manifest.check_files([manifest.tokenizer, manifest.files[precision]])
        for needed in (model_path, tokenizer_path):
            if not needed.is_file():
                raise ModelIntegrityError(
                    f"{needed} is missing but listed in the manifest; re-export the model"
                )

        tokenizer, pad_id = _load_tokenizer(tokenizer_path, manifest.max_seq_length)
        session = _open_session(model_path, threads or os.cpu_count() or 1)
        return cls(manifest, session, tokenizer, precision, batch_size, pad_id)

    @property
    def precision(self) -> Precision:
        return self._precision

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        """Embed search queries (with the model's query prompt, if it has one).

        int8 texts are embedded one per run (`_one_per_run`), so that `query --batch` and
        `eval` rank as `shopsearch query` does."""
        return self.encode(texts, self._manifest.query_prefix, self._one_per_run)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Embed product texts (with the model's document prompt, if it has one).

        int8 texts are embedded one per run (`_one_per_run`), so that a product's vector is
        the same whichever products an ingest encodes beside it: a resumed ingest, a daily
        sync that encodes only the changed products and a clean ingest store the same
        vectors, and so rank the same (benchmarks/reproducibility.py)."""
        return self.encode(texts, self._manifest.document_prefix, self._one_per_run)

    @property
    def _one_per_run(self) -> int | None:
        """The batch size that makes a text's vector depend on that text alone: 1 for int8,
        whose dynamic quantisation scales activations over the whole batch tensor (padding
        included), so a batched text's vector moves with its batch-mates (cosine down to
        0.985); the encoder's own for fp32, whose rows are computed independently. The
        runs still go side by side on the bulk workers, and short texts pad to nothing, so
        one text per run encodes product texts about as fast (RESULTS.md section 1)."""
        return 1 if self._precision == "int8" else None

    def encode(
        self, texts: Sequence[str], prefix: str = "", batch_size: int | None = None
    ) -> np.ndarray:
        """Embed `texts` with `prefix` prepended: float32 array of shape (len(texts), dimension).
        `batch_size` overrides the encoder's own."""
        if isinstance(texts, str):
            raise UsageError("encode takes a sequence of texts, not a single string")
        count = len(texts)
        if count == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        inputs = [prefix + text for text in texts] if prefix else list(texts)
        if count == 1:
            return self._embed(self._session, [self._tokenizer.encode(inputs[0])])

        encodings = self._tokenizer.encode_batch(inputs)
        lengths = np.fromiter((len(e.ids) for e in encodings), dtype=np.int64, count=count)
        order = np.argsort(lengths, kind="stable")
        size = batch_size or self._batch_size
        chunks = [order[i : i + size] for i in range(0, count, size)]
        result = np.empty((count, self.dimension), dtype=np.float32)
        if len(chunks) == 1 or self._threads == 1:
            for chunk in chunks:
                result[chunk] = self._embed(self._session, [encodings[i] for i in chunk])
            return result

        session, pool = self._bulk_runner()
        embedded = pool.map(
            lambda chunk: self._embed(session, [encodings[i] for i in chunk]), chunks
        )
        for chunk, rows in zip(chunks, embedded, strict=True):
            result[chunk] = rows
        return result

    def _bulk_runner(self) -> tuple[ort.InferenceSession, ThreadPoolExecutor]:
        """A single-threaded session and one worker per thread, opened on first bulk use."""
        with self._bulk_lock:
            if self._bulk is None:
                session = _open_session(self._manifest.model_file(self._precision), 1)
                self._bulk = (session, ThreadPoolExecutor(self._threads, "onnx-encoder"))
            return self._bulk

    def _embed(self, session: ort.InferenceSession, encodings: Sequence[Encoding]) -> np.ndarray:
        """Pad one batch to its own longest row, run the graph, pool and normalise."""
        width = max(len(e.ids) for e in encodings)
        shape = (len(encodings), width)
        input_ids = np.full(shape, self._pad_id, dtype=self._id_dtype)
        attention_mask = np.zeros(shape, dtype=self._id_dtype)
        token_type_ids = (
            np.zeros(shape, dtype=self._id_dtype) if self._feeds_token_type_ids else None
        )
        for row, encoding in enumerate(encodings):
            length = len(encoding.ids)
            input_ids[row, :length] = encoding.ids
            attention_mask[row, :length] = 1
            if token_type_ids is not None:
                token_type_ids[row, :length] = encoding.type_ids

        feed = {"input_ids": input_ids}
        if self._feeds_attention_mask:
            feed["attention_mask"] = attention_mask
        if token_type_ids is not None:
            feed["token_type_ids"] = token_type_ids
        hidden = session.run([self._output], feed)[0]
        pooled = _pool(hidden, attention_mask, self._manifest.pooling)
        if self._manifest.normalize:
            norms = np.linalg.norm(pooled, axis=1, keepdims=True)
            pooled /= np.maximum(norms, 1e-12)
        return pooled

    def __repr__(self) -> str:
        return (
            f"OnnxEncoder(name={self.name!r}, precision={self.precision!r}, "
            f"dimension={self.dimension}, directory={str(self._manifest.directory)!r})"
        )


def _pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """Pool token states as sentence-transformers' Pooling module does (float32 out)."""
    if mode == "cls":
        return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
    mask = attention_mask.astype(np.float32)
    if mode == "max":
        masked = np.where(mask[:, :, None] > 0, hidden, np.float32(-1e9))
        return masked.max(axis=1).astype(np.float32, copy=False)
    summed = np.einsum("bld,bl->bd", hidden, mask, dtype=np.float32)
    counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
    return summed / counts


def _load_tokenizer(path: Path, max_seq_length: int) -> tuple[Tokenizer, int]:
    """Truncate like sentence-transformers; pad ourselves, so per-batch padding is minimal."""
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:
        raise ModelIntegrityError(f"cannot read tokenizer {path}: {exc}") from exc
    padding = tokenizer.padding
    pad_id = int(padding["pad_id"]) if padding else 0
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_seq_length)
    return tokenizer, pad_id


def _open_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelIntegrityError(f"onnxruntime cannot load {path}: {exc}") from exc
