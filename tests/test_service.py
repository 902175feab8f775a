"""`shopsearch serve` over HTTP, on the real service: the demo catalog in an Edge collection,
the real encoder, a real server process on a free local port (and, where the test must
reach the collection too, the app in-process over QdrantClient(':memory:'))."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from service_helpers import (
    COMPARED,
    DEMO,
    cli,
    demo_service,
    reindex_case,
    reindex_under_searches,
    same_answer,
    service_process,
    service_thread,
)

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def demo(exported_model: Path, tmp_path_factory):
    with demo_service(exported_model, tmp_path_factory.mktemp("service"), "--api-key", KEY) as up:
        yield up


def test_search_answers_as_the_cli(demo):
    url, _, answers, _ = demo
    for (_, body), answer in zip(COMPARED, answers, strict=True):
        response = httpx.post(f"{url}/search", json=body)
        assert response.status_code == 200, response.text
        doc = response.json()
        assert doc["took_ms"] > 0
        same_answer(doc, answer)


def test_get_search_takes_the_query_in_the_url(demo):
    url, _, answers, _ = demo
    params = {
        "q": "black boots for women",
        "filter": ["color in (Black,Brown)", "price<=1500"],
        "facet": ["brand", "price"],
        "offset": 3,
        "top_k": 4,
    }
    response = httpx.get(f"{url}/search", params=params)
    assert response.status_code == 200, response.text
    same_answer(response.json(), answers[1])


def test_structured_filters_equal_the_grammar(demo):
    url, *_ = demo
    grammar = httpx.post(
        f"{url}/search",
        json={"q": "boots", "filters": ["color in (Black,Brown)", "price<=1500", "price>400"]},
    ).json()
    structured_filters = {"color": ["Black", "Brown"], "price": {"lte": 1500, "gt": 400}}
    structured = httpx.post(
        f"{url}/search", json={"q": "boots", "filters": structured_filters}
    ).json()
    assert [r["product_id"] for r in structured["results"]] == [
        r["product_id"] for r in grammar["results"]
    ]
    assert structured["results"] and all(
        r["color"] in ("Black", "Brown") and 400 < r["price"] <= 1500 for r in structured["results"]
    )


def test_pages_follow_one_ranking(demo):
    url, *_ = demo
    top = httpx.get(f"{url}/search", params={"q": "shirt", "top_k": 10}).json()["results"]
    pages = [
        httpx.get(f"{url}/search", params={"q": "shirt", "top_k": 5, "offset": o}).json()
        for o in (0, 5)
    ]
    assert [r["product_id"] for p in pages for r in p["results"]] == [r["product_id"] for r in top]


def test_put_then_search_finds_it_and_delete_removes_it(demo):
    url, *_ = demo
    headers = {"Authorization": f"Bearer {KEY}"}
    product = {"id": "zz-1", "title": "quokka plush toy", "brand": "Zoofriends", "price": 499}
    response = httpx.put(f"{url}/products", json={"products": [product]}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "received": 1, "upserted": 1, "unchanged": 0, "rejected": 0, "rejects": []
    }  # fmt: skip
    found = httpx.get(f"{url}/search", params={"q": "quokka plush", "top_k": 3}).json()
    assert found["results"][0]["product_id"] == "zz-1"
    assert httpx.get(f"{url}/products/zz-1").json()["brand"] == "Zoofriends"
    # The same record again is stored as it is: not encoded again.
    again = httpx.put(f"{url}/products", json={"products": [product]}, headers=headers).json()
    assert again["unchanged"] == 1
    # A typo of a word only the new product uses is corrected to it.
    typo = httpx.get(f"{url}/search", params={"q": "quoka plush", "top_k": 1}).json()
    assert typo["searched"] == "quokka plush"

    assert httpx.delete(f"{url}/products/zz-1", headers=headers).json() == {"deleted": ["zz-1"]}
    assert httpx.get(f"{url}/products/zz-1").status_code == 404
    after = httpx.get(f"{url}/search", params={"q": "quokka plush", "top_k": 3}).json()
    assert "zz-1" not in [r["product_id"] for r in after["results"]]
    assert httpx.delete(f"{url}/products/zz-1", headers=headers).status_code == 404


def test_put_rejects_each_bad_record_with_its_reason(demo):
    url, *_ = demo
    records = [
        {"id": "zz-2", "title": "ok product"},
        {"id": "zz-3", "title": ""},
        {"title": "no id"},
        {"id": "zz-4", "title": "t", "colour": "red"},
        {"id": "zz-5", "title": "t", "price": "cheap"},
        "not an object",
        {"id": "zz-2", "title": "repeated id"},
    ]
    response = httpx.put(f"{url}/products", json={"products": records}, headers={"X-API-Key": KEY})
    assert response.status_code == 200
    report = response.json()
    assert report["received"] == 7 and report["upserted"] == 1 and report["rejected"] == 6
    reasons = {r["row"]: (r["field"], r["reason"]) for r in report["rejects"]}
    assert reasons[1][0] == "title"
    assert reasons[2][0] == "id"
    assert reasons[3][0] == "colour" and "unknown field" in reasons[3][1]
    assert reasons[4][0] == "price"
    assert "JSON object" in reasons[5][1]
    assert "duplicate id" in reasons[6][1]
    httpx.post(f"{url}/products/delete", json={"ids": ["zz-2"]}, headers={"X-API-Key": KEY})


def test_writes_need_the_key(demo):
    url, *_ = demo
    body = {"products": [{"id": "zz-6", "title": "never stored"}]}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "s3cret-ke"}):
        assert httpx.put(f"{url}/products", json=body, headers=headers).status_code == 401
        assert httpx.delete(f"{url}/products/x", headers=headers).status_code == 401
        deleted = httpx.post(f"{url}/products/delete", json={"ids": ["x"]}, headers=headers)
        assert deleted.status_code == 401
    assert httpx.get(f"{url}/products/zz-6").status_code == 404
    batch = httpx.post(
        f"{url}/products/delete", json={"ids": ["zz-6", "nope"]}, headers={"X-API-Key": KEY}
    )
    assert batch.json() == {"deleted": [], "missing": ["nope", "zz-6"]}


MALFORMED = [
    ("POST", "/search", b"{bad json"),
    ("POST", "/search", b""),
    ("POST", "/search", b"[]"),
    ("POST", "/search", b'"just a string"'),
    ("POST", "/search", b"\xff\xfe\x00"),
    ("POST", "/search", {"q": ""}),
    ("POST", "/search", {"q": 5}),
    ("POST", "/search", {"q": None}),
    ("POST", "/search", {}),
    ("POST", "/search", {"q": "x", "unknown": 1}),
    ("POST", "/search", {"q": "x", "top_k": 0}),
    ("POST", "/search", {"q": "x", "top_k": 100000}),
    ("POST", "/search", {"q": "x", "top_k": "ten"}),
    ("POST", "/search", {"q": "x", "offset": -1}),
    ("POST", "/search", {"q": "x", "mode": "fuzzy"}),
    ("POST", "/search", {"q": "x", "fusion": "max"}),
    ("POST", "/search", {"q": "x", "bm25_weight": 0}),
    ("POST", "/search", {"q": "x", "bm25_weight": 2, "mode": "dense"}),
    ("POST", "/search", {"q": "x", "filters": ["price<<3"]}),
    ("POST", "/search", {"q": "x", "filters": ["nofield=3"]}),
    ("POST", "/search", {"q": "x", "filters": ["brand"]}),
    ("POST", "/search", {"q": "x", "filters": ["in_stock=maybe"]}),
    ("POST", "/search", {"q": "x", "filters": [5]}),
    ("POST", "/search", {"q": "x", "filters": "price<3"}),
    ("POST", "/search", {"q": "x", "filters": {"price": "cheap"}}),
    ("POST", "/search", {"q": "x", "filters": {"brand": {"lt": 3}}}),
    ("POST", "/search", {"q": "x", "filters": {"nofield": 1}}),
    ("POST", "/search", {"q": "x", "filters": {"brand": []}}),
    ("POST", "/search", {"q": "x", "filters": {"brand": {"like": "n"}}}),
    ("POST", "/search", {"q": "x", "facets": ["product_id"]}),
    ("POST", "/search", {"q": "x", "facets": ["attributes.size"]}),
    ("POST", "/search", {"q": "x", "facets": "brand"}),
    ("POST", "/search", {"q": "x" * 5000}),
    ("POST", "/search", {"q": "x", "candidates": 0}),
    ("POST", "/search", {"q": "x", "fusion": "learned"}),
    ("GET", "/search", None),
    ("GET", "/search?q=", None),
    ("GET", "/search?q=x&top_k=-3", None),
    ("GET", "/search?q=x&filter=price%3C%3C1", None),
    ("GET", "/search?q=x&mode=nope", None),
    ("GET", "/search?q=x&offset=abc", None),
    ("GET", "/search?q=x&facet=nope", None),
    ("POST", "/embed", {"q": ""}),
    ("POST", "/embed", {"query": "x"}),
    ("PUT", "/products", {"products": "not a list"}),
    ("PUT", "/products", {"items": []}),
    ("PUT", "/products", {"products": [{"id": "x"}] * 1001}),
    ("POST", "/products/delete", {"ids": []}),
    ("POST", "/products/delete", {"ids": [1, 2]}),
    ("POST", "/search", b"x" * (5 * 1024 * 1024)),
    ("GET", "/nowhere", None),
]


def test_malformed_requests_get_4xx_with_a_message_and_the_service_stays_up(demo):
    url, *_ = demo
    assert len(MALFORMED) >= 50
    headers = {"X-API-Key": KEY}
    with httpx.Client(base_url=url, headers=headers) as client:
        for method, path, body in MALFORMED:
            if isinstance(body, bytes):
                response = client.request(
                    method, path, content=body, headers={"content-type": "application/json"}
                )
            else:
                response = client.request(method, path, json=body)
            assert 400 <= response.status_code < 500, (method, path, str(body)[:80], response.text)
            message = response.json().get("error")
            assert isinstance(message, str) and message, (path, response.text)
            assert "Traceback" not in response.text
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.post(f"{url}/search", json={"q": "boots"}).status_code == 200


def test_operations_endpoints(demo):
    url, *_ = demo
    assert httpx.get(f"{url}/search", params={"q": "boots"}).status_code == 200
    info = httpx.get(f"{url}/info").json()
    assert info["products"] == 1002 and info["encoder"]["dimension"] == 384
    assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
    assert "/search" in httpx.get(f"{url}/openapi.json").json()["paths"]
    metrics = httpx.get(f"{url}/metrics").text
    assert 'shopsearch_requests_total{endpoint="/search",status="200"}' in metrics
    assert "shopsearch_encoder_batch_size_count" in metrics
    assert "shopsearch_collection_products 1002.0" in metrics
    assert 'shopsearch_request_seconds_bucket{endpoint="/search",le="0.05"}' in metrics


def test_an_ingest_while_serving_names_the_service(demo, tmp_path):
    url, env, _, process = demo
    proc = cli("ingest", str(DEMO), "-c", "demo", "--rejects", str(tmp_path / "r.jsonl"),
               env=env, check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "shopsearch serve" in proc.stderr and "PUT /products" in proc.stderr
    assert str(process.pid) in proc.stderr
    assert "Traceback" not in proc.stderr
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_concurrent_searches_are_answered_alike(demo):
    """Searches arriving together (batched in the encoder) answer as they do alone."""
    url, *_ = demo
    queries = ["boots", "red dress", "watch for men", "casual shoes", "silver ring", "bag"]
    alone = {q: httpx.get(f"{url}/search", params={"q": q}).json()["results"] for q in queries}
    together: dict[str, list] = {}

    def ask(q: str) -> None:
        together[q] = httpx.get(f"{url}/search", params={"q": q}).json()["results"]

    threads = [threading.Thread(target=ask, args=(q,)) for q in queries * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for q in queries:
        assert [r["product_id"] for r in together[q]] == [r["product_id"] for r in alone[q]]


def test_one_search_thread_runs_searches_one_at_a_time(small_catalog, encoder, tmp_path):
    """With `--search-threads 1`, searches arriving together wait their turn: each is encoded
    alone (every encoder batch holds one query) and answers as it does alone."""
    from qdrant_client import QdrantClient
    from search_helpers import ingest

    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.live import LiveCollection
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    ingest(small_catalog, ServerBackend(client, "products", ":memory:"), encoder, tmp_path)
    live = LiveCollection(
        lambda: ServerBackend(client, "products", ":memory:"), BatchingEncoder(encoder), "test"
    )
    queries = ["womens casul shoes", "black boots", "watch", "red dress"]
    with service_thread(create_app(live, search_threads=1)) as url:
        alone = {q: httpx.get(f"{url}/search", params={"q": q}).json()["results"] for q in queries}
        together: dict[str, list] = {}

        def ask(q: str) -> None:
            together[q] = httpx.post(f"{url}/search", json={"q": q}, timeout=60).json()["results"]

        threads = [threading.Thread(target=ask, args=(q,)) for q in queries * 4]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        metrics = dict(
            line.split(" ")
            for line in httpx.get(f"{url}/metrics").text.splitlines()
            if line.startswith("shopsearch_encoder_batch_size_")
        )
    for q in queries:
        assert [r["product_id"] for r in together[q]] == [r["product_id"] for r in alone[q]]
    assert float(metrics["shopsearch_encoder_batch_size_count"]) >= len(threads)
    assert (
        metrics["shopsearch_encoder_batch_size_sum"]
        == metrics["shopsearch_encoder_batch_size_count"]
    )


def test_embed_vectors_search_the_collection_as_search_does(small_catalog, encoder, tmp_path):
    """A service that queries the collection itself with /embed's vectors gets /search's
    top 10, in each mode, hybrid fused by RRF as Qdrant fuses (the collection on
    QdrantClient(':memory:'), shared with the test)."""
    from qdrant_client import QdrantClient, models
    from search_helpers import ingest

    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.live import LiveCollection
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    ingest(small_catalog, ServerBackend(client, "products", ":memory:"), encoder, tmp_path)
    live = LiveCollection(
        lambda: ServerBackend(client, "products", ":memory:"), BatchingEncoder(encoder), "test"
    )
    with service_thread(create_app(live)) as url:
        for text in ("womens casul shoes", "black boots", "watch"):
            embedded = httpx.post(f"{url}/embed", json={"q": text}).json()
            assert embedded["encoder"]["fingerprint"] == encoder.fingerprint
            dense = embedded["dense"]
            sparse = models.SparseVector(**embedded["sparse"])
            # Two past the page, ordered by score then point id, as shopsearch orders ties.
            k = 12
            direct = {
                "dense": client.query_points("products", query=dense, using="dense", limit=k),
                "bm25": client.query_points("products", query=sparse, using="bm25", limit=k),
                "hybrid": client.query_points(
                    "products",
                    prefetch=[
                        models.Prefetch(query=dense, using="dense", limit=100),
                        models.Prefetch(query=sparse, using="bm25", limit=100),
                    ],
                    query=models.RrfQuery(rrf=models.Rrf(k=2, weights=[1.0, 3.0])),
                    limit=k,
                ),
            }
            for mode, points in direct.items():
                # Qdrant's own fusion: the default's re-ranking by query-term coverage is
                # shopsearch's, after Qdrant (docs/collection.md says how to reproduce it).
                request = {"q": text, "mode": mode, "fusion": "rrf"}
                served = httpx.post(f"{url}/search", json=request).json()
                theirs = sorted(points.points, key=lambda p: (-p.score, str(p.id)))[:10]
                assert [r["product_id"] for r in served["results"]] == [
                    p.payload["product_id"] for p in theirs
                ], (text, mode)
            # The default: Qdrant's DBSF, then the re-rank docs/collection.md describes.
            fused = client.query_points(
                "products",
                prefetch=[
                    models.Prefetch(query=dense, using="dense", limit=100),
                    models.Prefetch(query=sparse, using="bm25", limit=100),
                ],
                query=models.FusionQuery(fusion=models.Fusion.DBSF),
                limit=40,
                with_vectors=["bm25", "pairs"],
                with_payload=["product_id"],
            ).points
            terms, pairs = set(sparse.indices), set(embedded["pairs"])  # no pairs: one word

            def reranked(p, terms=terms, pairs=pairs):
                score = 2.0 / len(terms) * len(terms & set(p.vector["bm25"].indices))
                score += 0.5 * p.score
                if pairs:
                    held = p.vector.get("pairs")
                    score += 0.75 / len(pairs) * len(pairs & set(held.indices if held else ()))
                return score

            theirs = sorted(fused, key=lambda p: (-reranked(p), str(p.id)))[:10]
            served = httpx.post(f"{url}/search", json={"q": text}).json()
            assert [r["product_id"] for r in served["results"]] == [
                p.payload["product_id"] for p in theirs
            ], (text, "default")


def _catalog(rows: list[dict], path: Path) -> Path:
    schema = pq.read_schema(DEMO)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def test_ingest_recreate_while_serving_switches_without_a_failed_search(
    exported_model, small_catalog, tmp_path
):
    env, rebuilt = reindex_case(exported_model, small_catalog, tmp_path)
    with service_process(env, "-c", "live") as (url, _):
        failures, seen = reindex_under_searches(
            url, env, rebuilt, tmp_path, 3, lambda seen: seen == {None: ["wombat-1"]}
        )
        info = httpx.get(f"{url}/info").json()
    assert failures == []
    assert seen == {None: ["wombat-1"]}
    assert info["products"] == 61 and info["reloads"] == 1


def test_acknowledged_puts_survive_kill_9(exported_model, small_catalog, tmp_path):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp_path / "d")}
    cli("ingest", str(small_catalog), "-c", "kill", "--rejects", str(tmp_path / "r"), env=env)
    acknowledged: list[str] = []
    with service_process(env, "-c", "kill") as (url, process):

        def writer() -> None:
            with httpx.Client(base_url=url, timeout=30) as client:
                for i in range(10_000):
                    pid = f"k-{i}"
                    record = {"id": pid, "title": f"kill test product {i}", "price": i}
                    try:
                        response = client.put("/products", json={"products": [record]})
                    except httpx.HTTPError:
                        return  # the service died mid-request: not acknowledged
                    if response.status_code == 200:
                        acknowledged.append(pid)

        thread = threading.Thread(target=writer)
        thread.start()
        while len(acknowledged) < 25:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait()
        thread.join()
    with service_process(env, "-c", "kill") as (url, _):
        missing = [p for p in acknowledged if httpx.get(f"{url}/products/{p}").status_code != 200]
    assert len(acknowledged) >= 25
    assert missing == []


def test_a_server_collection_reindexed_while_serving_switches_without_a_failed_search(
    small_catalog, encoder, tmp_path
):
    """On a Qdrant server (QdrantClient(':memory:') here), `--recreate` switches the alias:
    the service's searches never fail, and it reopens the new version (its metadata)."""
    from qdrant_client import QdrantClient

    from shopsearch.ingest.pipeline import ingest_catalog
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.live import LiveCollection
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    reader = CatalogReader(small_catalog)
    ingest_catalog(reader, ServerBackend(client, "shop", ":memory:"), encoder,
                   rejects_path=tmp_path / "r")  # fmt: skip
    rows = pq.read_table(small_catalog).to_pylist()
    marker = {**rows[0], "id": "wombat-1", "title": "wombat shaped doorstop"}
    rebuilt = _catalog([*rows[:60], marker], tmp_path / "next.parquet")

    class SharedClient(ServerBackend):
        def close(self) -> None:  # the client is shared with the test: not closed by a reload
            pass

    live = LiveCollection(
        lambda: SharedClient(client, "shop", ":memory:"), BatchingEncoder(encoder), "test"
    )
    failures: list[str] = []
    stop = threading.Event()
    with service_thread(create_app(live)) as url:

        def stream() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    response = http.get("/search", params={"q": "wombat doorstop", "top_k": 1})
                    if response.status_code != 200:
                        failures.append(response.text)

        thread = threading.Thread(target=stream)
        thread.start()
        try:
            ingest_catalog(CatalogReader(rebuilt), ServerBackend(client, "shop", ":memory:"),
                           encoder, rejects_path=tmp_path / "r2", recreate=True)  # fmt: skip
            deadline = time.monotonic() + 30
            while live.reloads == 0 and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join()
        found = httpx.get(f"{url}/search", params={"q": "wombat doorstop", "top_k": 1}).json()
        info = httpx.get(f"{url}/info").json()
    assert failures == []
    assert [r["product_id"] for r in found["results"]] == ["wombat-1"]
    assert info["products"] == 61 and info["reloads"] == 1
