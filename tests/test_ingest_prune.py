"""--prune deletes the products a catalog no longer lists, on both backends, and keeps
a rejected row's product as stored, words and all."""

import pytest
from search_helpers import _empty_backend, _jsonl, ingest

from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import SearchMode
from shopsearch.store.documents import read_vocabulary


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_prune_deletes_what_the_catalog_no_longer_lists_and_keeps_rejected_rows(
    backend_name, encoder, tmp_path
):
    backend = _empty_backend(backend_name, tmp_path)
    monday = _jsonl(
        tmp_path / "monday.jsonl",
        [
            {"id": "drill", "title": "Cordless drill"},
            {"id": "hammer", "title": "Claw hammer"},
            {"id": "saw", "title": "Mitre saw", "price": 99},
            {"id": "hose", "title": "Garden hose"},
        ],
    )
    assert ingest(monday, backend, encoder, tmp_path, prune=True).pruned == 0
    tuesday = _jsonl(
        tmp_path / "tuesday.jsonl",
        [
            {"id": "drill", "title": "Cordless drill, 18V"},
            {"id": "hammer", "title": "Claw hammer"},
            {"id": "saw", "title": "Mitre saw", "price": "ninety"},  # rejected: kept as stored
            {"id": "reel", "title": "Hose reel"},  # new; "hose" is discontinued
        ],
    )
    report = ingest(tuesday, backend, encoder, tmp_path, prune=True)
    assert (report.upserted, report.unchanged, report.rejected, report.pruned) == (3, 1, 1, 1)
    assert report.not_pruned is None and report.points_in_collection == 4
    kept = {p["product_id"]: p for p in _all_payloads(backend, encoder)}
    assert set(kept) == {"drill", "hammer", "saw", "reel"}
    assert kept["saw"]["price"] == 99 and kept["drill"]["title"] == "Cordless drill, 18V"
    # The vocabulary is the catalog's alone now: "garden" went with the hose; the saw kept its.
    assert set(read_vocabulary(backend)) == {
        "cordless",
        "drill",
        "claw",
        "hammer",
        "mitre",
        "saw",
        "hose",
        "reel",
    }

    # A row without an id could be any product: nothing is pruned, and the report says why.
    unnamed = _jsonl(
        tmp_path / "unnamed.jsonl", [{"id": "drill", "title": "Drill"}, {"title": "?"}]
    )
    report = ingest(unnamed, backend, encoder, tmp_path, prune=True)
    assert report.pruned == 0 and report.points_in_collection == 4
    assert report.not_pruned.startswith("row 2 has no product id")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("", encoding="utf-8")
    report = ingest(empty, backend, encoder, tmp_path, prune=True)
    assert report.pruned == 0 and report.points_in_collection == 4
    assert "lists no products" in report.not_pruned
    backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_product_kept_as_stored_by_a_prune_keeps_its_words(backend_name, encoder, tmp_path):
    backend = _empty_backend(backend_name, tmp_path)
    desk = {
        "id": "V2",
        "title": "Desk",
        "brand": "Oakwood",
        "category": "furniture > office",
        "attributes": {"Finish": "Walnut veneer", "Legs": "Steel"},
        "price": 120,
    }
    ingest(
        _jsonl(tmp_path / "a.jsonl", [{"id": "V1", "title": "Disk drive", "price": 50}, desk]),
        backend,
        encoder,
        tmp_path,
    )
    words = read_vocabulary(backend)
    assert {"desk", "oakwood", "furniture", "walnut", "legs"} <= set(words)
    rejected = {**desk, "price": "120 EUR"}
    again = _jsonl(
        tmp_path / "b.jsonl", [{"id": "V1", "title": "Disk drive", "price": 50}, rejected]
    )
    report = ingest(again, backend, encoder, tmp_path, prune=True)
    assert (report.rejected, report.pruned, report.not_pruned) == (1, 0, None)
    assert read_vocabulary(backend) == words
    assert ProductSearch(backend, encoder).searched_text(Query("desk")) == "desk"
    backend.close()


def _all_payloads(backend, encoder):
    dense = SearchOptions(mode=SearchMode.DENSE, top_k=100, fix_typos=False)
    return [h.payload for h in ProductSearch(backend, encoder).search(Query("tools"), dense)]
