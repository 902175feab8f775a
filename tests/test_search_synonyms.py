"""Synonyms on both backends, with the real encoder: two-way groups and one-way rules widen the
BM25 side of a query, a collection without synonyms ranks as before, the file's checks, the
CLI's `synonyms set | show` and `--json`, and the service (shopsearch.search.synonyms)."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from search_helpers import _empty_backend, _jsonl, _ranking, ingest
from service_helpers import service_thread

from shopsearch.cli.app import main
from shopsearch.errors import InputFileError
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.synonyms import SYNONYM_WEIGHT, SynonymSet
from shopsearch.store.backend import SearchMode
from shopsearch.store.documents import read_synonyms, write_synonyms
from shopsearch.store.edge import EdgeBackend

ROWS = [
    {"id": "s1", "title": "Grey three seat sofa", "category": "Living room"},
    {"id": "s2", "title": "Leather sofa bed", "category": "Living room"},
    {"id": "c1", "title": "Corner couch in green velvet", "category": "Living room"},
    {"id": "t1", "title": "55 inch 4K television", "category": "Electronics"},
    {"id": "t2", "title": "Smart television 43 inch", "category": "Electronics"},
    {"id": "v1", "title": "TV wall mount bracket", "category": "Electronics"},
    {"id": "v2", "title": "Oak TV stand", "category": "Furniture"},
    {"id": "o1", "title": "Oak dining table", "category": "Furniture"},
    {"id": "o2", "title": "Brass floor lamp", "category": "Lighting"},
]
SYNONYMS = {
    "synonyms": [
        {"words": ["sofa", "couch", "settee"]},
        {"from": "tv", "to": ["television"]},
    ]
}
BM25 = SearchOptions(mode=SearchMode.BM25)


@pytest.fixture(scope="module", params=["edge", "server"])
def shop(request, encoder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp(f"synonyms-{request.param}")
    backend = _empty_backend(request.param, tmp)
    ingest(_jsonl(tmp / "catalog.jsonl", ROWS), backend, encoder, tmp)
    held = {"backend": backend, "name": request.param, "dir": tmp}
    yield held
    held["backend"].close()


@pytest.fixture
def synonyms(shop, encoder):
    """Store synonyms with the collection and return a fresh search of it; removed after."""

    def store(data: dict) -> ProductSearch:
        write_synonyms(shop["backend"], SynonymSet.from_dict(data, "test").to_dict())
        return ProductSearch(shop["backend"], encoder)

    yield store
    write_synonyms(shop["backend"], SynonymSet().to_dict())


def ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def test_a_two_way_group_finds_products_named_by_another_word(shop, encoder, synonyms):
    before = ProductSearch(shop["backend"], encoder)
    assert ids(before.search(Query("couch"), BM25)) == ["c1"]
    search = synonyms(SYNONYMS)
    found = ids(search.search(Query("couch"), BM25))
    # The word typed weighs more than its synonyms: the couch first, then the sofas.
    assert found[0] == "c1" and set(found) == {"c1", "s1", "s2"}
    assert set(ids(search.search(Query("settee"), BM25))) == {"c1", "s1", "s2"}
    assert set(ids(search.search(Query("Sofas"), BM25))) == {"c1", "s1", "s2"}  # stemmed
    prepared = search.prepare(Query("grey couch"), BM25)
    assert prepared.searched == "grey couch"  # the displayed text stays as searched
    assert [a.to_dict() for a in prepared.synonyms] == [
        {"matched": "couch", "added": ["sofa", "settee"], "entries": [0]}
    ]
    # The default hybrid search finds the sofas too, their coverage counted for "couch".
    assert {"c1", "s1", "s2"} <= set(ids(search.search(Query("couch")))[:3])
    # --no-synonyms: as without them.
    off = SearchOptions(mode=SearchMode.BM25, synonyms=False)
    assert ids(search.search(Query("couch"), off)) == ["c1"]
    assert search.prepare(Query("couch"), off).synonyms is None


def test_a_one_way_rule_widens_only_its_own_direction(shop, synonyms):
    search = synonyms(SYNONYMS)
    assert set(ids(search.search(Query("tv"), BM25))) == {"t1", "t2", "v1", "v2"}
    assert set(ids(search.search(Query("television"), BM25))) == {"t1", "t2"}
    assert search.prepare(Query("television"), BM25).synonyms is None


def test_the_sparse_vector_adds_each_new_term_once_at_the_synonym_weight(shop, synonyms):
    search = synonyms(SYNONYMS)
    _, _, plain = search.query_vectors(Query("sofa"), SearchOptions(synonyms=False))
    _, _, wide = search.query_vectors(Query("sofa"), BM25)
    assert wide.indices[: len(plain.indices)] == plain.indices
    assert wide.values == [1.0, SYNONYM_WEIGHT, SYNONYM_WEIGHT]  # couch, settee
    # Words already in the query are not counted twice: "sofa couch" adds settee alone.
    prepared = search.prepare(Query("sofa couch"), BM25)
    assert [(a.matched, a.added) for a in prepared.synonyms] == [("sofa", ("settee",))]
    _, _, both = search.query_vectors(Query("sofa couch"), BM25)
    assert sorted(both.values) == [SYNONYM_WEIGHT, 1.0, 1.0]
    # A phrase matches as a whole, the longest first.
    search = synonyms({"synonyms": [{"from": "flat screen", "to": "television"},
                                    {"from": "screen", "to": "lamp"}]})  # fmt: skip
    applied = search.prepare(Query("flat screen"), BM25).synonyms
    assert [(a.matched, a.added) for a in applied] == [("flat screen", ("television",))]


def test_without_synonyms_the_ranking_is_as_before(shop, encoder, synonyms):
    plain = ProductSearch(shop["backend"], encoder)
    texts = ["oak table", "smart television", "leather sofa"]
    before = {
        (t, m): plain.search(Query(t), SearchOptions(mode=m)) for t in texts for m in SearchMode
    }
    assert all(plain.prepare(Query(t)).synonyms is None for t in texts)
    unrelated = synonyms({"synonyms": [{"words": ["lamp", "light"]}]})
    for (text, mode), hits in before.items():
        got = unrelated.search(Query(text), SearchOptions(mode=mode))
        assert ids(got) == ids(hits) and _ranking(got) == _ranking(hits), (text, mode)


def test_a_bad_file_names_the_entry_and_field():
    bad = [
        ({"synonyms": [{"words": ["a", "b"]}, {"from": "tv"}]}, "synonym 1 field to"),
        ({"synonyms": [{"words": ["sofa"]}]}, "synonym 0 field words"),
        ({"synonyms": [{"words": ["x", 3]}]}, "synonym 0 field words[1]"),
        ({"synonyms": [{"from": "tv", "to": "t", "name": "n"}]}, "synonym 0 field name"),
        ({"synonyms": ["sofa"]}, "synonym 0 field (the entry)"),
        ({"synonym": []}, '{"synonyms": [ENTRY, ...]}'),
    ]
    for data, message in bad:
        with pytest.raises(InputFileError, match=re.escape(message)):
            SynonymSet.from_dict(data, "f.json")


def test_the_cli_sets_shows_and_answers_with_the_synonyms_applied(
    shop, exported_model, tmp_path, capsys, monkeypatch
):
    if shop["name"] != "edge":
        pytest.skip("the CLI's embedded collection")
    monkeypatch.setenv("SHOPSEARCH_DATA_DIR", str(shop["dir"]))
    monkeypatch.setenv("SHOPSEARCH_MODEL_DIR", str(exported_model))
    shop["backend"].close()  # the CLI opens the shard in this process
    try:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"synonyms": [{"words": ["a", "b"]}, {"from": "tv", "to": []}]}))
        assert main(["synonyms", "set", str(bad), "-c", "products"]) == 2
        assert "bad.json: synonym 1 field to" in " ".join(capsys.readouterr().err.split())
        stop = tmp_path / "stop.json"
        stop.write_text(json.dumps([{"from": "tv", "to": ["the"]}]))
        assert main(["synonyms", "set", str(stop), "-c", "products"]) == 2
        assert "synonym 0 field to[0]" in " ".join(capsys.readouterr().err.split())
        good = tmp_path / "synonyms.json"
        good.write_text(json.dumps(SYNONYMS))
        assert main(["synonyms", "set", str(good), "-c", "products", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["synonyms"] == 2
        assert json.loads((shop["dir"] / "products" / "synonyms.json").read_text()) == SYNONYMS
        assert main(["synonyms", "show", "-c", "products", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == SYNONYMS
        assert main(["synonyms", "show", "-c", "products"]) == 0
        assert "1: tv -> television" in capsys.readouterr().out
        query = ["query", "couch", "-c", "products", "--json", "--mode", "bm25"]
        assert main(query) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["searched"] == "couch"
        assert doc["synonyms"] == [
            {"matched": "couch", "added": ["sofa", "settee"], "entries": [0]}
        ]
        assert {r["product_id"] for r in doc["results"]} == {"c1", "s1", "s2"}
        assert main([*query, "--no-synonyms"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["synonyms"] == [] and [r["product_id"] for r in doc["results"]] == ["c1"]
        empty = tmp_path / "none.json"
        empty.write_text('{"synonyms": []}')
        assert main(["synonyms", "set", str(empty), "-c", "products"]) == 0
        capsys.readouterr()
    finally:
        shop["backend"] = EdgeBackend(shop["dir"] / "products")


def test_the_service_applies_synonyms_stored_while_it_serves(encoder, tmp_path):
    from qdrant_client import QdrantClient

    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.live import LiveCollection
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    backend = ServerBackend(client, "products", ":memory:")
    ingest(_jsonl(tmp_path / "catalog.jsonl", ROWS), backend, encoder, tmp_path)
    live = LiveCollection(
        lambda: ServerBackend(client, "products", ":memory:"), BatchingEncoder(encoder), "test"
    )
    body = {"q": "couch", "mode": "bm25"}
    with service_thread(create_app(live)) as url:
        doc = httpx.post(f"{url}/search", json=body).json()
        assert doc["synonyms"] == [] and [r["product_id"] for r in doc["results"]] == ["c1"]
        write_synonyms(backend, SynonymSet.from_dict(SYNONYMS, "test").to_dict())
        assert read_synonyms(backend) == SYNONYMS
        deadline = time.monotonic() + 10
        while not (doc := httpx.post(f"{url}/search", json=body).json())["synonyms"]:
            assert time.monotonic() < deadline, doc
            time.sleep(0.2)
        assert doc["synonyms"][0]["added"] == ["sofa", "settee"]
        assert {r["product_id"] for r in doc["results"]} == {"c1", "s1", "s2"}
        off = httpx.get(f"{url}/search", params={**body, "synonyms": "false"}).json()
        assert off["synonyms"] == [] and [r["product_id"] for r in off["results"]] == ["c1"]
