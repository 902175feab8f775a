"""Retries of a Qdrant server's transient failures, against a real local HTTP server that fails
on purpose.

`FakeQdrant` answers the few Qdrant REST requests the operations under test send, in the JSON
shapes qdrant-client parses (its own pydantic models, dumped), and fails the first
`failures[kind]` requests of each kind as told: 502/503/504, 429 (with Retry-After), a reset
connection, a hang-up, or a stall past the client's timeout. It records what it received, so a
test can see that an upsert repeated after a reset carried the same point ids both times.
Budgets are small (`Retry(...)` here, SHOPSEARCH_RETRY_SECONDS for the commands), so the whole
file runs in a few seconds.
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from shopsearch.errors import ServerError
from shopsearch.store.backend import ProductPoint, SearchMode, SearchRequest, SparseVec
from shopsearch.store.documents import read_meta
from shopsearch.store.schema import CollectionMeta, EncoderInfo, point_id
from shopsearch.store.server import PLACEMENT_KEY, Retry, ServerBackend

DIM = 4
META = CollectionMeta(EncoderInfo("fake-encoder", DIM, "f" * 64), {"k": 0.3, "b": 0.75}, "{title}")
PLACEMENT = {"shard_number": 3, "replication_factor": 2, "write_consistency_factor": 2}
FAST = Retry(seconds=5.0, first_wait=0.01, max_wait=0.05)  # tries again within milliseconds
FAILURES = ("503", "502", "504", "429", "reset", "hang up")


def _ok(result: Any) -> dict[str, Any]:
    return {"result": result, "status": "ok", "time": 0.0}


def _collection_info(points: int) -> dict[str, Any]:
    """GET /collections/{name} as a Qdrant server of three peers answers it."""
    info = models.CollectionInfo(
        status=models.CollectionStatus.GREEN,
        optimizer_status=models.OptimizersStatusOneOf.OK,
        segments_count=1,
        points_count=points,
        config=models.CollectionConfig(
            params=models.CollectionParams(
                vectors={"dense": models.VectorParams(size=DIM, distance=models.Distance.COSINE)},
                **PLACEMENT,
            ),
            hnsw_config=models.HnswConfig(m=16, ef_construct=100, full_scan_threshold=10_000),
            optimizer_config=models.OptimizersConfig(
                deleted_threshold=0.2,
                vacuum_min_vector_number=1000,
                default_segment_number=0,
                flush_interval_sec=5,
            ),
            metadata={"shopsearch": META.to_dict(), PLACEMENT_KEY: PLACEMENT},
        ),
        payload_schema={},
    )
    return _ok(info.model_dump(mode="json", exclude_none=True))


class FakeQdrant:
    """A Qdrant server's REST API for one collection, `products`, held in a dict; the first
    `failures[kind]` requests of each kind fail as `mode[kind]` says."""

    def __init__(self, stall: float = 2.0) -> None:
        self.points: dict[str, dict[str, Any]] = {}
        self.failures: Counter[str] = Counter()
        self.mode: dict[str, str] = {}
        self.requests: Counter[str] = Counter()
        self.upserted: list[list[str]] = []  # each upsert's point ids, failed ones included
        self.stall = stall
        self.lock = threading.Lock()

    def fail(self, kind: str, mode: str, times: int = 10**9) -> None:
        self.failures[kind], self.mode[kind] = times, mode

    def kind(self, method: str, path: str) -> str:
        path = path.split("?")[0].rstrip("/")
        routes = {
            ("GET", ""): "version",
            ("GET", "/aliases"): "aliases",
            ("GET", "/collections/products/exists"): "exists",
            ("GET", "/collections/products"): "collection",
            ("PUT", "/collections/products/points"): "upsert",
            ("POST", "/collections/products/points"): "retrieve",
            ("POST", "/collections/products/points/delete"): "delete",
            ("POST", "/collections/products/points/query/batch"): "query",
            ("POST", "/collections/products/points/scroll"): "scroll",
            ("POST", "/collections/products/points/count"): "count",
            ("DELETE", "/collections/products"): "drop",
        }
        return routes.get((method, path), f"{method} {path}")

    def apply(self, kind: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """What the server does with a request, and its answer."""
        done = _ok({"operation_id": 1, "status": "completed"})
        if kind == "version":
            return 200, {"title": "qdrant - vector search engine", "version": "1.17.0"}
        if kind == "aliases":
            return 200, _ok({"aliases": []})
        if kind == "exists":
            return 200, _ok({"exists": True})
        if kind == "collection":
            return 200, _collection_info(len(self.points))
        if kind == "upsert":
            for point in body["points"]:
                self.points[point["id"]] = point.get("payload") or {}
            return 200, done
        if kind == "delete":
            for pid in body["points"]:
                self.points.pop(pid, None)
            return 200, done
        if kind == "retrieve":
            found = [pid for pid in body["ids"] if pid in self.points]
            return 200, _ok([{"id": pid, "payload": self.points[pid]} for pid in found])
        if kind == "count":
            return 200, _ok({"count": len(self.points)})
        if kind == "drop":
            self.points.clear()
            return 200, _ok(True)
        if kind == "scroll":
            records = [{"id": pid, "payload": p} for pid, p in sorted(self.points.items())]
            return 200, _ok({"points": records, "next_page_offset": None})
        if kind == "query":
            ranked = [
                {"id": pid, "version": 1, "score": 1.0 / (rank + 1), "payload": payload}
                for rank, (pid, payload) in enumerate(sorted(self.points.items()))
            ]
            return 200, _ok([{"points": ranked} for _ in body["searches"]])
        return 404, {"status": {"error": f"the fake does not answer {kind}"}}

    def handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                kind = fake.kind(self.command, self.path)
                with fake.lock:
                    fake.requests[kind] += 1
                    failing = fake.failures[kind] > 0
                    if failing:
                        fake.failures[kind] -= 1
                    if kind == "upsert":
                        fake.upserted.append([p["id"] for p in body["points"]])
                    mode = fake.mode.get(kind, "")
                    if not failing or mode == "reset":  # a reset comes after the work is done
                        status, answer = fake.apply(kind, body)
                if failing and mode == "reset":
                    # RST instead of FIN: the client reads "connection reset by peer".
                    linger = struct.pack("ii", 1, 0)
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                    self.connection.close()
                    self.close_connection = True
                    return
                if failing and mode == "hang up":
                    self.close_connection = True
                    return
                if failing and mode == "stall":
                    time.sleep(fake.stall)
                    self.close_connection = True
                    return
                headers = {}
                if failing:
                    status = int(mode)
                    answer = {"status": {"error": f"failing on purpose ({mode})"}}
                    if status == 429:
                        headers["Retry-After"] = "0"
                self._send(status, answer, headers)

            def _send(self, status: int, answer: dict[str, Any], headers: dict[str, str]) -> None:
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        return Handler


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a stalled answer's client has gone: nothing to report


@pytest.fixture
def fake() -> Iterator[tuple[FakeQdrant, str]]:
    """A `FakeQdrant` serving on a free local port, and its URL."""
    server_state = FakeQdrant()
    httpd = _Quiet(("127.0.0.1", 0), server_state.handler())
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server_state, f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _backend(url: str, retry: Retry = FAST) -> ServerBackend:
    client = QdrantClient(url=url, timeout=1, check_compatibility=False)
    return ServerBackend(client, "products", f"{url}/products", url=url, retry=retry)


def _points(product_ids: list[str]) -> list[ProductPoint]:
    vector = np.ones(DIM, dtype=np.float32) / 2
    return [
        ProductPoint(point_id(pid), vector, SparseVec([1], [1.0]), {"product_id": pid})
        for pid in product_ids
    ]


def _operations(backend: ServerBackend, products: list[str]) -> dict[str, Any]:
    """Each operation under test, run once; the kinds of request each sends."""
    request = SearchRequest(
        dense=np.ones(DIM, dtype=np.float32) / 2,
        sparse=SparseVec([1], [1.0]),
        mode=SearchMode.HYBRID,
        bm25_weight=3.0,  # weighted RRF: reads the server's version first
    )
    backend.upsert(_points(products))
    return {
        "meta": read_meta(backend),
        "count": backend.count(),
        "ids": sorted(backend.point_ids()),
        "payloads": backend.payloads([point_id(products[0])]),
        "hits": backend.search_batch([request]),
        "deleted": backend.delete([point_id(products[-1])]),
        "left": backend.count(),
    }


KINDS = ("version", "aliases", "exists", "collection", "upsert", "retrieve", "delete")
KINDS += ("query", "scroll", "count")


@pytest.mark.parametrize("mode", FAILURES)
def test_every_operation_is_retried_to_success_through_transient_failures(fake, mode):
    """Each kind of request fails twice, then succeeds: every operation returns what a
    healthy server gives, soon after."""
    server, url = fake
    for kind in KINDS:
        server.fail(kind, mode, times=2)
    products = ["SKU-1", "SKU-2", "SKU-3"]
    started = time.monotonic()
    done = _operations(_backend(url), products)
    assert time.monotonic() - started < FAST.seconds
    assert done["meta"] == META and done["count"] == 3 and done["left"] == 2
    assert done["ids"] == sorted(point_id(p) for p in products)
    assert list(done["payloads"]) == [point_id("SKU-1")]
    assert [h.product_id for h in done["hits"][0]] == sorted(products, key=lambda p: point_id(p))
    assert all(server.failures[kind] == 0 for kind in KINDS), server.failures


def test_a_stalled_request_times_out_and_is_retried(fake):
    """A server that takes the request and never answers (stuck behind a busy peer) is given
    up on after the client's timeout, and asked again."""
    server, url = fake
    server.fail("scroll", "stall", times=1)
    backend = _backend(url)
    backend.upsert(_points(["SKU-1"]))
    started = time.monotonic()
    assert list(backend.point_ids()) == [point_id("SKU-1")]
    assert time.monotonic() - started < 1 + FAST.seconds  # one timeout, then the answer
    assert server.requests["scroll"] == 2


