"""Model files are checked against the manifest's sha256 whenever an encoder loads them.

A flipped byte in an ONNX file still loads and still embeds, only differently: without the
check, ingest would store those vectors under the export's fingerprint. Each file is hashed
once; its digest is cached by its stat signature (`DigestCache`), so a warm load only stats.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from shopsearch.encoders.manifest import MANIFEST_FILE, DigestCache, Manifest, verified_cache_path
from shopsearch.encoders.onnx_encoder import OnnxEncoder
from shopsearch.errors import ModelIntegrityError, UsageError

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"
QUERY = "women's casual shoes"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test starts from an empty verified-files cache of its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "shopsearch" / "verified.json"


@pytest.fixture
def model_dir(exported_model: Path, tmp_path: Path) -> Path:
    """A copy whose manifest, tokenizer and int8 file may be altered; fp32 is a symlink."""
    target = tmp_path / "model"
    (target / "onnx").mkdir(parents=True)
    manifest = Manifest.load(exported_model)
    for name in (MANIFEST_FILE, manifest.tokenizer, manifest.files["int8"]):
        shutil.copy2(exported_model / name, target / name)
    fp32 = manifest.files["fp32"]
    (target / fp32).symlink_to(exported_model / fp32)
    return target


def _int8(model_dir: Path) -> Path:
    return model_dir / Manifest.load(model_dir).files["int8"]


def _flip_a_weight(path: Path) -> None:
    """Flip one byte of the weights (three quarters into the file: a layer's raw tensor data,
    past the word embeddings), keeping the file's size and mtime: the change is invisible but
    to a hash and to ctime."""
    before = path.stat()
    with path.open("r+b") as handle:
        handle.seek(before.st_size * 3 // 4)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x5A]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def _run_cli(*args: str | bytes, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shopsearch", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


def test_a_flipped_byte_is_refused_at_load(model_dir: Path) -> None:
    original = OnnxEncoder.load(model_dir, precision="int8").encode_queries([QUERY])
    _flip_a_weight(_int8(model_dir))
    # Unchecked, the damaged model loads and embeds differently: the silent corruption.
    damaged = OnnxEncoder.load(model_dir, precision="int8", verify=False)
    assert not np.allclose(damaged.encode_queries([QUERY]), original, atol=1e-6)
    with pytest.raises(ModelIntegrityError, match=r"model_qint8.*corrupted.*re-export"):
        OnnxEncoder.load(model_dir, precision="int8")


def test_a_wrong_sha256_in_the_manifest_is_refused_on_a_warm_cache(
    model_dir: Path, own_cache: Path
) -> None:
    OnnxEncoder.load(model_dir)  # hashes and caches the tokenizer and int8 file
    assert own_cache.is_file()
    data = json.loads((model_dir / MANIFEST_FILE).read_text())
    data["sha256"]["tokenizer.json"] = "0" * 64
    (model_dir / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match=r"tokenizer\.json .*does not match 0{64}"):
        OnnxEncoder.load(model_dir)


def test_each_file_is_hashed_once_and_known_by_its_stat_signature(
    model_dir: Path, own_cache: Path
) -> None:
    manifest = Manifest.load(model_dir)
    int8 = _int8(model_dir)
    assert DigestCache.open().digest(int8, int8.stat()) is None
    OnnxEncoder.load(model_dir)
    cached = DigestCache.open()
    assert cached.digest(int8, int8.stat()) == manifest.sha256[manifest.files["int8"]]
    tokenizer = model_dir / manifest.tokenizer
    assert cached.digest(tokenizer, tokenizer.stat()) == manifest.sha256[manifest.tokenizer]
    # A second load rewrites nothing: it found both digests by stat alone.
    written = own_cache.stat().st_mtime_ns
    OnnxEncoder.load(model_dir)
    assert own_cache.stat().st_mtime_ns == written
    # Same size, same mtime, one byte changed: ctime moved, so the file is hashed again.
    _flip_a_weight(int8)
    assert DigestCache.open().digest(int8, int8.stat()) is None
    with pytest.raises(ModelIntegrityError, match="model_qint8"):
        OnnxEncoder.load(model_dir)


def test_an_unreadable_or_unwritable_cache_only_costs_a_rehash(
    model_dir: Path, own_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own_cache.parent.mkdir(parents=True)
    own_cache.write_text("{not json")
    OnnxEncoder.load(model_dir)
    assert json.loads(own_cache.read_text())["version"] == 1
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))
    OnnxEncoder.load(model_dir)
    _flip_a_weight(_int8(model_dir))
    with pytest.raises(ModelIntegrityError, match="model_qint8"):
        OnnxEncoder.load(model_dir)
    assert verified_cache_path() == blocked / "shopsearch" / "verified.json"


def test_the_forked_child_path_raises_the_integrity_error(model_dir: Path) -> None:
    """The one-shot query encoder loads the model in a forked child; a damaged file fails
    the child, and the in-process encoder that takes over names the file. Fresh interpreter:
    the fork needs a process without onnxruntime loaded."""
    _flip_a_weight(_int8(model_dir))
    code = f"""
        import json
        from shopsearch.encoders.forked_query import ForkedQueryEncoder
        from shopsearch.errors import ModelIntegrityError

        encoder = ForkedQueryEncoder.start({str(model_dir)!r}, [{QUERY!r}], "int8")
        try:
            encoder.encode_queries([{QUERY!r}])
            error = None
        except ModelIntegrityError as exc:
            error = str(exc)
        print(json.dumps({{"forked": encoder.forked, "error": error}}))
    """
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["forked"] is True
    assert report["error"] is not None and "model_qint8" in report["error"]


@pytest.fixture
def demo_slice(tmp_path: Path) -> Path:
    import pyarrow.parquet as pq

    catalog = tmp_path / "demo.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 40), catalog)
    return catalog


def test_cli_ingest_and_query_refuse_a_damaged_model(
    model_dir: Path, demo_slice: Path, tmp_path: Path
) -> None:
    env = {
        "SHOPSEARCH_MODEL_DIR": str(model_dir),
        "SHOPSEARCH_DATA_DIR": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    rejects = str(tmp_path / "rejects.jsonl")
    assert _run_cli("ingest", str(demo_slice), "--rejects", rejects, env=env).returncode == 0
    assert _run_cli("query", QUERY, "--json", env=env).returncode == 0
    _flip_a_weight(_int8(model_dir))
    for args in (("query", QUERY, "--json"), ("ingest", str(demo_slice), "--rejects", rejects)):
        proc = _run_cli(*args, env=env)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and "model_qint8" in proc.stderr
        assert "re-export" in proc.stderr and proc.stdout == ""


def test_threads_beyond_four_per_cpu_are_refused_in_one_place(
    model_dir: Path, tmp_path: Path
) -> None:
    limit = 4 * (os.cpu_count() or 1)
    OnnxEncoder.load(model_dir, threads=limit)
    with pytest.raises(UsageError, match=rf"between 1 and {limit}"):
        OnnxEncoder.load(model_dir, threads=limit + 1)
    from shopsearch.encoders.forked_query import ForkedQueryEncoder

    with pytest.raises(UsageError, match=rf"between 1 and {limit}"):
        ForkedQueryEncoder.start(model_dir, [QUERY], threads=1000)
    env = {"SHOPSEARCH_MODEL_DIR": str(model_dir), "SHOPSEARCH_DATA_DIR": str(tmp_path)}
    proc = _run_cli("ingest", str(DEMO), "--threads", "1000", env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert f"between 1 and {limit}" in proc.stderr and "not 1000" in proc.stderr
    assert not (tmp_path / "products").exists()
