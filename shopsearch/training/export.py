"""sentence-transformers model -> ONNX files + manifest for the torch-free runtime.

Export reuses sentence-transformers' own ONNX export and graph fusion, then onnxruntime's
dynamic int8 quantisation with optimum's per-CPU settings, so the directory it writes is also
loadable with `SentenceTransformer(dir, backend="onnx")` for benchmarks. It needs the `train`
extra, imported lazily, so a plain install can import this package and only fails, with a
clear message, when an export is actually attempted.

The runtime reproduces only Transformer -> Pooling (mean/cls/max) [-> Normalize]; anything else
is refused here rather than exported into silently different embeddings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from shopsearch.encoders.manifest import MANIFEST_FILE, POOLING_MODES, Manifest, sha256_file
from shopsearch.encoders.resolve import (
    _BUNDLED_MINILM_NAMES,
    DEFAULT_BASE_MODEL,
    resolve_base_model,
)
from shopsearch.errors import (
    MissingExtraError,
    ModelIntegrityError,
    ModelNotFoundError,
    ShopsearchError,
    UsageError,
)
from shopsearch.training.cpu_features import cpu_flags

QUANTIZATION_CONFIGS = ("arm64", "avx2", "avx512", "avx512_vnni")
FP32_FILE = "onnx/model.onnx"
TOKENIZER_FILE = "tokenizer.json"
_DOCUMENT_PROMPT_NAMES = ("document", "passage", "corpus")  # sentence-transformers' order


def export_model(
    model: str | None,
    out_dir: Path,
    quantize: bool = True,
    quantization_config: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Manifest:
    """Export `model` (name or path; default all-MiniLM-L6-v2) to `out_dir` and return its manifest.

    Writes fp32 ONNX and, with `quantize`, an int8 dynamically quantised copy (config picked from
    this CPU unless given). The export is staged beside `out_dir` and renamed into place, so a
    failure never leaves a half-written model; an existing export in `out_dir` is replaced.
    """
    report = progress or (lambda _message: None)
    config = _pick_quantization_config(quantization_config) if quantize else None
    out_dir = Path(out_dir).expanduser().absolute()
    _check_target(out_dir)

    source = resolve_base_model(model)
    is_local = Path(source).is_dir()
    model_name = _display_name(model, source, is_local)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkdtemp: its 0700 mode would survive the rename into place.
    staging = out_dir.with_name(f".{out_dir.name}.partial-{uuid.uuid4().hex[:8]}")
    staging.mkdir()
    try:
        with _hub_offline(is_local), warnings.catch_warnings():
            # torch's tracer and transformers emit pages of export warnings nobody can act on.
            warnings.simplefilter("ignore")
            st_model = _load_onnx_model(source, report)
            spec = _describe(st_model)
            report(f"writing fp32 ONNX to {out_dir}")
            st_model.save_pretrained(str(staging))
            files = {"fp32": FP32_FILE}
            if config is not None:
                report(f"quantising to int8 ({config})")
                files["int8"] = _quantize(st_model, config, staging, report)
        manifest = _write_manifest(staging, model_name, spec, files, config)
        _install(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report(f"exported {model_name} ({manifest.dimension} dims) to {out_dir}")
    return Manifest.load(out_dir)


def default_quantization_config() -> str:
    """The int8 config suited to this CPU: avx512_vnni / avx2 on x86, arm64 on ARM."""
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return "arm64"
    if machine in ("x86_64", "amd64", "x86", "i386", "i686"):
        return "avx512_vnni" if "avx512_vnni" in cpu_flags() else "avx2"
    raise UsageError(
        f"no default int8 quantisation for CPU {machine!r}; pass a quantization config "
        f"({', '.join(QUANTIZATION_CONFIGS)}) or export without quantisation"
    )


def _pick_quantization_config(requested: str | None) -> str:
    config = requested or default_quantization_config()
    if config not in QUANTIZATION_CONFIGS:
        raise UsageError(
            f"unknown quantization config {config!r}; "
            f"choose one of {', '.join(QUANTIZATION_CONFIGS)}"
        )
    return config


def _display_name(requested: str | None, source: str, is_local: bool) -> str:
    """The name recorded in the manifest: the hub name, or a local directory's own name."""
    if requested is None or requested.lower() in _BUNDLED_MINILM_NAMES:
        return DEFAULT_BASE_MODEL
    if is_local and Path(requested).expanduser().is_dir():
        return Path(source).name
    return requested