def test_an_upsert_repeated_after_a_reset_stores_no_duplicate(fake):
    """The server applies an upsert and the connection resets before its answer: the repeat
    carries the same point ids (UUIDv5 of the product ids), so the products are stored once."""
    server, url = fake
    server.fail("upsert", "reset", times=1)
    products = [f"SKU-{i}" for i in range(50)]
    backend = _backend(url)
    backend.upsert(_points(products))
    ids = [point_id(p) for p in products]
    assert server.upserted == [ids, ids]  # applied, reset, applied again: the same ids
    assert sorted(server.points) == sorted(ids) and backend.count() == len(products)
    # The same on a real Qdrant (in this process): upserting the same points twice, once more
    # after an ingest of one of them, leaves one point per product.
    memory = ServerBackend(QdrantClient(":memory:"), "products", ":memory:")
    memory.create(META)
    for _ in range(2):
        memory.upsert(_points(products))
    memory.upsert(_points(products[:1]))
    assert memory.count() == len(products)
    assert sorted(memory.point_ids()) == sorted(ids)


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("503", r"answered with HTTP 503 Service Unavailable \(the count, \d+ tries in"),
        (
            "reset",
            r"cannot reach Qdrant at \S+ \(the count, \d+ tries in [\d.]+ s: ReadError: .*reset",
        ),
    ],
)
def test_a_server_that_never_recovers_fails_clearly_within_the_budget(fake, mode, says):
    server, url = fake
    server.fail("count", mode)
    budget = Retry(seconds=0.5, first_wait=0.05, max_wait=0.2)
    started = time.monotonic()
    with pytest.raises(ServerError, match=says) as raised:
        _backend(url, budget).count()
    took = time.monotonic() - started
    assert url in str(raised.value)
    assert budget.seconds <= took < budget.seconds + 1.0  # + one request's timeout at most
    assert server.requests["count"] >= 3


