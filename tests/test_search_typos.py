"""Typo tolerance: a misspelled query is searched as the catalog spells it, from the
vocabulary each ingest records (alike on both backends)."""

import pytest
from search_helpers import _empty_backend, _jsonl, _ranking, ingest

from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import SearchMode
from shopsearch.store.documents import read_vocabulary
from shopsearch.store.edge import EdgeBackend


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_misspelled_query_is_searched_as_the_catalog_spells_it(backend_name, request, encoder):
    backend = request.getfixturevalue(backend_name)
    search = ProductSearch(backend, encoder)
    typed, spelled = Query("womens casul shoes"), Query("womens casual shoes")
    assert search.searched_text(typed) == spelled.text
    for mode in SearchMode:
        options = SearchOptions(mode=mode)
        assert _ranking(search.search(typed, options)) == _ranking(search.search(spelled, options))
    as_typed = SearchOptions(mode=SearchMode.BM25, fix_typos=False)
    assert search.searched_text(typed, as_typed) == typed.text
    assert _ranking(search.search(typed, as_typed)) != _ranking(search.search(spelled, as_typed))


def test_edge_and_server_store_the_same_vocabulary(edge, server):
    vocabulary = read_vocabulary(edge)
    assert vocabulary == read_vocabulary(server)
    assert vocabulary["casual"] > 1 and "womens" in vocabulary
    assert not any(ch.isdigit() for word in vocabulary for ch in word)


def test_reingest_adds_to_the_vocabulary_and_recreate_starts_it_afresh(encoder, tmp_path):
    def catalog(name, titles):
        rows = [{"id": f"{name}-{i}", "title": t} for i, t in enumerate(titles)]
        return _jsonl(tmp_path / f"{name}.jsonl", rows)

    tools = catalog("tools", ["Cordless drill", "Hammer drill", "Claw hammer"])
    garden = catalog("garden", ["Garden hose", "Hose reel", "Cordless trimmer"])
    backend = EdgeBackend(tmp_path / "products")
    assert ingest(tools, backend, encoder, tmp_path).vocabulary_words == 4
    ingest(garden, backend, encoder, tmp_path)
    assert read_vocabulary(backend) == {
        "cordless": 1,
        "drill": 2,
        "hammer": 2,
        "claw": 1,
        "garden": 1,
        "hose": 2,
        "reel": 1,
        "trimmer": 1,
    }
    assert ProductSearch(backend, encoder).searched_text(Query("hoze and dril")) == "hose and drill"
    ingest(garden, backend, encoder, tmp_path, recreate=True)
    assert set(read_vocabulary(backend)) == {"cordless", "garden", "hose", "reel", "trimmer"}
    # A collection from before typo tolerance has no vocabulary: queries run as typed.
    (backend.directory / "vocabulary.json").unlink()
    search = ProductSearch(backend, encoder)
    assert search.searched_text(Query("hoze")) == "hoze"
    assert search.search(Query("hoze"), SearchOptions(mode=SearchMode.BM25)) == []
    backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_compound_typed_as_one_word_searches_the_catalogs_spelling(
    backend_name, encoder, tmp_path
):
    """Titles say "t-shirt"; the shopper types "tshirt", one edit from "shirt"."""
    rows = [
        {"id": "r1", "title": "Red cotton t-shirt", "color": "Red"},
        {"id": "r2", "title": "Red slim fit T-Shirt", "color": "Red"},
        {"id": "b1", "title": "Blue cotton t-shirt", "color": "Blue"},
        {"id": "s1", "title": "Red flannel shirt", "color": "Red"},
        {"id": "s2", "title": "White linen shirt", "color": "White"},
    ]
    catalog = _jsonl(tmp_path / "tees.jsonl", rows)
    backend = _empty_backend(backend_name, tmp_path)
    ingest(catalog, backend, encoder, tmp_path)
    search = ProductSearch(backend, encoder)
    assert search.searched_text(Query("red tshirt")) == "red t-shirt"
    for mode in SearchMode:
        options = SearchOptions(mode=mode)
        typed = search.search(Query("red tshirt"), options)
        assert _ranking(typed) == _ranking(search.search(Query("red t-shirt"), options))
    top = [h.product_id for h in search.search(Query("red tshirt"))]
    assert top[0] == "r1" and {"r1", "r2"} <= set(top[:3])
    backend.close()
