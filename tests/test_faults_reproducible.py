"""The same catalog, model and query give the same results: two clean ingests store the same
points and rank the same in every mode; a collection synced to the catalog (an ingest of an
older catalog, then of this one) stores the same vectors as a clean ingest.

The catalog holds groups of products with one text (sizes of a shirt, a product listed
twice), whose scores tie in every mode: which members of a group make a page, and the ranks
RRF gives them, are where two collections of the same products could differ.
benchmarks/reproducibility.py measures the same on the Home Depot dev queries.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_helpers import ingest

from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import FusionMethod, Hit, SearchMode
from shopsearch.store.edge import EdgeBackend

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"
TIED_TEXTS = 12  # groups of identical products
TIED_EACH = 5  # more than a page's tie margin past its end
BATCH = 32  # rows per ingest batch (search_helpers.ingest)
QUERIES = [
    "women's casual shoes",
    "gold ring",
    "analog watch for men",
    "black boots",
    "cotton",
    "stainless steel bottle",
    "shirt",
    "bag",
]
MODES = [
    (SearchMode.DENSE, FusionMethod.RRF),
    (SearchMode.BM25, FusionMethod.RRF),
    (SearchMode.HYBRID, FusionMethod.RRF),
    (SearchMode.HYBRID, FusionMethod.DBSF),
]


@pytest.fixture(scope="module")
def int8(exported_model):
    """The CLI's default precision, whose batched vectors depend on their batch-mates."""
    from shopsearch.encoders.onnx_encoder import OnnxEncoder

    return OnnxEncoder.load(exported_model, precision="int8", threads=2)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Path:
    """100 demo products, and 12 more texts listed 5 times each under their own ids."""
    table = pq.read_table(DEMO)
    rows = table.to_pylist()
    distinct = rows[::10][:100]
    tied = [
        {**row, "id": f"{row['id']}-copy{copy}"}
        for row in rows[5::80][:TIED_TEXTS]
        for copy in range(TIED_EACH)
    ]
    mixed = [row for pair in zip(distinct, tied, strict=False) for row in pair]
    mixed += distinct[len(tied) :]
    path = tmp_path_factory.mktemp("repro") / "catalog.parquet"
    pq.write_table(pa.Table.from_pylist(mixed, schema=table.schema), path)
    return path


def _queries(catalog: Path) -> list[str]:
    """The fixed queries, and the title of each tied group (a query its members tie on)."""
    titles = pq.read_table(catalog, columns=["id", "title"]).to_pylist()
    return QUERIES + sorted({r["title"] for r in titles if "-copy" in r["id"]})


def _ingest(catalog: Path, directory: Path, encoder) -> EdgeBackend:
    backend = EdgeBackend(directory / "products")
    report = ingest(catalog, backend, encoder, directory)
    assert report.read == report.upserted == report.points_in_collection
    return backend


def _points(backend: EdgeBackend) -> dict[str, tuple]:
    ids = list(backend.point_ids())
    records = backend.shard().retrieve(ids, with_payload=True, with_vector=True)
    points = {}
    for rec in records:
        sparse = rec.vector["bm25"]
        points[str(rec.id)] = (
            np.asarray(rec.vector["dense"], dtype=np.float32).tobytes(),
            (tuple(sparse.indices), tuple(sparse.values)),
            json.dumps(rec.payload, sort_keys=True),
        )
    return points


def _pages(search: ProductSearch, queries: list[str], exact: bool) -> dict[str, list]:
    """Each mode's top 20 of each query, and its top k for k = 1..5 (a cut inside a tie)."""
    pages = {}
    for mode, fusion in MODES:
        for top_k in (1, 2, 3, 4, 5, 20):
            options = SearchOptions(mode=mode, fusion=fusion, top_k=top_k, exact=exact)
            hits = search.search_batch([Query(q) for q in queries], options)
            key = f"{mode.value}/{fusion.value}/top {top_k}/exact {exact}"
            pages[key] = [[(h.point_id, h.score) for h in page] for page in hits]
    return pages


def _tie_groups(hits: list[Hit], tol: float = 1e-5) -> list[tuple[float, frozenset[str]]]:
    """A ranking as its runs of equal scores (within `tol`: a collection whose points lie
    in other segments sums BM25's terms in another order), each as a set; the last run may
    be cut by the page at another member, so only its score counts."""
    groups: list[tuple[float, set[str]]] = []
    for h in hits:
        if not groups or groups[-1][0] - h.score > tol:
            groups.append((h.score, set()))
        groups[-1][1].add(h.point_id)
    return [(score, frozenset(ids)) for score, ids in groups[:-1]] + [
        (score, frozenset()) for score, _ in groups[-1:]
    ]


def _same_ranking(x: list[Hit], y: list[Hit], tol: float = 1e-5) -> bool:
    gx, gy = _tie_groups(x, tol), _tie_groups(y, tol)
    return len(gx) == len(gy) and all(
        abs(sx - sy) <= tol and ix == iy for (sx, ix), (sy, iy) in zip(gx, gy, strict=True)
    )