def test_schema_changes_are_not_repeated(fake):
    """Deleting (or creating) a collection is not repeated: a repeat of one that applied before
    its answer was lost would fail on its own effect. The failure is named at once."""
    server, url = fake
    server.fail("drop", "503")
    with pytest.raises(ServerError, match=r"HTTP 503 Service Unavailable \(deleting collection"):
        _backend(url).drop()
    assert server.requests["drop"] == 1


def _cli(args: list[str], retry_seconds: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "SHOPSEARCH_RETRY_SECONDS": retry_seconds}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return proc, time.monotonic() - started


def test_the_command_line_retries_and_shows_the_placement(fake):
    """`shopsearch info` over a server whose first answers fail: it waits them out and shows
    how the collection is spread over the cluster."""
    server, url = fake
    server.points = {point_id("SKU-1"): {"product_id": "SKU-1"}}
    server.fail("collection", "503", times=2)
    server.fail("count", "reset", times=1)
    proc, _ = _cli(["info", "--qdrant-url", url], "10")
    assert proc.returncode == 0, proc.stderr
    assert "placement: shard_number=3, replication_factor=2, write_consistency_factor=2" in (
        proc.stdout
    )
    assert "products: 1" in proc.stdout
    # `info --json` (and the service's /info) answer with the same document.
    from shopsearch.search.product_search import ProductSearch
    from shopsearch.search.responses import collection_document

    server.fail("collection", "reset", times=1)
    document = collection_document(ProductSearch(_backend(url), None))
    assert document["placement"] == PLACEMENT and document["products"] == 1


