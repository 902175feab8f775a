"""Starting the real service for tests: a `shopsearch serve` process on a free local port,
or an in-process uvicorn server on a thread (for a collection the test shares, such as
QdrantClient(':memory:'))."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the service exited: {process.stderr.read()}")  # type: ignore[union-attr]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} not ready in {timeout} s")


@contextmanager
def service_process(env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`shopsearch serve` in its own process; stopped with SIGTERM (or already killed)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "shopsearch", "serve", "--port", str(port), *args],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, process)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def service_thread(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app served by uvicorn on a thread of this process, on a free port."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)


# Requests compared with `shopsearch query --json`: (CLI arguments, POST body).
COMPARED = [
    (
        ["womens casul shoes", "--top-k", "5"],
        {"q": "womens casul shoes", "top_k": 5},
    ),
    (
        ["black boots for women", "-f", "color in (Black,Brown)", "-f", "price<=1500",
         "--facet", "brand", "--facet", "price", "--offset", "3", "--top-k", "4"],
        {"q": "black boots for women", "filters": ["color in (Black,Brown)", "price<=1500"],
         "facets": ["brand", "price"], "offset": 3, "top_k": 4},
    ),
    (
        ["watch", "--mode", "bm25", "-f", "price>100"],
        {"q": "watch", "mode": "bm25", "filters": ["price>100"]},
    ),
    (
        ["watch for men", "--mode", "dense", "--top-k", "3"],
        {"q": "watch for men", "mode": "dense", "top_k": 3},
    ),
    (
        ["red dress", "--fusion", "dbsf", "--no-fix-typos"],
        {"q": "red dress", "fusion": "dbsf", "fix_typos": False},
    ),
]  # fmt: skip


def same_answer(service: dict, cli_answer: dict) -> None:
    """Equal field for field; scores to float32 precision (the service may encode a query in
    a batch run, the CLI in a forked child: the same model, other threads)."""
    service = {k: v for k, v in service.items() if k != "took_ms"}
    assert service.keys() == cli_answer.keys()
    for key in service:
        if key != "results":
            assert service[key] == cli_answer[key], key
    assert len(service["results"]) == len(cli_answer["results"])
    for got, want in zip(service["results"], cli_answer["results"], strict=True):
        assert got["score"] == pytest.approx(want["score"], abs=1e-5)
        assert {**got, "score": 0} == {**want, "score": 0}


def reindex_case(model: Path, small_catalog: Path, tmp_path: Path) -> tuple[dict[str, str], Path]:
    """The environment of an Edge collection `live` of the small catalog, and the catalog a
    reindex replaces it with: 60 of its products and `wombat-1`, a "wombat shaped doorstop"
    that only the new collection holds."""
    env = {"SHOPSEARCH_MODEL_DIR": str(model), "SHOPSEARCH_DATA_DIR": str(tmp_path / "d")}
    cli("ingest", str(small_catalog), "-c", "live", "--rejects", str(tmp_path / "r"), env=env)
    rows = pq.read_table(small_catalog).to_pylist()
    marker = {**rows[0], "id": "wombat-1", "title": "wombat shaped doorstop"}
    rebuilt = tmp_path / "next.parquet"
    pq.write_table(pa.Table.from_pylist([*rows[:60], marker], schema=pq.read_schema(DEMO)), rebuilt)
    return env, rebuilt


def reindex_under_searches(
    url: str,
    env: dict[str, str],
    rebuilt: Path,
    tmp_path: Path,
    connections: int,
    switched: Callable[[dict], bool],
) -> tuple[list[str], dict]:
    """`ingest --recreate` of collection `live` with `rebuilt` while `connections` clients
    search "wombat doorstop" back to back, each on a connection of its own, until
    `switched(seen)` or 60 s: the failed searches' answers, and `seen`, each connection's
    worker (`/info`'s `worker`, None for one process) and its last top result."""
    failures: list[str] = []
    seen: dict = {}
    stop = threading.Event()

    def stream() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            me = client.get("/info").json().get("worker")
            while not stop.is_set():
                response = client.get("/search", params={"q": "wombat doorstop", "top_k": 1})
                if response.status_code != 200:
                    failures.append(response.text)
                else:
                    seen[me] = [r["product_id"] for r in response.json()["results"]]

    streams = [threading.Thread(target=stream) for _ in range(connections)]
    for t in streams:
        t.start()
    try:
        cli("ingest", str(rebuilt), "-c", "live", "--recreate",
            "--rejects", str(tmp_path / "r2"), env=env)  # fmt: skip
        deadline = time.monotonic() + 60
        while not switched(seen) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        for t in streams:
            t.join()
    return failures, seen


@contextmanager
def demo_service(model: Path, tmp: Path, *flags: str) -> Iterator[tuple]:
    """The demo catalog ingested as `demo`, the CLI's answers to COMPARED taken, then the
    service started over the same collection with `flags` (an Edge collection opens in one
    process at a time): (url, env, answers, process)."""
    env = {"SHOPSEARCH_MODEL_DIR": str(model), "SHOPSEARCH_DATA_DIR": str(tmp / "data")}
    cli("ingest", str(DEMO), "-c", "demo", "--rejects", str(tmp / "r.jsonl"), env=env)
    answers = [json.loads(cli("query", *args, "-c", "demo", "--json", env=env).stdout)
               for args, _ in COMPARED]  # fmt: skip
    with service_process(env, "-c", "demo", *flags) as (url, process):
        yield url, env, answers, process
