"""The base install ingests and queries without the training stack.

`.ci/run` runs the ingest and query tests a second time in an environment holding only the
base install (`pip install .`, no extras), on a model the full environment exported
(`SHOPSEARCH_TEST_MODEL`). These tests check that environment is what it claims to be, and
that the installed package (not the source tree) does the whole job.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import shopsearch

pytestmark = pytest.mark.skipif(
    not os.environ.get("SHOPSEARCH_LEAN"), reason="runs in the lean environment (.ci/run)"
)

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"


@pytest.mark.parametrize(
    "package", ["torch", "transformers", "sentence_transformers", "optimum", "datasets"]
)
def test_the_training_stack_is_not_installed(package: str):
    assert importlib.util.find_spec(package) is None


def test_the_installed_package_is_the_one_tested():
    """The lean run tests the installed distribution, package data included."""
    package_dir = Path(shopsearch.__file__).resolve().parent
    assert "site-packages" in package_dir.parts
    assert (package_dir / "search" / "common_words.txt").is_file()


def test_a_plain_install_ingests_and_queries(exported_model: Path, tmp_path: Path):
    env = {
        **os.environ,
        "SHOPSEARCH_MODEL_DIR": str(exported_model),
        "SHOPSEARCH_DATA_DIR": str(tmp_path / "data"),
    }
    cli = [sys.executable, "-m", "shopsearch"]
    ingest = subprocess.run(
        [*cli, "ingest", str(DEMO), "-c", "lean", "--rejects", str(tmp_path / "r.jsonl"), "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    report = json.loads(ingest.stdout)
    assert report["upserted"] == report["read"] > 0
    query = subprocess.run(
        [*cli, "query", "womens casul shoes", "-c", "lean", "--top-k", "3", "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(query.stdout)
    assert result["searched"] == "womens casual shoes"
    assert len(result["results"]) == 3
    assert "torch" not in query.stderr