def _check_target(out_dir: Path) -> None:
    """Refuse to replace anything but an earlier export (or an empty directory)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise UsageError(f"{out_dir} exists and is not a directory")
    if any(out_dir.iterdir()) and not (out_dir / MANIFEST_FILE).is_file():
        raise UsageError(
            f"refusing to export into {out_dir}: it is not empty and holds no exported model"
        )


@contextlib.contextmanager
def _hub_offline(enabled: bool) -> Iterator[None]:
    """Keep huggingface_hub off the network while exporting a model that is already on disk."""
    if not enabled:
        yield
        return
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def _load_onnx_model(source: str, report: Callable[[str], None]) -> Any:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        raise MissingExtraError(
            "exporting a model needs sentence-transformers and optimum: "
            "pip install 'shopsearch[train]'"
        ) from exc
    report(f"loading {source} and converting it to ONNX")
    # sentence-transformers logs advice to save_pretrained() into the source directory
    # (site-packages, for the bundled model) and transformers deprecation notes from
    # optimum's calls; we save into out_dir ourselves and users cannot act on the rest.
    loggers = [logging.getLogger(n) for n in ("sentence_transformers", "transformers")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        return SentenceTransformer(
            source, backend="onnx", device="cpu", model_kwargs={"export": True}
        )
    except ImportError as exc:
        raise MissingExtraError(
            f"ONNX export needs optimum-onnx ({exc}): pip install 'shopsearch[train]'"
        ) from exc
    except ShopsearchError:
        raise
    except Exception as exc:
        raise ModelNotFoundError(f"cannot load base model {source!r}: {exc}") from exc
    finally:
        for lg, lvl in zip(loggers, levels, strict=True):
            lg.setLevel(lvl)


def _describe(st_model: Any) -> dict[str, Any]:
    """Read what the runtime must reproduce; refuse module stacks it cannot reproduce."""
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer

    modules = list(st_model)
    kinds = [type(m).__name__ for m in modules]
    shape_ok = (
        len(modules) in (2, 3)
        and isinstance(modules[0], Transformer)
        and isinstance(modules[1], Pooling)
        and (len(modules) == 2 or isinstance(modules[2], Normalize))
    )
    if not shape_ok:
        raise UsageError(
            f"cannot export modules {' -> '.join(kinds)}: the ONNX encoder supports "
            "Transformer -> Pooling [-> Normalize] only"
        )
    pooling = modules[1]
    mode = pooling.pooling_mode
    if isinstance(mode, (list, tuple)) and len(mode) == 1:
        mode = mode[0]
    if mode not in POOLING_MODES:
        raise UsageError(
            f"cannot export pooling {mode!r}: the ONNX encoder supports {', '.join(POOLING_MODES)}"
        )
    if getattr(st_model, "truncate_dim", None) is not None:
        raise UsageError("cannot export a model with truncate_dim set; export the full model")

    prompts = dict(getattr(st_model, "prompts", None) or {})
    query_prefix = prompts.get("query", "")
    document_prefix = next((prompts[n] for n in _DOCUMENT_PROMPT_NAMES if n in prompts), "")
    if (query_prefix or document_prefix) and not getattr(pooling, "include_prompt", True):
        raise UsageError("cannot export a model whose pooling excludes its prompt tokens")

    max_seq_length = st_model.max_seq_length
    dimension = st_model.get_embedding_dimension()
    if not max_seq_length or not dimension:
        raise UsageError("the model does not declare its max_seq_length and embedding dimension")
    return {
        "dimension": int(dimension),
        "max_seq_length": int(max_seq_length),
        "pooling": mode,
        "normalize": len(modules) == 3,
        "query_prefix": query_prefix,
        "document_prefix": document_prefix,
    }


def _quantize(st_model: Any, config: str, staging: Path, report: Callable[[str], None]) -> str:
    """Write the int8 model, fused first; returns its path relative to `staging`.

    onnxruntime's transformer optimizer (sentence-transformers' "O2" export) fuses each layer's
    ~100 nodes into Attention / SkipLayerNormalization / BiasGelu kernels, which quantise into
    one QAttention per layer: a single query runs faster and the session loads faster, at the
    same agreement with fp32, while large batches of titles run slightly slower
    (benchmarks/RESULTS.md, the encoder throughput section). optimum's quantizer cannot type the
    fused graph, so onnxruntime's `quantize_dynamic` runs with optimum's settings for `config`.
    Architectures the optimizer does not know are quantised unfused.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import quantize_dynamic
    from optimum.onnxruntime.configuration import AutoQuantizationConfig
    from sentence_transformers.backend import export_optimized_onnx_model

    settings = getattr(AutoQuantizationConfig, config)(is_static=False)
    onnx_dir = staging / "onnx"
    fused = onnx_dir / "model_O2.onnx"
    try:
        export_optimized_onnx_model(st_model, "O2", str(staging))
    except Exception as exc:  # optimum raises several types for unsupported architectures
        report(f"graph fusion unavailable ({exc}); quantising the unfused graph")
    graph = fused if fused.is_file() else staging / FP32_FILE
    target = onnx_dir / f"model_qint8_{config}.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_dynamic's "consider pre-processing" advice
    try:
        quantize_dynamic(
            graph,
            target,
            op_types_to_quantize=list(settings.operators_to_quantize),
            per_channel=settings.per_channel,
            reduce_range=settings.reduce_range,
            weight_type=settings.weights_dtype,
            extra_options={
                "DefaultTensorType": TensorProto.FLOAT,
                "WeightSymmetric": settings.weights_symmetric,
                "ActivationSymmetric": settings.activations_symmetric,
            },
        )
    finally:
        root.setLevel(level)
        fused.unlink(missing_ok=True)
    return target.relative_to(staging).as_posix()


def _write_manifest(
    staging: Path,
    model_name: str,
    spec: dict[str, Any],
    files: dict[str, str],
    config: str | None,
) -> Manifest:
    runtime_files = [TOKENIZER_FILE, *files.values()]
    missing = [f for f in runtime_files if not (staging / f).is_file()]
    if missing:
        raise ModelIntegrityError(f"export did not produce {', '.join(missing)}")
    manifest = Manifest(
        model_name=model_name,
        tokenizer=TOKENIZER_FILE,
        files=files,
        sha256={f: sha256_file(staging / f) for f in runtime_files},
        quantization_config=config,
        **spec,
    )
    return manifest.write(staging)


def _install(staging: Path, out_dir: Path) -> None:
    """Move the finished export into place, replacing an earlier one only once it is complete."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    retired = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, retired)
    try:
        os.replace(staging, out_dir)
    except BaseException:
        os.replace(retired, out_dir)
        raise
    shutil.rmtree(retired, ignore_errors=True)
