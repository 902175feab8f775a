"""Ingest + search end to end on real components: Edge shard, QdrantClient(':memory:'),
the real exported model."""

import itertools
import json
import math
import os
import re
import threading
from collections import Counter
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient

from shopsearch.encoders.onnx_encoder import OnnxEncoder
from shopsearch.errors import (
    CatalogError,
    CollectionBusyError,
    CollectionError,
    EncoderMismatchError,
    ServerError,
    UsageError,
)
from shopsearch.evaluation.systems import system_name
from shopsearch.ingest.pipeline import ingest_catalog
from shopsearch.ingest.readers import CatalogReader
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import (
    DEFAULT_BM25_WEIGHT,
    ProductSearch,
    Query,
    SearchOptions,
)
from shopsearch.search.variants import MAX_DEPTH, collapse, deeper_limit, first_limit
from shopsearch.store.backend import (
    FusionMethod,
    Hit,
    ProductPoint,
    SearchMode,
    SearchRequest,
    SparseVec,
)
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.counts import ValueRange
from shopsearch.store.edge import EdgeBackend, _read_ahead
from shopsearch.store.schema import CollectionMeta, EncoderInfo, point_id
from shopsearch.store.server import ServerBackend, supports_weighted_rrf


@pytest.fixture(scope="module")
def encoder(exported_model):
    return OnnxEncoder.load(exported_model, precision="fp32")


