"""Whether a collection's products share families (variants) is recorded at ingest,
kept by a prune's rejected rows, and read as unknown for collections from before."""

from dataclasses import replace

import pytest
from search_helpers import _empty_backend, _jsonl, ingest

from shopsearch.errors import CollectionError
from shopsearch.store.documents import read_meta, write_meta
from shopsearch.store.schema import CollectionMeta


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_ingest_records_whether_products_share_families(backend_name, encoder, tmp_path):
    """Only a product naming a parent other than itself makes a family of several; once
    recorded, a family stays recorded until a prune leaves one catalog's products (a later
    catalog without families does not clear it: the family's variants are still stored)."""
    backend = _empty_backend(backend_name, tmp_path)
    own_parents = _jsonl(
        tmp_path / "own.jsonl",
        [
            {"id": "drill", "title": "Cordless drill", "parent_id": "drill"},
            {"id": "saw", "title": "Mitre saw"},
        ],
    )
    ingest(own_parents, backend, encoder, tmp_path)
    assert read_meta(backend).variants is False
    sizes = _jsonl(
        tmp_path / "sizes.jsonl",
        [
            {"id": "drill", "title": "Cordless drill", "parent_id": "drill"},
            {"id": "drill-18v", "title": "Cordless drill, 18V", "parent_id": "drill"},
        ],
    )
    ingest(sizes, backend, encoder, tmp_path)
    assert read_meta(backend).variants is True
    ingest(own_parents, backend, encoder, tmp_path)
    assert read_meta(backend).variants is True  # drill-18v is still stored
    ingest(own_parents, backend, encoder, tmp_path, prune=True)
    assert read_meta(backend).variants is False
    ingest(sizes, backend, encoder, tmp_path, prune=True)
    assert read_meta(backend).variants is True
    ingest(own_parents, backend, encoder, tmp_path, recreate=True)
    assert read_meta(backend).variants is False
    backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_prune_records_families_kept_by_rejected_rows_and_for_old_collections(
    backend_name, encoder, tmp_path
):
    """A prune keeps the stored version of a product whose row is rejected, family and all;
    it also records the families of a collection ingested before they were recorded."""
    backend = _empty_backend(backend_name, tmp_path)
    drill = {"id": "drill", "title": "Cordless drill", "parent_id": "drill"}
    variant = {"id": "drill-18v", "title": "Cordless drill, 18V", "parent_id": "drill"}
    ingest(_jsonl(tmp_path / "a.jsonl", [drill, variant]), backend, encoder, tmp_path)
    bad_row = {**variant, "price": "free"}
    report = ingest(
        _jsonl(tmp_path / "b.jsonl", [drill, bad_row]), backend, encoder, tmp_path, prune=True
    )
    assert (report.rejected, report.pruned, report.not_pruned) == (1, 0, None)
    assert read_meta(backend).variants is True  # drill-18v is kept, as stored
    write_meta(backend, replace(read_meta(backend), variants=None))
    ingest(_jsonl(tmp_path / "c.jsonl", [drill]), backend, encoder, tmp_path)
    assert read_meta(backend).variants is None  # drill-18v may be anything: not recorded
    report = ingest(_jsonl(tmp_path / "c.jsonl", [drill]), backend, encoder, tmp_path, prune=True)
    assert report.pruned == 1 and read_meta(backend).variants is False
    backend.close()


def test_collections_before_the_variants_record_read_as_maybe(encoder, tmp_path):
    backend = _empty_backend("edge", tmp_path)
    saw = _jsonl(tmp_path / "one.jsonl", [{"id": "saw", "title": "Saw"}])
    ingest(saw, backend, encoder, tmp_path)
    stored = read_meta(backend).to_dict()
    del stored["variants"]
    assert CollectionMeta.from_dict(stored).variants is None
    with pytest.raises(CollectionError, match="metadata is unreadable"):
        CollectionMeta.from_dict({**stored, "variants": "yes"})
    backend.close()
