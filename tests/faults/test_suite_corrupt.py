"""Damaged model files, damaged collection files and a server answering garbage: a message
and exit 1 every time, never a traceback or a process killed by a signal
(`fault_files` holds the damage and the garbage). Seeded: CI damages the same bytes every run."""

from __future__ import annotations

import json
import random

import pytest
from fault_files import (
    FILE_DAMAGE,
    GARBAGE,
    JSON_DAMAGE,
    MANIFEST_SHAPES,
    check_collections,
    check_models,
    check_server,
    cli,
    damage_model,
    judge_process,
    model_copy,
)

MODEL_CASES = 8
COLLECTION_CASES = 14


@pytest.fixture(scope="module")
def collection(exported_model, small_catalog, tmp_path_factory):
    """The small catalog in an Edge collection, and the environment the CLI finds it with."""
    work = tmp_path_factory.mktemp("corrupt")
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "XDG_CACHE_HOME": str(work / "xdg")}
    rejects = str(work / "r.jsonl")
    proc = cli(["ingest", str(small_catalog), "-c", "shop", "--path", str(work / "data"),
                "--rejects", rejects], env)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return work / "data" / "shop", env


def test_damaged_model_files_are_refused_with_a_message(exported_model, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    failures = check_models(exported_model, tmp_path, random.Random("models-0"), MODEL_CASES)
    assert not failures, "\n".join(failures)


MANIFESTS = [
    pytest.param(kind, shape, id=name)
    for kind, shape, name in [
        *(("another shape", shape, json.dumps(shape)) for shape in MANIFEST_SHAPES),
        *((kind, None, kind) for kind in (*FILE_DAMAGE, *JSON_DAMAGE)),
    ]
]


@pytest.fixture(scope="module")
def digests(tmp_path_factory) -> str:
    """A verified-files cache the manifest cases share: their ONNX files are links to the
    export's, hashed once."""
    return str(tmp_path_factory.mktemp("xdg"))


@pytest.mark.parametrize(("kind", "shape"), MANIFESTS)
def test_a_damaged_manifest_is_refused(kind, shape, exported_model, digests, tmp_path, monkeypatch):
    from shopsearch.encoders.onnx_encoder import OnnxEncoder
    from shopsearch.errors import ModelIntegrityError, ModelNotFoundError

    monkeypatch.setenv("XDG_CACHE_HOME", digests)
    model = model_copy(exported_model, tmp_path / "model")
    damage_model(model, "manifest", kind, shape, random.Random(0))
    with pytest.raises((ModelIntegrityError, ModelNotFoundError)) as refused:
        OnnxEncoder.load(model, precision="int8").encode_queries(["shoes"])
    if isinstance(shape, dict):  # the message names the file and the field to mend
        assert "manifest.json" in str(refused.value)
        assert all(field in str(refused.value) for field in shape), refused.value


def test_damaged_collection_files_fail_with_a_message(collection, tmp_path):
    directory, env = collection
    rng = random.Random("collections-0")
    failures = check_collections(directory, env, tmp_path, rng, COLLECTION_CASES)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("kind", GARBAGE)
def test_a_server_answering_garbage_fails_every_operation_with_a_message(kind, encoder):
    """Whatever a 200 holds (HTML, JSON of another shape, JSON nested 50,000 deep, bytes
    that are not UTF-8), every operation fails with the backend's "not answering as Qdrant
    does" ServerError."""
    problems = check_server(kind, encoder)
    assert not problems, "\n".join(problems)


def test_a_shard_edge_panics_on_fails_with_a_message(collection, tmp_path):
    """Found by the soak: an emptied `status.dat` of the dense vectors, and Edge's load
    panics (index out of bounds) instead of returning an error. pyo3 raises the panic as a
    BaseException, which the backend names as it names Edge's errors."""
    import shutil

    directory, env = collection
    data = tmp_path / "data"
    shutil.copytree(directory, data / "shop")
    (status,) = (data / "shop").glob("shard/segments/*/vector_storage-dense/vectors/status.dat")
    status.write_bytes(b"")
    proc = cli(["info", "-c", "shop", "--path", str(data)], env)
    problem = judge_process(proc, {1})
    assert problem is None, problem


@pytest.mark.parametrize("name", ["vocabulary.json", "shopsearch.json"])
def test_a_collection_document_nested_too_deeply_fails_with_a_message(name, collection, tmp_path):
    """Found by the soak: JSON nested 100,000 deep in a collection's document."""
    import shutil

    directory, env = collection
    data = tmp_path / "data"
    shutil.copytree(directory, data / "shop")
    (data / "shop" / name).write_text("[" * 100_000 + "]" * 100_000)
    proc = cli(["info", "-c", "shop", "--path", str(data)], env)
    problem = judge_process(proc, {1})
    assert problem is None, problem