def ingest(catalog, backend, encoder, tmp_path, **kw):
    return ingest_catalog(
        CatalogReader(catalog),
        backend,
        encoder,
        rejects_path=tmp_path / "rejects.jsonl",
        batch_size=32,
        **kw,
    )


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def edge(small_catalog, encoder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("edge")
    backend = EdgeBackend(tmp / "products")
    ingest(small_catalog, backend, encoder, tmp)
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def server(small_catalog, encoder, tmp_path_factory):
    backend = ServerBackend(QdrantClient(":memory:"), "products", ":memory:")
    ingest(small_catalog, backend, encoder, tmp_path_factory.mktemp("server"))
    yield backend
    backend.close()


QUERIES = ["women's casual shoes", "gold ring", "analog watch for men", "black boots", "cotton"]
# BM25 candidate lists of these have no tied scores (see the RRF test).
TIE_FREE_QUERIES = ["stainless steel bottle", "canvas sneakers", "wrist watch"]


@pytest.mark.parametrize(
    ("mode", "fusion"),
    [
        (SearchMode.DENSE, FusionMethod.RRF),
        (SearchMode.BM25, FusionMethod.RRF),
        (SearchMode.HYBRID, FusionMethod.DBSF),
    ],
)
def test_edge_and_server_return_the_same_ranking(edge, server, encoder, mode, fusion):
    options = SearchOptions(mode=mode, fusion=fusion, top_k=10)
    for text in QUERIES:
        for conditions in ([], parse_filters(["price<=2000"])):
            q = Query(text, conditions)
            a = ProductSearch(edge, encoder).search(q, options)
            b = ProductSearch(server, encoder).search(q, options)
            assert _ranking(a) == _ranking(b), (text, conditions)
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
@pytest.mark.parametrize(
    "options",
    [
        SearchOptions(),
        SearchOptions(fusion=FusionMethod.DBSF),
        SearchOptions(mode=SearchMode.DENSE, exact=True),
        SearchOptions(mode=SearchMode.BM25),
    ],
    ids=["rrf", "dbsf", "dense", "bm25"],
)
def test_an_offset_pages_through_one_ranking(edge, server, encoder, backend_name, options):
    """Page 2 is what follows page 1 in a search two pages deep, ties included (ordered by
    point id, not as Qdrant happened to order them); a page past the last result is empty."""
    search = ProductSearch({"edge": edge, "server": server}[backend_name], encoder)
    for text in QUERIES:
        whole = search.search(Query(text), replace(options, top_k=8))
        pages = [search.search(Query(text), replace(options, top_k=4, offset=o)) for o in (0, 4)]
        assert pages[0] + pages[1] == whole, text
        assert all(h.payload.get("title") for h in pages[1])
    assert search.search(Query("boots"), replace(options, offset=10_000)) == []
    with pytest.raises(UsageError, match="--offset must be at least 0"):
        replace(options, offset=-1)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_equal_scores_come_in_point_id_order_every_time(edge, server, encoder, backend_name):
    """Qdrant orders equal scores arbitrarily, differently from call to call; RRF's rank-based
    scores tie often, and BM25's do between products with the same words."""
    search = ProductSearch({"edge": edge, "server": server}[backend_name], encoder)
    ties = 0
    for options in (SearchOptions(top_k=40), SearchOptions(mode=SearchMode.BM25, top_k=40)):
        for text in QUERIES:
            hits = search.search(Query(text), options)
            assert hits == search.search(Query(text), options), text
            for a, b in itertools.pairwise(hits):
                assert a.score >= b.score
                if a.score == b.score:
                    ties += 1
                    assert a.point_id < b.point_id
    assert ties >= 5, ties  # the rule was exercised


def test_the_docker_compose_file_is_valid_and_runs_a_server_that_takes_rrf_weights():
    """docker-compose.yml is shipped for shops that outgrow the embedded store: Debian's
    docker-compose checks it without an engine (.ci/run installs it where it can)."""
    import shutil
    import subprocess

    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose is not installed (Debian: apt-get install docker-compose)")
    path = Path(__file__).parents[1] / "docker-compose.yml"
    proc = subprocess.run([compose, "-f", str(path), "config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    image = re.search(r"image: qdrant/qdrant:v(\S+)", proc.stdout)
    assert image and supports_weighted_rrf(image.group(1)), proc.stdout


@pytest.fixture
def advised(monkeypatch) -> dict[str, list[tuple[int, int]]]:
    """Every posix_fadvise call from here on, passed through: path -> [(offset, length)]."""
    calls: dict[str, list[tuple[int, int]]] = {}
    advise = os.posix_fadvise

    def recording(fd: int, offset: int, length: int, advice: int) -> None:
        calls.setdefault(os.readlink(f"/proc/self/fd/{fd}"), []).append((offset, length))
        advise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    return calls


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_edge_load_reads_ahead_what_edge_copies_into_ram(edge, encoder, advised):
    """Edge drops a shard's files from the page cache after loading them, so a load first asks
    the kernel to read them ahead; payloads and sparse vectors, which Edge reads lazily, are
    left alone."""
    edge.close()
    edge.load_index()
    assert any("vector_storage-dense" in path for path in advised)
    assert not [p for p in advised if "payload_storage" in p or "vector_storage-bm25" in p]
    hits = ProductSearch(edge, encoder).search(Query("black boots"), SearchOptions(top_k=3))
    assert len(hits) == 3


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_read_ahead_advises_every_byte_in_steps_the_kernel_honours(tmp_path, advised):
    """Linux reads at most the device's read-ahead window per WILLNEED advice, so one advice
    for a whole file left all but its first 8 MB on disk: the advice covers each file in
    steps no larger than the default window (128 KB), and skips lazily read storage."""
    segment = tmp_path / "segments" / "s1"
    vectors = segment / "vector_storage-dense" / "matrix.dat"
    payloads = segment / "payload_storage" / "page_0.dat"
    for path, size in ((vectors, 1_000_003), (payloads, 300_000)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\0" * size)
    _read_ahead(tmp_path)
    assert list(advised) == [str(vectors)]
    steps = advised[str(vectors)]
    assert all(0 < length <= 128 * 1024 for _, length in steps)
    assert steps[0][0] == 0
    assert all(a + la == b for (a, la), (b, _) in itertools.pairwise(steps))
    assert steps[-1][0] + steps[-1][1] >= vectors.stat().st_size


def test_edge_and_server_agree_on_rrf_fusion(edge, server, encoder):
    """RRF fuses ranks, and engines order tied BM25 scores differently, so this compares
    the queries whose BM25 candidates have no ties (checked here, on both engines)."""
    options = SearchOptions(mode=SearchMode.HYBRID, bm25_weight=1.0, top_k=10)  # plain RRF
    bm25_all = SearchOptions(mode=SearchMode.BM25, top_k=options.candidates)
    compared = 0
    for text in TIE_FREE_QUERIES:
        for backend in (edge, server):
            scores = [
                round(h.score, 4)
                for h in ProductSearch(backend, encoder).search(Query(text), bm25_all)
            ]
            assert len(scores) == len(set(scores)), text
        a = ProductSearch(edge, encoder).search(Query(text), options)
        b = ProductSearch(server, encoder).search(Query(text), options)
        assert _ranking(a) == _ranking(b), text
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        compared += 1
    assert compared == len(TIE_FREE_QUERIES)


def _ranking(hits, tol=1e-3):
    """Ids in rank order, each group of tied scores as a set; the last group may be cut by
    the limit at a different member in each engine, so only its score is compared."""
    groups: list[set[str]] = []
    top = None
    for h in hits:
        if top is None or top - h.score > tol:
            groups.append(set())
            top = h.score
        groups[-1].add(h.point_id)
    return groups[:-1]


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_filters_restrict_results(backend_name, request, encoder):
    search = ProductSearch(request.getfixturevalue(backend_name), encoder)
    cases = {
        "price<=500": lambda p: p["price"] <= 500,
        "price>=1000": lambda p: p["price"] >= 1000,
        "color in (Black,Brown)": lambda p: p.get("color") in ("Black", "Brown"),
        "category=footwear": lambda p: "footwear" in p["category"],
        "in_stock=true": lambda p: p["in_stock"] is True,
        "category!=footwear": lambda p: "footwear" not in (p.get("category") or []),
    }
    for expr, check in cases.items():
        hits = search.search(Query("shoes", parse_filters([expr])), SearchOptions(top_k=20))
        assert hits, expr
        assert all(check(h.payload) for h in hits), expr
    both = parse_filters(["category=footwear", "price<=500"])
    hits = search.search(Query("shoes", both), SearchOptions(top_k=50))
    assert hits and all(
        h.payload["price"] <= 500 and "footwear" in h.payload["category"] for h in hits
    )


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
    stored, default = backend.read_meta().bm25, edge.read_meta().bm25
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
    vocabulary = edge.read_vocabulary()
    assert vocabulary == server.read_vocabulary()
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
    assert backend.read_vocabulary() == {
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
    assert set(backend.read_vocabulary()) == {"cordless", "garden", "hose", "reel", "trimmer"}
    # A collection from before typo tolerance has no vocabulary: queries run as typed.
    (backend.directory / "vocabulary.json").unlink()
    search = ProductSearch(backend, encoder)
    assert search.searched_text(Query("hoze")) == "hoze"
    assert search.search(Query("hoze"), SearchOptions(mode=SearchMode.BM25)) == []
    backend.close()


def _empty_backend(name, tmp_path):
    """A new Edge directory or an empty in-memory server, for tests run on both backends."""
    if name == "edge":
        return EdgeBackend(tmp_path / "products")
    return ServerBackend(QdrantClient(":memory:"), "products", ":memory:")


def _unreadable_parquet(path):
    """A parquet file whose footer opens but whose first data page is garbage."""
    rows = [{"id": f"b{i}", "title": f"Rake {i}"} for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="none")
    offset = pq.ParquetFile(path).metadata.row_group(0).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    return path


def _titles(path, titles):
    return _jsonl(path, [{"id": f"{path.stem}-{i}", "title": t} for i, t in enumerate(titles)])


TOOLS = ["Cordless drill", "Claw hammer", "Mitre saw"]
GARDEN = ["Garden hose", "Hose reel", "Cordless trimmer", "Lawn mower"]


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_recreate_whose_catalog_cannot_be_read_leaves_the_old_collection(
    backend_name, encoder, tmp_path
):
    backend = _empty_backend(backend_name, tmp_path)
    ingest(_titles(tmp_path / "tools.jsonl", TOOLS), backend, encoder, tmp_path)
    tools_words = backend.read_vocabulary()
    with pytest.raises(CatalogError, match=r"broken\.parquet after row 0"):
        ingest(
            _unreadable_parquet(tmp_path / "broken.parquet"),
            backend,
            encoder,
            tmp_path,
            recreate=True,
        )
    assert backend.count() == 3 and backend.read_vocabulary() == tools_words
    report = ingest(
        _titles(tmp_path / "garden.jsonl", GARDEN), backend, encoder, tmp_path, recreate=True
    )
    assert report.created and report.points_in_collection == backend.count() == 4
    assert set(backend.read_vocabulary()) == {
        "garden",
        "hose",
        "reel",
        "cordless",
        "trimmer",
        "lawn",
        "mower",
    }
    backend.close()


def test_an_interrupted_edge_recreate_leaves_the_old_collection_and_no_leftovers(encoder, tmp_path):
    data = tmp_path / "data"
    backend = EdgeBackend(data / "products")
    ingest(_titles(tmp_path / "tools.jsonl", TOOLS), backend, encoder, tmp_path)
    garden = _titles(tmp_path / "garden.jsonl", GARDEN)

    def ctrl_c(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # after the first batch went into the new shard
        ingest(garden, backend, encoder, tmp_path, recreate=True, on_rows=ctrl_c)
    assert sorted(os.listdir(data)) == [".products.lock", "products"]  # the lock file stays
    assert backend.count() == 3 and "drill" in backend.read_vocabulary()
    search = ProductSearch(backend, encoder)
    assert search.search(Query("drill"), SearchOptions(top_k=1))[0].payload["title"] == TOOLS[0]
    backend.close()
    # What a killed run leaves behind does not stop the next one.
    (data / ".products.recreating" / "shard").mkdir(parents=True)
    (data / ".products.recreating" / "shopsearch.json").write_text("{", encoding="utf-8")
    (data / ".products.replaced").mkdir()
    report = ingest(garden, backend, encoder, tmp_path, recreate=True)
    assert report.created and report.points_in_collection == 4
    assert sorted(os.listdir(data)) == [".products.lock", "products"]
    assert backend.count() == 4 and "drill" not in backend.read_vocabulary()
    search = ProductSearch(backend, encoder)
    assert search.search(Query("mower"), SearchOptions(top_k=1))[0].payload["title"] == GARDEN[3]
    backend.close()


def test_an_edge_ingest_fails_at_once_while_another_process_writes_the_collection(
    encoder, tmp_path
):
    """Two --recreate runs at once used to delete each other's build directory (the second
    one crashed the first with Edge's IO error); a plain ingest during a --recreate wrote
    into the collection about to be swapped out. The writer lock refuses the second ingest,
    and dies with the process that holds it."""
    import subprocess
    import sys

    data = tmp_path / "data"
    backend = EdgeBackend(data / "products")
    ingest(_titles(tmp_path / "tools.jsonl", TOOLS), backend, encoder, tmp_path)
    backend.close()
    code = (
        "import time\nfrom pathlib import Path\nfrom shopsearch.store.edge import EdgeBackend\n"
        f"with EdgeBackend(Path({str(backend.directory)!r})).writing():\n"
        "    print('locked', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        garden = _titles(tmp_path / "garden.jsonl", GARDEN)
        for recreate in (False, True):
            with pytest.raises(CollectionBusyError) as err:
                ingest(garden, backend, encoder, tmp_path, recreate=recreate)
            assert str(err.value) == (
                f"collection 'products' at {backend.directory} is being written by another "
                f"ingest (process {holder.pid}): wait for it to finish (lock file "
                f"{data / '.products.lock'})"
            )
        assert backend.count() == 3  # readers are not locked out
        backend.close()
        assert sorted(os.listdir(data)) == [".products.lock", "products"]  # no build started
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    report = ingest(garden, backend, encoder, tmp_path, recreate=True)
    assert report.points_in_collection == 4
    backend.close()


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
    assert set(backend.read_vocabulary()) == {
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
    words = backend.read_vocabulary()
    assert {"desk", "oakwood", "furniture", "walnut", "legs"} <= set(words)
    rejected = {**desk, "price": "120 EUR"}
    again = _jsonl(
        tmp_path / "b.jsonl", [{"id": "V1", "title": "Disk drive", "price": 50}, rejected]
    )
    report = ingest(again, backend, encoder, tmp_path, prune=True)
    assert (report.rejected, report.pruned, report.not_pruned) == (1, 0, None)
    assert backend.read_vocabulary() == words
    assert ProductSearch(backend, encoder).searched_text(Query("desk")) == "desk"
    backend.close()


def _all_payloads(backend, encoder):
    dense = SearchOptions(mode=SearchMode.DENSE, top_k=100, fix_typos=False)
    return [h.payload for h in ProductSearch(backend, encoder).search(Query("tools"), dense)]


def test_collection_locked_by_another_process_is_a_clear_error(edge, encoder):
    import subprocess
    import sys

    edge.count()  # this process holds the shard open
    code = (
        "from pathlib import Path; from shopsearch.store.edge import EdgeBackend; "
        f"EdgeBackend(Path({str(edge.directory)!r})).count()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "open in another process" in proc.stderr


def test_quantised_index_returns_full_precision_scores(tmp_path):
    """The default index walks int8 copies of the vectors; the rescoring every query asks for
    must hand back exact cosine scores, and the nearest neighbours, as exact search does.
    A reopened shard answers as before."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, 384))
    vectors = centres[rng.integers(0, 40, 8000)] + rng.normal(scale=0.6, size=(8000, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    backend = EdgeBackend(tmp_path / "products")
    assert backend.index.int8_quantization
    encoder = EncoderInfo("random", 384, "f" * 64)
    backend.create(CollectionMeta(encoder=encoder, bm25={}, product_text_template="{title}"))
    empty = SparseVec([], [])
    for start in range(0, len(vectors), 1000):
        backend.upsert(
            [
                ProductPoint(point_id(str(i)), vectors[i], empty, {"product_id": str(i)})
                for i in range(start, start + 1000)
            ]
        )
    backend.finish_writes()  # 8,000 x 384 floats is above the full-scan threshold: HNSW + int8
    queries = vectors[:20] + rng.normal(scale=0.05, size=(20, 384)).astype(np.float32)
    requests = [
        SearchRequest(dense=q, sparse=None, mode=SearchMode.DENSE, exact=exact, with_payload=True)
        for exact in (False, True)
        for q in queries
    ]
    results = backend.search_batch(requests)
    approx, exact = results[:20], results[20:]
    backend.close()
    reopened = EdgeBackend(tmp_path / "products")
    assert reopened.search_batch(requests) == results
    reopened.close()
    for query, hits, truth in zip(queries, approx, exact, strict=True):
        ids = [int(h.payload["product_id"]) for h in hits]
        cosines = vectors[ids] @ (query / np.linalg.norm(query))
        np.testing.assert_allclose([h.score for h in hits], cosines, atol=1e-5)
        assert ids[0] == int(truth[0].payload["product_id"])
    pairs = zip(approx, exact, strict=True)
    overlap = np.mean([len({h.point_id for h in a} & {h.point_id for h in e}) for a, e in pairs])
    assert overlap >= 9.5, overlap


@pytest.fixture(scope="module")
def variant_backends(variant_catalog, encoder, tmp_path_factory):
    """`variant_catalog` in an Edge shard and in QdrantClient(':memory:')."""
    tmp = tmp_path_factory.mktemp("variants")
    backends = {
        "edge": EdgeBackend(tmp / "products"),
        "server": ServerBackend(QdrantClient(":memory:"), "products", ":memory:"),
    }
    for backend in backends.values():
        ingest(variant_catalog, backend, encoder, tmp)
    yield backends
    for backend in backends.values():
        backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_results_show_one_variant_per_family(
    variant_backends, variant_catalog, encoder, backend_name
):
    parents_of = {r["id"]: r["parent_id"] for r in pq.read_table(variant_catalog).to_pylist()}
    search = ProductSearch(variant_backends[backend_name], encoder)
    query = Query("women's casual shoes")
    every = search.search(query, SearchOptions(top_k=10, collapse_variants=False))
    parents = [h.payload["parent_id"] for h in every if "parent_id" in h.payload]
    assert len(set(parents)) < len(parents)  # without collapsing, sizes crowd the page

    hits = search.search(query, SearchOptions(top_k=10))
    families = [h.payload.get("parent_id") or h.payload["product_id"] for h in hits]
    assert len(hits) == 10 and len(set(families)) == 10  # searched deeper to fill the page
    for hit in hits:
        if "parent_id" not in hit.payload:
            assert not hit.other_variants
            continue
        family = {p for p, parent in parents_of.items() if parent == hit.payload["parent_id"]}
        assert len(family) == 6
        assert hit.payload["product_id"] in family
        assert set(hit.other_variants) <= family - {hit.payload["product_id"]}
    assert hits[0].payload["product_id"] == every[0].payload["product_id"]
    top_family = [
        h.payload["product_id"] for h in every if h.payload.get("parent_id") == families[0]
    ]
    assert hits[0].other_variants[: len(top_family) - 1] == tuple(top_family[1:])

    # The filters pick the variant shown: the family's best match that passes them.
    sized = search.search(Query("women's casual shoes", parse_filters(["size=9"])))
    assert len(sized) == 10 and all(h.payload["size"] == "9" for h in sized)
    assert all(not h.other_variants for h in sized)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_collapsed_ranking_is_each_familys_best_variant_in_rank_order(
    variant_backends, encoder, backend_name
):
    """Exact dense scores do not depend on the search depth, so the collapsed page must equal
    the first variant of each family down a long uncollapsed ranking."""
    search = ProductSearch(variant_backends[backend_name], encoder)
    dense = SearchOptions(mode=SearchMode.DENSE, exact=True, payload_fields=["title"])
    collapsed = 0
    for text in ("black boots", "gold ring", "canvas sneakers"):
        # An uncollapsed search adds no family fields to the payload asked for.
        every = replace(dense, top_k=320, collapse_variants=False, payload_fields=["parent_id"])
        long = search.search(Query(text), every)
        first: dict[str, str] = {}
        for h in long:
            first.setdefault(h.payload.get("parent_id") or h.point_id, h.point_id)
        page = search.search(Query(text), replace(dense, top_k=12))
        assert [h.point_id for h in page] == list(first.values())[:12], text
        collapsed += sum(bool(h.other_variants) for h in page)
        assert all({"product_id", "parent_id"} <= set(h.payload) for h in page if h.other_variants)
    assert collapsed >= 10, collapsed  # black boots, canvas sneakers: shoes in six sizes


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_an_offset_counts_families_where_variants_collapse(variant_backends, encoder, backend_name):
    """The offset skips families, not the variants collapsed into them: page 2 is the second
    half of a page twice as long. (Page 1 is the first half of its own, shallower search:
    where variants send both deeper, approximate retrieval at another depth may differ.)"""
    search = ProductSearch(variant_backends[backend_name], encoder)
    for text in ("black boots", "canvas sneakers"):
        whole = search.search(Query(text), SearchOptions(top_k=12))
        assert len({h.payload.get("parent_id") or h.point_id for h in whole}) == 12
        page = search.search(Query(text), SearchOptions(top_k=6, offset=6))
        assert page == whole[6:], text


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
    assert backend.read_meta().variants is False
    sizes = _jsonl(
        tmp_path / "sizes.jsonl",
        [
            {"id": "drill", "title": "Cordless drill", "parent_id": "drill"},
            {"id": "drill-18v", "title": "Cordless drill, 18V", "parent_id": "drill"},
        ],
    )
    ingest(sizes, backend, encoder, tmp_path)
    assert backend.read_meta().variants is True
    ingest(own_parents, backend, encoder, tmp_path)
    assert backend.read_meta().variants is True  # drill-18v is still stored
    ingest(own_parents, backend, encoder, tmp_path, prune=True)
    assert backend.read_meta().variants is False
    ingest(sizes, backend, encoder, tmp_path, prune=True)
    assert backend.read_meta().variants is True
    ingest(own_parents, backend, encoder, tmp_path, recreate=True)
    assert backend.read_meta().variants is False
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
    assert backend.read_meta().variants is True  # drill-18v is kept, as stored
    backend.write_meta(replace(backend.read_meta(), variants=None))
    ingest(_jsonl(tmp_path / "c.jsonl", [drill]), backend, encoder, tmp_path)
    assert backend.read_meta().variants is None  # drill-18v may be anything: not recorded
    report = ingest(_jsonl(tmp_path / "c.jsonl", [drill]), backend, encoder, tmp_path, prune=True)
    assert report.pruned == 1 and backend.read_meta().variants is False
    backend.close()


def test_collections_before_the_variants_record_read_as_maybe(encoder, tmp_path):
    backend = _empty_backend("edge", tmp_path)
    saw = _jsonl(tmp_path / "one.jsonl", [{"id": "saw", "title": "Saw"}])
    ingest(saw, backend, encoder, tmp_path)
    stored = backend.read_meta().to_dict()
    del stored["variants"]
    assert CollectionMeta.from_dict(stored).variants is None
    with pytest.raises(CollectionError, match="metadata is unreadable"):
        CollectionMeta.from_dict({**stored, "variants": "yes"})
    backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_catalog_without_families_gets_the_page_collapsing_would_give(
    backend_name, small_catalog, encoder, tmp_path
):
    """A collection recorded without families skips collapsing and its deeper first search;
    the page is the one a collection that may have families (variants unrecorded) returns."""
    backend = _empty_backend(backend_name, tmp_path)
    ingest(small_catalog, backend, encoder, tmp_path)
    meta = backend.read_meta()
    assert meta.variants is False
    options = [SearchOptions(top_k=10), SearchOptions(mode=SearchMode.DENSE, exact=True)]
    pages = {}
    for variants in (False, None):
        backend.write_meta(replace(meta, variants=variants))
        search = ProductSearch(backend, encoder)
        pages[variants] = [
            [(h.point_id, round(h.score, 5)) for h in search.search(Query(q), o)]
            for q in TIE_FREE_QUERIES
            for o in options
        ]
    assert pages[False] == pages[None]
    backend.close()


def test_search_depths_first_and_deeper():
    def hits(families, per_family):
        return [
            Hit(f"{f}-{v}", 1.0, {"parent_id": str(f)})
            for f in range(families)
            for v in range(per_family)
        ]

    assert deeper_limit(10, hits(10, 1), top_k=10) is None  # the page is full
    assert deeper_limit(10, hits(3, 2), top_k=10) is None  # the catalog had only 6 hits
    assert deeper_limit(10, hits(2, 5), top_k=10) == 150  # 5 a family: 3 x 5 x 10
    assert deeper_limit(40, hits(20, 2), top_k=30) == 180
    assert deeper_limit(40, hits(39, 1) + hits(1, 1), top_k=41) == 160  # at least 4x
    assert deeper_limit(300, hits(30, 10), top_k=100) == MAX_DEPTH
    assert deeper_limit(MAX_DEPTH, hits(100, 10), top_k=101) is None
    # The first search reads four pages, within the depth, never less than the page.
    assert first_limit(10) == 40
    assert first_limit(300) == MAX_DEPTH
    assert first_limit(2 * MAX_DEPTH) == 2 * MAX_DEPTH


def test_a_bm25_weight_moves_rrf_towards_bm25_alike_on_both_backends(edge, server, encoder):
    """Weighted RRF (Qdrant's formula on both engines): a large BM25 weight gives BM25's own
    top hit the first place, and both backends fuse the same way."""
    weighted = SearchOptions(mode=SearchMode.HYBRID, top_k=10, bm25_weight=3.0)
    bm25 = SearchOptions(mode=SearchMode.BM25, top_k=1)
    moved = 0
    for text in TIE_FREE_QUERIES:
        a = ProductSearch(edge, encoder).search(Query(text), weighted)
        b = ProductSearch(server, encoder).search(Query(text), weighted)
        assert _ranking(a) == _ranking(b), text
        assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
        plain = ProductSearch(edge, encoder).search(Query(text), replace(weighted, bm25_weight=1))
        moved += _ranking(plain) != _ranking(a)
        top = ProductSearch(edge, encoder).search(Query(text), replace(weighted, bm25_weight=100))
        assert top[0].point_id == ProductSearch(edge, encoder).search(Query(text), bm25)[0].point_id
    assert moved  # the weight changed some ranking
    with pytest.raises(UsageError, match="--fusion rrf"):
        SearchOptions(fusion=FusionMethod.DBSF, bm25_weight=3.0)
    with pytest.raises(UsageError, match="above 0"):
        SearchOptions(bm25_weight=0.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bm25_weight": math.inf}, "--bm25-weight must be a finite number above 0"),
        ({"bm25_weight": math.nan}, "--bm25-weight must be a finite number above 0"),
        ({"bm25_weight": -1.0}, "--bm25-weight must be a finite number above 0"),
        ({"bm25_weight": 2.0, "mode": SearchMode.DENSE}, "--mode dense has none"),
        ({"bm25_weight": 1.0, "mode": SearchMode.BM25}, "--mode bm25 has none"),
        ({"bm25_weight": 2.0, "fusion": FusionMethod.DBSF}, "--fusion dbsf has none"),
    ],
)
def test_a_weight_the_search_cannot_use_is_refused_naming_the_flags(options, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        SearchOptions(**options)


def test_rrf_weighs_bm25_by_default_and_old_servers_are_named():
    assert SearchOptions().rrf_bm25_weight == DEFAULT_BM25_WEIGHT == 3.0
    assert SearchOptions(fusion=FusionMethod.DBSF).rrf_bm25_weight == 1.0  # no RRF, no weight
    assert SearchOptions(mode=SearchMode.DENSE).rrf_bm25_weight == 1.0
    assert system_name(SearchOptions()) == "hybrid-rrf"
    assert system_name(SearchOptions(bm25_weight=1.0)) == "hybrid-rrf-bm25x1"
    assert not supports_weighted_rrf("1.16.3")
    assert all(map(supports_weighted_rrf, ["1.17.0", "1.20.1-rc1", "2.0.0", "unknown"]))


def test_a_parent_listed_as_a_product_is_one_family_with_its_variants():
    parent = Hit("p1", 0.9, {"product_id": "drill"})
    variant = Hit("p2", 0.8, {"product_id": "drill-18v", "parent_id": "drill"})
    other = Hit("p3", 0.7, {"product_id": "hose"})
    page = collapse([parent, variant, other], top_k=10)
    assert [h.point_id for h in page] == ["p1", "p3"]
    assert page[0].other_variants == ("drill-18v",) and page[1].other_variants == ()


def test_an_unreachable_server_is_an_error_naming_its_url(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    backend = ServerBackend.connect(url, "products")
    with pytest.raises(ServerError, match=f"cannot reach Qdrant at {re.escape(url)} "):
        backend.read_meta()
    bm25 = SearchRequest(dense=None, sparse=SparseVec([1], [1.0]), mode=SearchMode.BM25)
    with pytest.raises(ServerError, match="cannot reach Qdrant"):
        backend.search_batch([bm25])
    with pytest.raises(UsageError, match="bad --qdrant-url"):
        ServerBackend.connect("ftp://127.0.0.1", "products")


@pytest.fixture
def refusing_server():
    """A local HTTP server that answers every request 403, as Qdrant answers a wrong key."""

    class Refuse(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"status": {"error": "Invalid api-key"}}'
            self.send_response(403)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_POST = do_PUT = do_DELETE = do_GET

        def log_message(self, *args) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_a_refused_api_key_is_an_error_naming_the_flag(refusing_server):
    backend = ServerBackend.connect(refusing_server, "products", api_key="wrong")
    with pytest.raises(ServerError, match=r"refused the request \(HTTP 403 Forbidden\).*--api-key"):
        backend.read_meta()
    with pytest.raises(ServerError, match="HTTP 403"):
        backend.count()


# Keys and categories as catalogs have them: spaces, dots, slashes; categories as paths.
FILTERED_PRODUCTS = {
    "1": {
        "attributes": {"Ideal For": "Women", "Model No.": "X1"},
        "category": ["footwear", "womens footwear", "casual shoes"],
    },
    "2": {
        "attributes": {"Ideal For": "Men", "Precious/Artificial Jewellery": "Artificial"},
        "category": ["footwear", "mens footwear", "casual shoes"],
    },
    "3": {
        "attributes": {"a.b": "dotted", "Model": "X1", "Men's Size": "9"},
        "category": ["womens footwear"],
    },
}


@pytest.fixture(scope="module")
def filtered_backends(tmp_path_factory):
    """FILTERED_PRODUCTS in an Edge shard and in QdrantClient(':memory:')."""
    backends = [
        EdgeBackend(tmp_path_factory.mktemp("filtered") / "products"),
        ServerBackend(QdrantClient(":memory:"), "products", ":memory:"),
    ]
    meta = CollectionMeta(EncoderInfo("random", 4, "f" * 64), {}, "{title}")
    points = [
        ProductPoint(
            point_id(pid), np.ones(4, np.float32), SparseVec([], []), {"product_id": pid, **p}
        )
        for pid, p in FILTERED_PRODUCTS.items()
    ]
    for backend in backends:
        backend.create(meta)
        backend.upsert(points)
        backend.finish_writes()
    yield backends
    for backend in backends:
        backend.close()


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("attributes.Ideal For=Women", {"1"}),
        ("attributes.'Ideal For' in (Women, Men)", {"1", "2"}),
        ('attributes."Ideal For"!=Women', {"2", "3"}),
        ("attributes.Model No.=X1", {"1"}),  # the dot is the key's, not a nested path
        ("attributes.Precious/Artificial Jewellery=Artificial", {"2"}),
        ("attributes.a.b=dotted", {"3"}),
        ("attributes.Men's Size=9", {"3"}),
        ("category=womens footwear > casual shoes", {"1"}),
        ("category=footwear > casual shoes", {"1", "2"}),
        ("category!=womens footwear > casual shoes", {"2", "3"}),
        ("category in (mens footwear > casual shoes, footwear > womens footwear)", {"1", "2"}),
        ("category not in (mens footwear > casual shoes, womens footwear)", set()),
    ],
)
def test_attribute_keys_and_category_paths_filter_alike_on_both_backends(
    filtered_backends, expr, expected
):
    request = SearchRequest(
        dense=np.ones(4, np.float32),
        sparse=None,
        conditions=parse_filters([expr]),
        mode=SearchMode.DENSE,
        exact=True,
    )
    for backend in filtered_backends:
        (hits,) = backend.search_batch([request])
        assert {h.payload["product_id"] for h in hits} == expected, (backend.location, expr)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_the_demo_catalogs_commonest_attribute_key_filters(
    request, backend_name, small_catalog, encoder
):
    """The demo's commonest attribute key, "Ideal For" (680 of 1,002 products), has a space."""
    backend = request.getfixturevalue(backend_name)
    rows = pq.read_table(small_catalog).to_pylist()
    women = {r["id"] for r in rows if dict(r["attributes"] or []).get("Ideal For") == "Women"}
    options = SearchOptions(mode=SearchMode.DENSE, exact=True, top_k=500, collapse_variants=False)
    query = Query("shoes", parse_filters(["attributes.Ideal For=Women"]))
    hits = ProductSearch(backend, encoder).search(query, options)
    assert len(women) > 40 and {h.payload["product_id"] for h in hits} == women


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_facets_count_each_value_among_the_products_passing_the_filters(
    backend_name, request, small_catalog
):
    backend = request.getfixturevalue(backend_name)
    rows = pq.read_table(small_catalog).to_pylist()
    cheap = [r for r in rows if r["price"] <= 500]
    conditions = parse_filters(["price<=500"])
    colors = Counter(r["color"] for r in cheap if r["color"])
    levels = Counter(level for r in cheap for level in r["category"] or [])
    assert backend.count(conditions) == len(cheap) < len(rows) == backend.count()
    expected = sorted(colors.items(), key=lambda kv: (-kv[1], kv[0]))
    got = backend.facet("color", conditions, limit=1000)
    assert [(c.value, c.count) for c in got] == expected
    # A category counts each level of its path; the limit keeps the most frequent values.
    top = backend.facet("category", conditions, limit=3)
    assert [(c.value, c.count) for c in top] == sorted(
        levels.items(), key=lambda kv: (-kv[1], kv[0])
    )[:3]
    # A number is bounded, not counted.
    prices = [r["price"] for r in cheap]
    assert backend.value_range("price", conditions) == ValueRange(min(prices), max(prices))
    assert backend.value_range("price", parse_filters(["price<0"])) is None


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_facets_count_booleans_as_booleans_and_a_field_no_product_has_as_none(
    backend_name, encoder, tmp_path
):
    backend = _empty_backend(backend_name, tmp_path)
    catalog = _jsonl(
        tmp_path / "stock.jsonl",
        [
            {"id": f"p{i}", "title": f"lamp {i}", "in_stock": i % 3 == 0, "price": 10.0 * i}
            for i in range(7)
        ],
    )
    ingest(catalog, backend, encoder, tmp_path)
    stock = backend.facet("in_stock", [], limit=10)
    assert [(c.value, c.count) for c in stock] == [(False, 4), (True, 3)]
    assert all(isinstance(c.value, bool) for c in stock)
    in_stock = parse_filters(["in_stock=true"])
    assert [(c.value, c.count) for c in backend.facet("in_stock", in_stock, 10)] == [(True, 3)]
    assert backend.facet("brand", [], limit=10) == []
    backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_querys_facets_count_its_best_candidates_results(backend_name, request, encoder):
    search = ProductSearch(request.getfixturevalue(backend_name), encoder)
    query = Query("shoes", parse_filters(["price<=1500"]))
    options = SearchOptions(candidates=30)
    counted = search.facets(query, options, ["color", "category", "price"], limit=1000)
    best = search.search(query, replace(options, top_k=30, collapse_variants=False))
    assert counted.products == len(best) == 30
    prices = [h.payload["price"] for h in best]
    assert counted.ranges == {"price": ValueRange(min(prices), max(prices))}
    assert max(prices) <= 1500
    colors = Counter(h.payload["color"] for h in best if h.payload.get("color"))
    levels = Counter(level for h in best for level in h.payload.get("category") or [])
    for name, expected in (("color", colors), ("category", levels)):
        got = [(c.value, c.count) for c in counted.counts[name]]
        assert got == sorted(expected.items(), key=lambda kv: (-kv[1], kv[0])), name
    # A filter no product passes: nothing to count.
    none = search.facets(Query("shoes", parse_filters(["price<0"])), options, ["color"], 10)
    assert none.products == 0 and none.counts == {"color": []} and none.ranges == {}