@pytest.fixture(scope="module")
def clean(catalog, int8, tmp_path_factory) -> tuple[EdgeBackend, EdgeBackend]:
    """Two clean ingests of the catalog, each into a directory of its own."""
    root = tmp_path_factory.mktemp("clean")
    return _ingest(catalog, root / "a", int8), _ingest(catalog, root / "b", int8)


def test_two_clean_ingests_store_the_same_points(clean) -> None:
    a, b = (_points(backend) for backend in clean)
    assert len(a) == 100 + TIED_TEXTS * TIED_EACH
    assert a.keys() == b.keys()
    differ = [pid for pid in a if a[pid] != b[pid]]
    assert not differ, f"{len(differ)} of {len(a)} points differ"


@pytest.mark.xfail(
    strict=True,
    reason="two changes outside this test's reach make it pass: (1) Edge numbers the points of "
    "one upsert in a random order (it gathers them in a hash map) and orders equal scores by "
    "that number, so EdgeBackend.upsert must apply a batch one point per operation, in order, "
    "for a collection the optimizer does not rebuild (a small one) to tie the same way twice; "
    "(2) Qdrant returns a fused list's equal scores in a new order on each call, so a tie "
    "running past a page's end + TIE_MARGIN must be read whole (ProductSearch) before the "
    "page is cut",
)
def test_two_clean_ingests_rank_the_same_in_every_mode(clean, catalog, int8) -> None:
    queries = _queries(catalog)
    for exact in (False, True):
        a, b = (_pages(ProductSearch(backend, int8), queries, exact) for backend in clean)
        differ = {
            key: sum(x != y for x, y in zip(a[key], b[key], strict=True))
            for key in a
            if a[key] != b[key]
        }
        assert not differ, f"queries ranked differently (of {len(queries)}): {differ}"


def test_a_synced_collection_stores_and_scores_what_a_clean_ingest_does(
    clean, catalog, int8, tmp_path
) -> None:
    """Yesterday's catalog (every 7th title another) ingested, then today's: only the edited
    products are encoded again, in batches of their own, and their vectors, and their
    neighbours', are those of a clean ingest. Equal scores may fall in another order (the
    edited products were written later), so rankings compare as runs of equal scores.

    The first batch is left as it is: a new collection fits BM25's average document length to
    it, and keeps it, so a collection created from another first batch weighs BM25 terms
    (slightly) otherwise, by design."""
    table = pq.read_table(catalog)
    titles = [
        f"{t} (old)" if i % 7 == 0 and i >= BATCH else t
        for i, t in enumerate(table.column("title").to_pylist())
    ]
    old = tmp_path / "old.parquet"
    column = table.schema.get_field_index("title")
    pq.write_table(table.set_column(column, "title", pa.array(titles, pa.string())), old)
    synced = _ingest(old, tmp_path / "synced", int8)
    report = ingest(catalog, synced, int8, tmp_path)
    assert report.upserted == report.read and 0 < report.upserted - report.unchanged < 30

    a, s = _points(clean[0]), _points(synced)
    differ = [pid for pid in a if a[pid] != s.get(pid)]
    assert not differ, f"{len(differ)} of {len(a)} points differ from a clean ingest's"
    queries = _queries(catalog)
    searches = [ProductSearch(clean[0], int8), ProductSearch(synced, int8)]
    for mode in (SearchMode.DENSE, SearchMode.BM25):
        for exact in (False, True):
            options = SearchOptions(mode=mode, top_k=20, exact=exact)
            ranked = [s.search_batch([Query(q) for q in queries], options) for s in searches]
            for query, x, y in zip(queries, *ranked, strict=True):
                assert _same_ranking(x, y), (mode, exact, query)


@pytest.mark.parametrize("precision", ["int8", "fp32"])
def test_a_products_vector_depends_on_its_text_alone(precision, exported_model, catalog) -> None:
    """Whatever `--threads`, whatever products are encoded beside it, in whatever order: the
    runs' contents never depend on the thread count, and int8 texts go one per run."""
    from shopsearch.encoders.onnx_encoder import OnnxEncoder
    from shopsearch.ingest.product_text import ProductTextTemplate
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.ingest.validate import validate

    rows = next(CatalogReader(catalog).batches(24))
    texts = [ProductTextTemplate().render(validate(row)) for row in rows]  # type: ignore[arg-type]
    encoders = [OnnxEncoder.load(exported_model, precision, threads=t) for t in (1, 2)]
    whole = encoders[0].encode_documents(texts)
    for encoder in encoders:
        assert np.array_equal(encoder.encode_documents(texts), whole)
        assert np.array_equal(encoder.encode_documents(texts[::-1]), whole[::-1])
        assert np.array_equal(encoder.encode_documents(texts[5:13]), whole[5:13])
        assert np.array_equal(encoder.encode_documents([texts[7]]), whole[7:8])
