"""The relevance floor (shopsearch/search/confidence.py) on real collections: the small demo
catalog in an Edge shard and in QdrantClient(':memory:'), the real encoder. A query the
catalog answers well gets confident results, nonsense gets `no_confident_match`, a
`min_confidence` cuts the page (and what a sort orders) without reordering it, and a bad
value is refused naming the flag or field, in the library, the CLI and the HTTP service."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from service_helpers import cli, service_process

from shopsearch.errors import UsageError
from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE, FEATURES, prior
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.responses import search_answer
from shopsearch.search.sorting import SortOrder
from shopsearch.store.backend import SearchMode

GOOD = "women's casual shoes"
NONSENSE = "qzxv wkrpt bvvnx"


@pytest.fixture(params=["edge", "server"])
def search(request, encoder):
    return ProductSearch(request.getfixturevalue(request.param), encoder)


def test_the_prior_ships_with_the_package_and_its_model_card():
    model = prior()
    assert len(model.weights) == len(model.features) and set(model.features) <= set(FEATURES)
    assert model.card["fit_on"] and model.card["held_out"]["homedepot_dev"]["precision"]
    # More evidence, more confidence: every feature's weight is positive.
    assert all(w > 0 for w in model.weights)


def test_a_good_query_is_confident_and_nonsense_is_not(search):
    good = search.search(Query(GOOD), SearchOptions(confidence=True))
    assert good and all(0.0 <= h.confidence <= 1.0 for h in good)
    assert good[0].confidence >= DEFAULT_MIN_CONFIDENCE
    doc = search_answer(search, Query(GOOD), [], SearchOptions(confidence=True), good)
    assert doc["no_confident_match"] is False
    assert doc["results"][0]["confidence"] == good[0].confidence
    bad = search.search(Query(NONSENSE), SearchOptions(confidence=True))
    assert bad and max(h.confidence for h in bad) < DEFAULT_MIN_CONFIDENCE
    answer = search_answer(search, Query(NONSENSE), [], SearchOptions(confidence=True), bad)
    assert answer["no_confident_match"] is True


def test_confidence_leaves_the_ranking_as_it_was(search):
    for options in (SearchOptions(), SearchOptions(mode=SearchMode.DENSE)):
        plain = search.search(Query(GOOD), options)
        rated = search.search(Query(GOOD), replace(options, confidence=True))
        assert [h.point_id for h in rated] == [h.point_id for h in plain]
        assert all(h.confidence is None for h in plain)


def test_min_confidence_cuts_the_page_in_order(search):
    page = search.search(Query(GOOD), SearchOptions(confidence=True, top_k=20))
    floor = sorted(h.confidence for h in page)[len(page) // 2]
    cut = search.search(Query(GOOD), SearchOptions(min_confidence=floor, top_k=20))
    assert [h.point_id for h in cut] == [h.point_id for h in page if h.confidence >= floor]
    assert 0 < len(cut) < len(page)
    assert search.search(Query(NONSENSE), SearchOptions(min_confidence=0.5)) == []
    # A sort orders only the products above the floor.
    order = SortOrder("price")
    sorted_all = search.search(Query(GOOD), SearchOptions(sort=order, confidence=True))
    sorted_cut = search.search(Query(GOOD), SearchOptions(sort=order, min_confidence=floor))
    assert all(h.confidence >= floor for h in sorted_cut)
    assert len(sorted_cut) <= len(sorted_all)
    prices = [h.payload["price"] for h in sorted_cut]
    assert prices == sorted(prices)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, math.inf])
def test_a_bad_min_confidence_is_refused(value):
    with pytest.raises(UsageError, match="--min-confidence must be a number from 0 to 1"):
        SearchOptions(min_confidence=value)


def test_the_cli_shows_confidence_and_cuts(exported_model: Path, small_catalog: Path, tmp_path):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp_path)}
    cli("ingest", str(small_catalog), "-c", "shop", "--rejects", str(tmp_path / "r.jsonl"), env=env)
    doc = json.loads(cli("query", GOOD, "-c", "shop", "--json", env=env).stdout)
    assert doc["no_confident_match"] is False and doc["min_confidence"] is None
    assert all(0.0 <= r["confidence"] <= 1.0 for r in doc["results"])
    nonsense = json.loads(cli("query", NONSENSE, "-c", "shop", "--json", env=env).stdout)
    assert nonsense["no_confident_match"] is True and nonsense["results"]
    cut = cli("query", NONSENSE, "-c", "shop", "--json", "--min-confidence", "0.5", env=env)
    cut_doc = json.loads(cut.stdout)
    assert cut_doc["results"] == [] and cut_doc["no_confident_match"] is True
    assert cut_doc["min_confidence"] == 0.5
    wide = {**env, "COLUMNS": "200"}  # the table's headers unwrapped
    human = cli("query", NONSENSE, "-c", "shop", env=wide).stdout
    assert "no confident match" in " ".join(human.split())
    shown = cli("query", GOOD, "-c", "shop", env=wide).stdout
    assert "confidence" in shown and "no confident match" not in " ".join(shown.split())
    for bad in ("1.5", "nan", "-1"):
        refused = cli("query", GOOD, "-c", "shop", "--min-confidence", bad, env=env, check=False)
        assert refused.returncode == 2
        assert "--min-confidence must be a number from 0 to 1" in refused.stderr
    with service_process(env, "-c", "shop") as (url, _):
        got = httpx.post(f"{url}/search", json={"q": GOOD}).json()
        assert [r["product_id"] for r in got["results"]] == [
            r["product_id"] for r in doc["results"]
        ]
        assert [r["confidence"] for r in got["results"]] == pytest.approx(
            [r["confidence"] for r in doc["results"]], abs=1e-5
        )
        assert got["no_confident_match"] is False
        empty = httpx.get(f"{url}/search", params={"q": NONSENSE, "min_confidence": 0.5}).json()
        assert empty["results"] == [] and empty["no_confident_match"] is True
        for bad in (1.5, -0.5):
            refused = httpx.post(f"{url}/search", json={"q": GOOD, "min_confidence": bad})
            assert refused.status_code == 422
            assert refused.json()["problems"][0]["field"] == "min_confidence"
        refused = httpx.get(f"{url}/search", params={"q": GOOD, "min_confidence": "nan"})
        assert refused.status_code == 422 and "min_confidence" in refused.json()["error"]