def test_the_command_line_fails_clearly_when_the_server_never_recovers(fake):
    server, url = fake
    for kind in KINDS:
        server.fail(kind, "503")
    proc, took = _cli(["info", "--qdrant-url", url], "1")
    assert proc.returncode == 1 and took < 1 + 15  # the budget, and the command's start
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    message = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"error: Qdrant at {re.escape(url)} answered with HTTP 503 Service Unavailable "
        r"\(reading the aliases, \d+ tries in 1\.\d s\): failing on purpose \(503\)",
        message,
    ), message


def test_a_bad_retry_budget_is_a_usage_error(monkeypatch):
    from shopsearch.errors import UsageError

    monkeypatch.setenv("SHOPSEARCH_RETRY_SECONDS", "soon")
    with pytest.raises(UsageError, match="bad SHOPSEARCH_RETRY_SECONDS 'soon'"):
        ServerBackend.connect("http://127.0.0.1:1", "products")
    monkeypatch.setenv("SHOPSEARCH_RETRY_SECONDS", "2.5")
    assert ServerBackend.connect("http://127.0.0.1:1", "products").retry.seconds == 2.5


def test_backoff_grows_with_jitter_and_ends_with_the_budget():
    retry = Retry(seconds=10.0, first_wait=0.1, max_wait=1.0)
    waits = [retry.wait(attempt, 0.0) for attempt in range(1, 8)]
    assert all(w is not None for w in waits)
    assert 0.05 <= waits[0] <= 0.1 and 0.5 <= waits[-1] <= 1.0  # doubling, capped
    assert retry.wait(1, 9.95) == pytest.approx(0.05)  # the last wait ends with the budget
    assert retry.wait(1, 10.0) is None and Retry(seconds=0).wait(1, 0.0) is None
    assert retry.wait(1, 0.0, asked=3.0) == 3.0  # the server's Retry-After, as asked
