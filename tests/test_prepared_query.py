"""A query's typo correction is decided once, and what is searched is what was encoded.

A one-shot `shopsearch query` prepares its query before the encoder starts, encodes the
prepared text in a forked child while the collection opens, and searches and counts facets
for that same text: the child's vectors are used, never thrown away for an in-process
encoding of a differently corrected text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shopsearch.search.product_search import ProductSearch, Query, SearchOptions, prepare_query
from shopsearch.search.spelling import TypoCorrector

VOCABULARY = {"casual": 12, "shoes": 30, "womens": 20, "hose": 4}


def test_prepare_corrects_once_and_keeps_a_prepared_query():
    typos = TypoCorrector(VOCABULARY)
    prepared = prepare_query(typos, Query("womens casul shoes"), SearchOptions())
    assert prepared.searched == "womens casual shoes"
    assert prepared.text == "womens casul shoes"
    # Prepared again, under options that would not correct it, it keeps its decision.
    again = prepare_query(typos, prepared, SearchOptions(fix_typos=False))
    assert again is prepared


def test_fix_typos_off_searches_the_text_as_typed():
    prepared = prepare_query(
        TypoCorrector(VOCABULARY), Query("womens casul shoes"), SearchOptions(fix_typos=False)
    )
    assert prepared.searched == "womens casul shoes"


@pytest.fixture(scope="module")
def demo_collection(exported_model: Path, small_catalog: Path, tmp_path_factory) -> dict:
    data = tmp_path_factory.mktemp("prepared")
    env = {
        **os.environ,
        "SHOPSEARCH_MODEL_DIR": str(exported_model),
        "SHOPSEARCH_DATA_DIR": str(data / "data"),
    }
    subprocess.run(
        [sys.executable, "-m", "shopsearch", "ingest", str(small_catalog), "-c", "demo",
         "--rejects", str(data / "rejects.jsonl"), "--json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return env


def test_the_forked_child_encodes_the_searched_text(demo_collection: dict):
    """The CLI's one-shot flow, in a fresh interpreter (a fork needs one without
    onnxruntime loaded): the results and the facets are searched without an in-process
    encoder ever being loaded, so the child's vectors served both."""
    code = textwrap.dedent(
        """
        import json
        from shopsearch.encoders.forked_query import ForkedQueryEncoder
        from shopsearch.search.product_search import (
            ProductSearch, Query, SearchOptions, prepare_query,
        )
        from shopsearch.search.spelling import TypoCorrector
        from shopsearch.store.connection import Connection

        backend = Connection.from_options(collection="demo").open()
        typos = TypoCorrector.stored(backend)
        options = SearchOptions(top_k=3)
        query = prepare_query(typos, Query("womens casul shoes"), options)
        encoder = ForkedQueryEncoder.start(None, [query.searched], "int8")
        search = ProductSearch(backend, encoder, typos)
        hits = search.search(query, options)
        facets = search.facets(query, options, ["brand"], 5)
        print(json.dumps({
            "searched": query.searched,
            "forked": encoder.forked,
            "loaded_in_process": encoder._local is not None,
            "hits": len(hits),
            "counted": facets.products,
        }))
        backend.close()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=demo_collection, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["searched"] == "womens casual shoes"
    assert report["forked"] is True
    assert report["loaded_in_process"] is False
    assert report["hits"] == 3 and report["counted"] > 3


def test_cli_reports_the_text_it_searched(demo_collection: dict):
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", "query", "womens casul shoes", "-c", "demo",
         "--top-k", "2", "--facet", "brand", "--json"],
        env=demo_collection, capture_output=True, text=True, check=True,
    )  # fmt: skip
    doc = json.loads(proc.stdout)
    assert doc["query"] == "womens casul shoes"
    assert doc["searched"] == "womens casual shoes"
    assert len(doc["results"]) == 2 and doc["facets"]["brand"]


def test_a_search_of_a_prepared_query_does_not_correct_it_again(edge, encoder):
    search = ProductSearch(edge, encoder)
    typed = Query("womens casul shoes")
    assert search.searched_text(typed) == "womens casual shoes"
    as_typed = Query("womens casul shoes", searched="womens casul shoes")
    assert search.searched_text(as_typed) == "womens casul shoes"
    off = SearchOptions(fix_typos=False, top_k=5)
    assert [h.point_id for h in search.search(as_typed, SearchOptions(top_k=5))] == [
        h.point_id for h in search.search(typed, off)
    ]
