"""Ingest end to end: a re-ingest is an upsert, bad rows are rejected, and what a
collection was made with (encoder, product text template, BM25 k and b) must match."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_helpers import ingest

from shopsearch.errors import EncoderMismatchError, UsageError
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import SearchMode
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.documents import read_meta
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import CollectionMeta, EncoderInfo


def test_reingest_is_an_upsert_that_encodes_only_what_changed(small_catalog, encoder, tmp_path):
    backend = EdgeBackend(tmp_path / "products")
    first = ingest(small_catalog, backend, encoder, tmp_path)
    second = ingest(small_catalog, backend, encoder, tmp_path)
    assert first.created and not second.created
    assert (first.unchanged, second.upserted, second.unchanged) == (0, 120, 120)
    assert first.points_in_collection == second.points_in_collection == 120
    rows = pq.read_table(small_catalog).to_pylist()
    rows[5]["title"] = "Zanzibar espadrilles"
    edited = tmp_path / "edited.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(small_catalog)), edited)
    third = ingest(edited, backend, encoder, tmp_path)
    assert (third.upserted, third.unchanged, third.points_in_collection) == (120, 119, 120)
    search = ProductSearch(backend, encoder)
    for mode in (SearchMode.BM25, SearchMode.DENSE):
        top = search.search(Query("zanzibar espadrilles"), SearchOptions(mode=mode, top_k=1))
        assert top[0].payload["product_id"] == rows[5]["id"], mode
    backend.close()


def test_bad_rows_are_rejected_and_good_ones_ingested(encoder, tmp_path):
    catalog = tmp_path / "bad.jsonl"
    lines = [
        {"id": "ok-1", "title": "Red cotton t-shirt", "price": 9.5, "brand": "Acme"},
        {"id": "ok-2", "title": "Blue denim jeans", "price": "25", "in_stock": "yes"},
        {"title": "No id here"},
        {"id": "bad-price", "title": "Drill", "price": "cheap"},
        {"id": "nan-price", "title": "Saw", "price": float("nan")},
        {"id": "no-title", "title": "   "},
        {"id": "ok-1", "title": "Duplicate of the first row"},
        {"id": "bad-stock", "title": "Hammer", "in_stock": "perhaps"},
        {"id": "ok-3", "title": "Green wool scarf", "attributes": {"Material": "Wool"}},
    ]
    text = "\n".join(json.dumps(x) for x in lines[:5]) + "\n{not json\n"
    text += "\n".join(json.dumps(x) for x in lines[5:]) + "\n"
    catalog.write_text(text.replace("NaN", "NaN"), encoding="utf-8")
    backend = EdgeBackend(tmp_path / "products")
    report = ingest(catalog, backend, encoder, tmp_path)
    assert (report.read, report.upserted, report.rejected) == (10, 3, 7)
    assert report.read == report.upserted + report.rejected
    assert backend.count() == 3
    rejects = [json.loads(x) for x in Path(report.rejects_file).read_text().splitlines()]
    reasons = {r["row"]: (r["field"], r["reason"]) for r in rejects}
    assert reasons == {
        3: ("id", "missing id"),
        4: ("price", "price 'cheap' is not a number"),
        5: ("price", "price is NaN"),
        6: (None, reasons[6][1]),
        7: ("title", "missing title"),
        8: ("id", "duplicate id (first at row 1)"),
        9: ("in_stock", "in_stock must be true or false, got 'perhaps'"),
    }
    assert "invalid JSON" in reasons[6][1]
    backend.close()


def test_querying_with_another_encoder_is_an_error(encoder, tmp_path):
    backend = EdgeBackend(tmp_path / "other")
    other = EncoderInfo("some/other-model", encoder.dimension, "0" * 64)
    backend.create(CollectionMeta(other, {"avg_len": 20.0}, "{title}"))
    with pytest.raises(EncoderMismatchError, match="some/other-model"):
        ProductSearch(backend, encoder)
    backend.close()


def test_changing_template_of_existing_collection_needs_recreate(
    edge, small_catalog, encoder, tmp_path
):
    from shopsearch.ingest.product_text import ProductTextTemplate

    with pytest.raises(UsageError, match="--recreate"):
        ingest(small_catalog, edge, encoder, tmp_path, template=ProductTextTemplate("{title}"))


def test_bm25_k_and_b_shape_a_new_collection_and_must_match_an_existing_one(
    edge, small_catalog, encoder, tmp_path
):
    backend = EdgeBackend(tmp_path / "tuned")
    ingest(small_catalog, backend, encoder, tmp_path, bm25=Bm25Settings(k=1.2, b=0.5))
    stored, default = read_meta(backend).bm25, read_meta(edge).bm25
    assert (stored["k"], stored["b"]) == (1.2, 0.5)
    assert (default["k"], default["b"]) == (Bm25Settings.k, Bm25Settings.b)
    assert stored["avg_len"] == default["avg_len"]  # fitted to the same catalog
    # The documents' BM25 vectors were embedded with them: the same query scores otherwise.
    query, bm25_only = Query("women's casual shoes"), SearchOptions(mode=SearchMode.BM25)
    tuned = [h.score for h in ProductSearch(backend, encoder).search(query, bm25_only)]
    stock = [h.score for h in ProductSearch(edge, encoder).search(query, bm25_only)]
    assert tuned and stock and tuned != pytest.approx(stock)
    with pytest.raises(UsageError, match=r"k 1.2, b 0.5; re-ingest with --recreate"):
        ingest(small_catalog, backend, encoder, tmp_path, bm25=Bm25Settings(k=0.9, b=0.5))
    again = ingest(small_catalog, backend, encoder, tmp_path, bm25=Bm25Settings(k=1.2, b=0.5))
    assert again.unchanged == 120 and not again.created
    with pytest.raises(UsageError, match=r"--bm25-b must be between 0 and 1 \(got 1.5\)"):
        ingest(
            small_catalog,
            EdgeBackend(tmp_path / "bad"),
            encoder,
            tmp_path,
            bm25=Bm25Settings(b=1.5),
        )
    backend.close()
