"""The forked query encoder must give the in-process encoder's vectors, or its errors.

The fork happens only in a process with one Python thread and no onnxruntime loaded, which the
pytest process is not once other tests have run, so each case runs in a fresh interpreter (as the
CLI does) and reports back as JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from shopsearch.encoders.onnx_encoder import OnnxEncoder

QUERIES = ["cordless drill", "36 in. white bathroom vanity with top", "dewalt 20v"]


def run_fresh(code: str, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_child_vectors_equal_the_in_process_encoder(exported_model: Path) -> None:
    report = run_fresh(
        f"""
        import json, sys
        from shopsearch.encoders.forked_query import ForkedQueryEncoder

        encoder = ForkedQueryEncoder.start({str(exported_model)!r}, {QUERIES!r}, "int8")
        vectors = encoder.encode_queries({QUERIES!r})
        print(json.dumps({{
            "forked": encoder.forked,
            "parent_imported_onnxruntime": "onnxruntime" in sys.modules,
            "vectors": vectors.tolist(),
            "identity": [encoder.name, encoder.dimension, encoder.fingerprint],
        }}))
        """
    )
    reference = OnnxEncoder.load(exported_model, precision="int8")
    assert report["forked"] is True
    assert report["parent_imported_onnxruntime"] is False
    np.testing.assert_allclose(
        np.array(report["vectors"]), reference.encode_queries(QUERIES), atol=1e-6
    )
    assert report["identity"] == [reference.name, reference.dimension, reference.fingerprint]


def test_other_texts_and_documents_are_encoded_in_process(exported_model: Path) -> None:
    report = run_fresh(
        f"""
        import json, sys
        from shopsearch.encoders.forked_query import ForkedQueryEncoder

        with ForkedQueryEncoder.start({str(exported_model)!r}, ["drill"], "fp32") as encoder:
            queries = encoder.encode_queries({QUERIES!r})
            documents = encoder.encode_documents({QUERIES!r})
        print(json.dumps({{"forked": encoder.forked, "queries": queries.tolist(),
                          "documents": documents.tolist()}}))
        """
    )
    reference = OnnxEncoder.load(exported_model, precision="fp32")
    assert report["forked"] is True
    np.testing.assert_allclose(
        np.array(report["queries"]), reference.encode_queries(QUERIES), atol=1e-6
    )
    np.testing.assert_allclose(
        np.array(report["documents"]), reference.encode_documents(QUERIES), atol=1e-6
    )


def test_a_failing_child_gives_the_in_process_error(exported_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "model"
    shutil.copytree(exported_model, broken)
    manifest = json.loads((broken / "manifest.json").read_text())
    (broken / manifest["files"]["int8"]).write_bytes(b"not an onnx graph")
    # Pinned in the manifest, so the file passes the sha256 check and onnxruntime refuses it.
    manifest["sha256"][manifest["files"]["int8"]] = hashlib.sha256(b"not an onnx graph").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    report = run_fresh(
        f"""
        import json
        from shopsearch.encoders.forked_query import ForkedQueryEncoder
        from shopsearch.errors import ModelIntegrityError

        encoder = ForkedQueryEncoder.start({str(broken)!r}, ["drill"], "int8")
        try:
            encoder.encode_queries(["drill"])
        except ModelIntegrityError as exc:
            print(json.dumps({{"forked": encoder.forked, "error": str(exc)}}))
        """
    )
    assert report["forked"] is True
    assert "onnxruntime cannot load" in report["error"] and "model" in report["error"]


@pytest.mark.parametrize("ending", ["encoder.close()", "del encoder"])
def test_an_uncollected_child_is_stopped_and_reaped(exported_model: Path, ending: str) -> None:
    report = run_fresh(
        f"""
        import json, os
        from shopsearch.encoders.forked_query import ForkedQueryEncoder

        encoder = ForkedQueryEncoder.start({str(exported_model)!r}, ["drill"], "int8")
        forked, pid = encoder.forked, encoder._child[0]
        {ending}
        try:
            os.waitpid(pid, os.WNOHANG)
            reaped = False
        except ChildProcessError:
            reaped = True
        print(json.dumps({{"forked": forked, "reaped": reaped}}))
        """
    )
    assert report == {"forked": True, "reaped": True}


def test_the_child_ends_with_a_parent_that_exits_abruptly(exported_model: Path) -> None:
    """`shopsearch query` leaves through os._exit, which runs no finalizer. The child here has
    ~40,000 queries to encode (tens of seconds on one thread), so only the kernel's parent-death
    signal can end it within the few seconds allowed."""
    code = f"""
import json, os
from shopsearch.encoders.forked_query import ForkedQueryEncoder

queries = [f"cordless drill {{i}}" for i in range(40_000)]
encoder = ForkedQueryEncoder.start({str(exported_model)!r}, queries, "int8")
print(json.dumps({{"forked": encoder.forked, "pid": encoder._child[0]}}), flush=True)
os._exit(0)
"""
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert parent.stdout is not None
    report = json.loads(parent.stdout.readline())  # not read to EOF: the child holds stdout too
    assert parent.wait(timeout=30) == 0
    assert report["forked"] is True
    stat = Path(f"/proc/{report['pid']}/stat")
    deadline = time.monotonic() + 5
    while _alive(stat) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not _alive(stat)
    parent.stdout.close()


def _alive(stat: Path) -> bool:
    try:
        return stat.read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_missing_model_or_precision_fails_before_forking(exported_model: Path, tmp_path) -> None:
    from shopsearch.encoders.forked_query import ForkedQueryEncoder
    from shopsearch.errors import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="shopsearch model export"):
        ForkedQueryEncoder.start(tmp_path, ["drill"])
    fp32_only = tmp_path / "fp32-only"
    shutil.copytree(exported_model, fp32_only)
    manifest = json.loads((fp32_only / "manifest.json").read_text())
    del manifest["files"]["int8"]
    (fp32_only / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelNotFoundError, match="no int8 file"):
        ForkedQueryEncoder.start(fp32_only, ["drill"], "int8")
