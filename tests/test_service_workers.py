"""`shopsearch serve --workers 2` over HTTP, on the real service: the supervisor hands
connections to two worker processes in turn; the writer holds the Edge collection, the
follower searches its own copy, kept current by the writer's log."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
from service_helpers import (
    COMPARED,
    cli,
    demo_service,
    reindex_case,
    reindex_under_searches,
    same_answer,
    service_process,
)

KEY = "workers-key"


@pytest.fixture(scope="module")
def demo(exported_model: Path, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("workers")
    with demo_service(exported_model, tmp, "--workers", "2", "--api-key", KEY) as up:
        yield up


def worker(url: str) -> int:
    """Which worker a new connection reaches (httpx's module functions open one a call)."""
    return httpx.get(f"{url}/info").json()["worker"]


def test_connections_are_handed_to_the_workers_in_turn(demo):
    url, *_ = demo
    seen = [worker(url) for _ in range(6)]
    assert sorted(set(seen)) == [0, 1]
    assert all(a != b for a, b in itertools.pairwise(seen))


def test_every_worker_answers_as_the_cli(demo):
    url, _, answers, _ = demo
    for (_, body), want in zip(COMPARED, answers, strict=True):
        workers = set()
        for _ in range(2):  # two connections: both workers
            with httpx.Client(base_url=url) as connection:
                workers.add(connection.get("/info").json()["worker"])
                same_answer(connection.post("/search", json=body).json(), want)
        assert workers == {0, 1}


def test_a_write_through_either_worker_is_read_by_both(demo):
    url, *_ = demo
    headers = {"X-API-Key": KEY}
    for i in range(4):  # the PUTs reach the writer and the follower in turn
        record = {"id": f"w-{i}", "title": f"quokka lantern number {i}", "price": 10 + i}
        put = httpx.put(f"{url}/products", json={"products": [record]}, headers=headers)
        assert put.status_code == 200 and put.json()["upserted"] == 1
        for _ in range(2):
            assert httpx.get(f"{url}/products/w-{i}").json()["title"] == record["title"]
            found = httpx.get(f"{url}/search", params={"q": f"quokka lantern number {i}"}).json()
            assert found["results"][0]["product_id"] == f"w-{i}"
    deleted = httpx.post(f"{url}/products/delete", json={"ids": ["w-0", "w-9"]}, headers=headers)
    assert deleted.json() == {"deleted": ["w-0"], "missing": ["w-9"]}
    assert httpx.delete(f"{url}/products/w-1", headers=headers).status_code == 200
    for _ in range(2):
        assert httpx.get(f"{url}/products/w-0").status_code == 404
        assert httpx.get(f"{url}/products/w-1").status_code == 404
    for _ in range(2):  # a write without the key, at either worker
        assert httpx.delete(f"{url}/products/w-2").status_code == 401


def test_each_worker_counts_into_one_metrics_page(demo):
    url, *_ = demo

    def counted(endpoint: str) -> float:
        page = httpx.get(f"{url}/metrics").text
        assert "shopsearch_collection_products" in page
        line = f'shopsearch_requests_total{{endpoint="{endpoint}",status="200"}}'
        return sum(float(x.split()[-1]) for x in page.splitlines() if x.startswith(line))

    searches, puts = counted("/search"), counted("/products")
    for _ in range(5):  # at both workers, in turn
        assert httpx.get(f"{url}/search", params={"q": "boots"}).status_code == 200
    for i in range(2):  # one at the writer, one the follower sends on to it: counted once
        record = {"id": f"m-{i}", "title": "metrics probe", "price": 1}
        put = httpx.put(f"{url}/products", json={"products": [record]}, headers={"X-API-Key": KEY})
        assert put.status_code == 200
    assert [counted("/search") for _ in range(2)] == [searches + 5, searches + 5]
    assert [counted("/products") for _ in range(2)] == [puts + 2, puts + 2]


def test_ingest_recreate_while_serving_with_workers_fails_no_search(
    exported_model, small_catalog, tmp_path
):
    env, rebuilt = reindex_case(exported_model, small_catalog, tmp_path)
    both = {0: ["wombat-1"], 1: ["wombat-1"]}
    with service_process(env, "-c", "live", "--workers", "2") as (url, _):
        failures, seen = reindex_under_searches(
            url, env, rebuilt, tmp_path, 4, lambda seen: seen == both
        )
        infos = [httpx.get(f"{url}/info").json() for _ in range(2)]
    assert failures == []
    assert seen == both
    assert {i["worker"]: (i["products"], i["reloads"]) for i in infos} == {0: (61, 1), 1: (61, 1)}


def _family(pid: int) -> list[int]:
    """`pid` and the processes it started."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    family, todo = [], [pid]
    while todo:
        family.append(todo.pop())
        todo += children.get(family[-1], [])
    return family


def test_acknowledged_puts_survive_kill_9_of_every_process(exported_model, small_catalog, tmp_path):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model), "SHOPSEARCH_DATA_DIR": str(tmp_path / "d")}
    cli("ingest", str(small_catalog), "-c", "kill", "--rejects", str(tmp_path / "r"), env=env)
    acknowledged: list[str] = []
    with service_process(env, "-c", "kill", "--workers", "2") as (url, process):

        def writer(first: int) -> None:
            for i in range(first, 10_000, 2):
                pid = f"k-{i}"
                record = {"id": pid, "title": f"kill test product {i}", "price": i}
                try:  # a new connection each time: the writer and the follower in turn
                    response = httpx.put(f"{url}/products", json={"products": [record]})
                except httpx.HTTPError:
                    return  # the service died mid-request: not acknowledged
                if response.status_code == 200:
                    acknowledged.append(pid)

        threads = [threading.Thread(target=writer, args=(k,)) for k in (0, 1)]
        for t in threads:
            t.start()
        while len(acknowledged) < 25:
            time.sleep(0.02)
        family = _family(process.pid)
        for pid in family:
            os.kill(pid, signal.SIGKILL)
        process.wait()
        for t in threads:
            t.join()
    with service_process(env, "-c", "kill", "--workers", "2") as (url, _):
        missing = [p for p in acknowledged if httpx.get(f"{url}/products/{p}").status_code != 200]
        left = list((tmp_path / "d").glob(".kill.serve-*"))
    assert len(family) == 3  # the supervisor and its two workers
    assert len(acknowledged) >= 25
    assert missing == []
    assert len(left) == 1  # the killed service's copies were removed; the running one's stay


def test_workers_over_a_qdrant_server_are_refused(exported_model, tmp_path):
    env = {"SHOPSEARCH_MODEL_DIR": str(exported_model)}
    proc = cli("serve", "--workers", "2", "--qdrant-url", "http://127.0.0.1:9", env=env,
               check=False)  # fmt: skip
    assert proc.returncode != 0
    assert "load balancer" in proc.stderr and "Traceback" not in proc.stderr


def test_the_write_log_keeps_what_a_follower_has_yet_to_read(tmp_path):
    """Files every follower has read past are removed; a follower reads across files, in
    order, whatever it missed."""
    from shopsearch.service.write_log import WriteLog

    writer = WriteLog(tmp_path, readers=2, segment_bytes=200)
    writer.start()
    fast, slow = WriteLog(tmp_path, reader=1), WriteLog(tmp_path, reader=2)
    entries = [{"op": "upsert", "payload": [{"id": str(i), "title": "x" * 40}]} for i in range(20)]
    got_fast = []
    for entry in entries:
        writer.append(entry)
        got_fast += fast.read()
    files = sorted(tmp_path.glob("writes-*.log"))
    assert got_fast == entries
    assert len(files) > 3  # none removed: the slow follower is still in the first
    assert slow.pending()
    assert slow.read() == entries and not slow.pending()
    for entry in entries:  # the next file that fills removes those both have left
        writer.append(entry)
    assert fast.read() == entries and slow.read() == entries
    kept = sorted(int(p.stem.split("-")[1]) for p in tmp_path.glob("writes-*.log"))
    assert kept[0] == len(files) - 1  # the files both had read past are gone
