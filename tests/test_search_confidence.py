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
from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE, FEATURES, prior, read_evidence
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


def test_the_rankings_coverage_stands_in_for_a_bm25_request(search):
    """The default fusion works out each result's coverage; the floor reads it rather than
    searching BM25 among the page (the prior weighs no BM25 score) and gets the confidences
    both evidence requests give."""
    assert "log1p_bm25" not in prior().features
    batches = []
    searched = search.backend.search_batch

    def recorded(requests):  # the real backend answers; the batch sizes are noted
        batches.append(len(requests))
        return searched(requests)

    search.backend.search_batch = recorded
    for text in (GOOD, "black boots for women", NONSENSE):
        batches.clear()
        rated = search.search(Query(text), SearchOptions(confidence=True))
        assert rated and all(h.coverage is not None for h in rated)
        assert batches == [1, 1]  # the fused search, then the page's cosines alone
        query = search.prepare(Query(text), SearchOptions())
        evidence = read_evidence(search, [query], [[h.point_id for h in rated]])[0]
        assert [h.coverage for h in rated] == [e.coverage for e in evidence]
        assert [h.confidence for h in rated] == prior().probability(evidence)


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


# -- a shop's own confidence model -----------------------------------------------------------

# Queries of the small catalog and the title word that makes a result relevant to each.
JUDGED = {
    "women's casual shoes": "shoe",
    "black boots": "boot",
    "analog watch for men": "watch",
    "gold ring": "ring",
    "cotton": "cotton",
    "sunglasses": "sunglass",
    "bedsheet": "bedsheet",
    "wallet": "wallet",
}


def _judgments(search: ProductSearch, path: Path) -> Path:
    """Each query's default top 10 rated 3 (relevant on 1..3) where the title holds the
    query's word, else 1: labels that follow the words, as a shop's raters' would."""
    rows = []
    for n, (text, word) in enumerate(JUDGED.items()):
        for hit in search.search(Query(text), SearchOptions(top_k=10)):
            rating = 3 if word in hit.payload["title"].lower() else 1
            rows.append({"query_id": f"q{n}", "query": text, "product_id": hit.product_id,
                         "relevance": rating})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_a_shop_fits_its_own_confidence_model(exported_model: Path, small_catalog: Path, tmp_path):
    """`fusion fit --confidence` fits the floor on the shop's judgments and stores it with the
    collection: queries (CLI and a fresh process) score with it, not with the prior."""
    from shopsearch.encoders import OnnxEncoder
    from shopsearch.store.edge import EdgeBackend

    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp_path)}
    cli("ingest", str(small_catalog), "-c", "shop", "--rejects", str(tmp_path / "r.jsonl"), env=env)
    before = json.loads(cli("query", GOOD, "-c", "shop", "--json", env=env).stdout)
    shown = json.loads(cli("info", "-c", "shop", "--json", env=env).stdout)["confidence_model"]
    assert shown == {"source": "package prior", "fit_on": "Home Depot train"}
    backend = EdgeBackend(tmp_path / "shop")
    try:
        search = ProductSearch(backend, OnnxEncoder.load(exported_model, precision="int8"))
        judgments = _judgments(search, tmp_path / "judged.jsonl")
    finally:
        backend.close()
    fit = cli("fusion", "fit", "-j", str(judgments), "--confidence", "-c", "shop", "--json",
              env=env)  # fmt: skip
    doc = json.loads(fit.stdout)
    assert doc["queries"] == len(JUDGED) and doc["results"] == 10 * len(JUDGED)
    assert doc["features"] == ["cosine", "coverage"] and len(doc["weights"]) == 2
    assert doc["calibration"]["judged_results"] == doc["results"]
    after = json.loads(cli("query", GOOD, "-c", "shop", "--json", env=env).stdout)
    ids = [r["product_id"] for r in after["results"]]
    assert ids == [r["product_id"] for r in before["results"]]  # the ranking is the fusion's
    assert [r["confidence"] for r in after["results"]] != pytest.approx(
        [r["confidence"] for r in before["results"]], abs=1e-3
    )
    backend = EdgeBackend(tmp_path / "shop")
    try:
        own = ProductSearch(backend, None).confidence.get()
        assert own != prior() and own.intercept == pytest.approx(doc["intercept"], abs=1e-4)
    finally:
        backend.close()
    info = json.loads(cli("info", "-c", "shop", "--json", env=env).stdout)["confidence_model"]
    assert info["source"] == "collection" and "8 judged queries" in info["fit_on"]
    human = cli("fusion", "fit", "-j", str(judgments), "--confidence", "-c", "shop", env=env)
    assert "confidence model fit on 80 judged results of 8 queries" in " ".join(
        human.stdout.split()
    )
    assert "ECE" in human.stdout


def test_the_server_path_keeps_the_model_with_the_collection(encoder, small_catalog, tmp_path):
    from qdrant_client import QdrantClient
    from search_helpers import ingest

    from shopsearch.evaluation.confidence_fit import fit_confidence
    from shopsearch.evaluation.judgments import load_judgments
    from shopsearch.store.documents import write_confidence
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    backend = ServerBackend(client, "products", ":memory:")
    ingest(small_catalog, backend, encoder, tmp_path)
    search = ProductSearch(backend, encoder)
    fitted = fit_confidence(search, load_judgments(_judgments(search, tmp_path / "j.jsonl")),
                            SearchOptions())  # fmt: skip
    write_confidence(backend, fitted.model.to_dict())
    again = ProductSearch(ServerBackend(client, "products", ":memory:"), encoder)
    assert again.confidence.get() == fitted.model
    hits = again.search(Query(GOOD), SearchOptions(confidence=True))
    query = again.prepare(Query(GOOD), SearchOptions())
    evidence = read_evidence(again, [query], [[h.point_id for h in hits]])[0]
    assert [h.confidence for h in hits] == pytest.approx(fitted.model.probability(evidence))
    assert fitted.model != prior()


def test_judgments_that_rate_nothing_found_are_refused(exported_model, small_catalog, tmp_path):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp_path)}
    cli("ingest", str(small_catalog), "-c", "shop", "--rejects", str(tmp_path / "r.jsonl"), env=env)
    judged = tmp_path / "elsewhere.jsonl"
    judged.write_text(
        json.dumps({"query_id": "q", "query": GOOD, "product_id": "NOT-HERE", "relevance": 3})
        + "\n",
        encoding="utf-8",
    )
    refused = cli("fusion", "fit", "-j", str(judged), "--confidence", "-c", "shop", env=env,
                  check=False)  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "0 rated results among the queries' top 10" in refused.stderr
    assert "Traceback" not in refused.stderr
