"""`shopsearch serve` under load on the 54,667-product Home Depot catalog (issue 37, item 5).

One run measures, with the 1,226 dev queries (every third one filtered: price<=150,
in_stock=true; the default hybrid fusion, top 10, the service's defaults):

1. the limit: in-process `ProductSearch` throughput (int8 OnnxEncoder, no HTTP),
   sequentially and from N threads (with the plain encoder and with the service's
   `BatchingEncoder`); the best is "the in-process limit". Sequentially with a one-thread
   encoder too, whose CPU per search (no threads spin-waiting) bounds what the cores can
   serve at all: the throughput any process layout could reach here, HTTP aside;
2. the service (`python -m shopsearch serve`, int8) under closed-loop HTTP clients over
   loopback at each of --levels: QPS, p50, p99, errors, the CPU the service and the client
   used, the service's own `took_ms` and its mean encoder batch;
3. a soak at concurrency 16, 95% searches and 5% product updates (PUT /products of an
   existing product with a new title and price): errors, the service's RSS at start and
   end, and afterwards every acknowledged update read back with GET /products/{id};
4. the service with `--search-threads 1` (each search runs alone, in arrival order) at
   each of --one-thread-levels;
5. the service with `--workers N --search-threads 1 --threads 1` (N processes, one per
   core by default) at each of --workers-levels;
6. the naive service a user would write instead (benchmarks/serve_naive.py: FastAPI +
   sentence-transformers + qdrant-client local mode over the same products), same load;

then the issue's targets, each met or MISSED. The load generator is one asyncio loop in
this process speaking HTTP/1.1 over keep-alive sockets with prepared requests, not an HTTP
client library, whose per-request CPU would come out of the 2 cores the service is measured
on; its own CPU share is reported with each level. The naive service is so slow that a
level's window stretches until 10 of its searches have ended in it.

    python benchmarks/serve_load.py [--work DIR] [--duration 15] [--warmup 3]
        [--levels 1,8,32] [--one-thread-levels 8,32] [--workers N] [--workers-levels 8,32]
        [--soak-seconds 60]
        [--skip-inproc] [--skip-naive] [--json FILE]

The first run builds the catalog, the Edge collection and the local-mode collection under
--work (the same ones query_latency.py builds, minutes each); later runs reuse them. The
service serves a copy of the Edge collection made for the run, since the soak writes to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import itertools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pyarrow.parquet as pq
from bench_catalog import FILTERS, dev_queries, percentiles, table, write_catalog
from query_latency import COLLECTION, ensure_collection, ensure_model

from shopsearch.encoders import OnnxEncoder, default_model_dir
from shopsearch.search.filters import parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.service.batching import BatchingEncoder
from shopsearch.store.connection import Connection

HERE = Path(__file__).resolve().parent
REQUEST_TIMEOUT_S = 30.0
# The naive service takes seconds a search (local mode scans the collection in Python) and
# shares its cores among all requests in flight: at 32 clients a search takes a minute.
NAIVE_TIMEOUT_S = 300.0
NAIVE_MIN_DONE = 10  # a naive level's window stretches until this many searches ended in it
NAIVE_MAX_SECONDS = 150.0  # ... or this long
READY_TIMEOUT_S = 900.0  # the naive service loads the local-mode collection into memory
STOP_TIMEOUT_S = 40.0  # the service's graceful shutdown is 30 s


# -- measuring ------------------------------------------------------------------------


@dataclass
class Level:
    """One closed-loop measurement: latencies of the requests that finished in the window."""

    system: str
    clients: int
    seconds: float
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter = field(default_factory=Counter)
    error_samples: list[str] = field(default_factory=list)
    server_cpu: float | None = None  # cores the measured process used in the window
    client_cpu: float | None = None  # share of one core the load generator used
    took_ms: list[float] = field(default_factory=list)  # the service's own `took_ms`
    batch_mean: float | None = None  # the service's mean encoder batch in the window
    rss_kb: list[int] = field(default_factory=list)  # the service's RSS, sampled

    def all_latencies(self) -> list[float]:
        return [x for samples in self.latencies.values() for x in samples]

    @property
    def done(self) -> int:
        return len(self.all_latencies())

    @property
    def qps(self) -> float:
        return self.done / self.seconds

    def pct(self, name: str, kind: str | None = None) -> float:
        samples = self.latencies.get(kind, []) if kind else self.all_latencies()
        return percentiles(samples)[name] if samples else float("nan")

    def row(self) -> list[object]:
        took = f"{np.percentile(self.took_ms, 50):.2f}" if self.took_ms else ""
        return [
            self.system,
            self.clients,
            rate(self.qps),
            f"{self.pct('p50'):.2f}",
            f"{self.pct('p99'):.2f}",
            sum(self.errors.values()),
            "" if self.server_cpu is None else f"{self.server_cpu:.2f}",
            "" if self.client_cpu is None else f"{self.client_cpu:.0%}",
            took,
            "" if self.batch_mean is None else f"{self.batch_mean:.1f}",
        ]

    def summary(self) -> dict[str, Any]:
        return {
            "system": self.system,
            "clients": self.clients,
            "seconds": self.seconds,
            "qps": self.qps,
            "p50_ms": self.pct("p50"),
            "p99_ms": self.pct("p99"),
            "errors": dict(self.errors),
            "error_samples": self.error_samples,
            "server_cpu_cores": self.server_cpu,
            "client_cpu_share": self.client_cpu,
            "took_ms_p50": float(np.percentile(self.took_ms, 50)) if self.took_ms else None,
            "encoder_batch_mean": self.batch_mean,
        }


def rate(qps: float) -> str:
    """A rate with two significant digits at least (the naive service's is below 1)."""
    return f"{qps:.1f}" if qps >= 10 else f"{qps:.2g}"


LEVEL_HEADER = [
    "system",
    "clients",
    "QPS",
    "p50 ms",
    "p99 ms",
    "errors",
    "server CPU (cores)",
    "client CPU (of a core)",
    "took_ms p50",
    "encoder batch",
]


def thread_loop(
    system: str, call: Callable[[int], None], workers: int, warmup: float, duration: float
) -> Level:
    """`workers` threads each calling `call(k)` for the next k, back to back, for warmup +
    duration seconds; the calls that finish in the last `duration` seconds are measured."""
    level = Level(system, workers, duration)
    counter = itertools.count()
    begin = time.perf_counter() + warmup
    end = begin + duration
    lock = threading.Lock()

    def work() -> None:
        mine: list[float] = []
        while (t0 := time.perf_counter()) < end:
            try:
                call(next(counter))
            except Exception as exc:  # counted, and the loop goes on as a client's would
                with lock:
                    level.errors["search"] += 1
                    if len(level.error_samples) < 5:
                        level.error_samples.append(repr(exc))
                continue
            t1 = time.perf_counter()
            if begin <= t1 < end:
                mine.append(t1 - t0)
        with lock:
            level.latencies["search"].extend(mine)

    threads = [threading.Thread(target=work, daemon=True) for _ in range(workers)]
    for thread in threads:
        thread.start()
    time.sleep(max(0.0, begin - time.perf_counter()))
    cpu0 = time.process_time()
    time.sleep(max(0.0, end - time.perf_counter()))
    level.server_cpu = (time.process_time() - cpu0) / duration
    for thread in threads:
        thread.join()
    return level


# -- the HTTP client ------------------------------------------------------------------


class HttpConnection:
    """One keep-alive HTTP/1.1 connection; requests are sent as prepared bytes."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length, chunked, close = None, False, False
        for line in head[:-4].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if chunked:
            parts = []
            while size := int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append((await self.reader.readexactly(size + 2))[:-2])
            await self.reader.readuntil(b"\r\n")  # no trailers are sent
            body = b"".join(parts)
        elif length is not None:
            body = await self.reader.readexactly(length)
        else:
            body, close = await self.reader.read(), True
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def http_request(
    method: str, path: str, doc: Any = None, headers: dict[str, str] | None = None
) -> bytes:
    body = b"" if doc is None else json.dumps(doc).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    if doc is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Request:
    kind: str  # "search" or "update"
    raw: bytes
    note: Any = None


async def bounded(request: Awaitable[tuple[int, bytes]], seconds: float) -> tuple[int, bytes]:
    """The request, or asyncio.TimeoutError after `seconds`."""
    if hasattr(asyncio, "timeout"):  # 3.11: no task per request, as wait_for makes
        async with asyncio.timeout(seconds):
            return await request
    return await asyncio.wait_for(request, seconds)


def took_ms(body: bytes) -> float | None:
    """The service's `took_ms`, without parsing the whole answer."""
    at = body.rfind(b'"took_ms":')
    if at < 0:
        return None
    tail = body[at + 10 : at + 40]
    end = min((i for i in (tail.find(b","), tail.find(b"}")) if i >= 0), default=len(tail))
    try:
        return float(tail[:end])
    except ValueError:
        return None


async def closed_loop(
    system: str,
    port: int,
    clients: int,
    warmup: float,
    duration: float,
    make: Callable[[int], Request],
    check: Callable[[Request, int, bytes], bool] | None = None,
    pid: int | None = None,
    sample_rss: bool = False,
    min_done: int = 0,
    max_seconds: float = 0.0,
    timeout: float = REQUEST_TIMEOUT_S,
) -> Level:
    """`clients` connections each sending the next request as soon as the last one is
    answered, for warmup + duration seconds; the requests that end in the last `duration`
    seconds are measured. For a server so slow that few requests end in that time, the window
    stretches until `min_done` have ended in it, up to `max_seconds`. A failed request (not
    200, refused by `check`, a broken connection, or no answer in `timeout` seconds) is an
    error whenever it happens. Requests still out when the window closes are waited for (a
    closed loop's clients do not hang up) but not measured."""
    level = Level(system, clients, duration)
    counter = itertools.count()
    begin = time.perf_counter() + warmup
    end = [begin + duration]  # the meter may move it
    finished: list[tuple[float, str, float, float | None]] = []  # end, kind, latency, took

    async def client() -> None:
        conn = HttpConnection(port)
        try:
            while (t0 := time.perf_counter()) < end[0]:
                req = make(next(counter))
                try:
                    status, body = await bounded(conn.request(req.raw), timeout)
                    ok = status == 200 and (check is None or check(req, status, body))
                    why = "" if ok else f"{req.kind}: HTTP {status} {body[:300]!r}"
                except (OSError, EOFError, asyncio.TimeoutError, ValueError) as exc:
                    conn.close()
                    ok, why = False, f"{req.kind}: {exc!r}"
                t1 = time.perf_counter()
                if not ok:
                    level.errors[req.kind] += 1
                    if len(level.error_samples) < 5:
                        level.error_samples.append(why)
                elif t1 >= begin:
                    took = took_ms(body) if req.kind == "search" else None
                    finished.append((t1, req.kind, t1 - t0, took))
        finally:
            conn.close()

    async def meter() -> None:
        await asyncio.sleep(max(0.0, begin - time.perf_counter()))
        cpu0, server0 = time.thread_time(), process_cpu(pid)
        batch0 = encoder_batches(port) if pid is not None else None
        latest = begin + max(duration, max_seconds)
        while (now := time.perf_counter()) < end[0] or (len(finished) < min_done and now < latest):
            if sample_rss and pid is not None:
                level.rss_kb.append(rss_kb(pid))
            await asyncio.sleep(max(0.0, min(1.0, end[0] - now)) or 0.5)
        end[0] = now
        level.seconds = now - begin
        level.client_cpu = (time.thread_time() - cpu0) / level.seconds
        if pid is not None:
            level.server_cpu = (process_cpu(pid) - server0) / level.seconds
        if sample_rss and pid is not None:
            level.rss_kb.append(rss_kb(pid))
        batch1 = encoder_batches(port) if pid is not None else None
        if batch0 and batch1 and batch1[1] > batch0[1]:
            level.batch_mean = (batch1[0] - batch0[0]) / (batch1[1] - batch0[1])

    await asyncio.gather(meter(), *(client() for _ in range(clients)))
    for t1, kind, latency, took in finished:
        if t1 < end[0]:
            level.latencies[kind].append(latency)
            if took is not None:
                level.took_ms.append(took)
    return level


def family(pid: int) -> list[int]:
    """`pid` and the processes it started, and theirs."""
    children: dict[int, list[int]] = defaultdict(list)
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue  # ended meanwhile
        children[parent].append(int(stat.parent.name))
    members, todo = [], [pid]
    while todo:
        members.append(todo.pop())
        todo += children.get(members[-1], [])
    return members


def process_cpu(pid: int | None) -> float:
    """User + system CPU seconds of a process and its threads, and of the processes it
    started (a service's workers)."""
    if pid is None:
        return 0.0
    total = 0.0
    for member in family(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended meanwhile
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def rss_kb(pid: int) -> int:
    """The resident memory of a process and of the processes it started (a service's
    workers)."""
    total = 0
    for member in family(pid):
        with contextlib.suppress(OSError):  # ended meanwhile
            for line in Path(f"/proc/{member}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    if not total:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return total


def encoder_batches(port: int) -> tuple[float, float] | None:
    """(sum, count) of the service's encoder batch sizes, from /metrics."""
    try:
        text = http_get(port, "/metrics").decode()
    except OSError:
        return None
    found = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in ("shopsearch_encoder_batch_size_sum", "shopsearch_encoder_batch_size_count"):
            found[name.rsplit("_", 1)[1]] = float(value)
    return (found["sum"], found["count"]) if len(found) == 2 else None


def http_get(port: int, path: str, timeout: float = 5) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as answer:
        return answer.read()


# -- processes ------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when this benchmark dies, even by SIGKILL, so no
    service outlives it holding a collection open."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def served(name: str, cmd: list[str], port: int, log: Path) -> Iterator[subprocess.Popen]:
    """A server process started with `cmd`, once its /readyz answers 200; stopped (SIGTERM,
    then SIGKILL) when the block ends, however it ends."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as log_file:
        process = subprocess.Popen(
            cmd,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    try:
        started = time.perf_counter()
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited ({process.returncode}):\n{log_tail(log)}")
            try:
                if json.loads(http_get(port, "/readyz", timeout=2)).get("status") == "ready":
                    break
            except (OSError, ValueError):
                pass
            if time.perf_counter() - started > READY_TIMEOUT_S:
                raise RuntimeError(f"{name} not ready in {READY_TIMEOUT_S:.0f} s:\n{log_tail(log)}")
            time.sleep(0.2)
        print(f"{name} ready in {time.perf_counter() - started:.1f} s (pid {process.pid})",
              file=sys.stderr)  # fmt: skip
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def service_command(port: int, directory: Path, model_dir: Path, *flags: str) -> list[str]:
    """`shopsearch serve` of the benchmark's collection in `directory`."""
    return [
        sys.executable, "-m", "shopsearch", "serve", "--port", str(port),
        "-c", COLLECTION, "--path", str(directory), "--model", str(model_dir), *flags,
    ]  # fmt: skip


@contextlib.contextmanager
def copy_of(edge: Connection, work: Path) -> Iterator[Path]:
    """A directory holding a copy of the Edge collection, removed afterwards."""
    directory = work / "serve-copy"
    try:
        shutil.rmtree(directory, ignore_errors=True)
        shutil.copytree(edge.edge_dir(), directory / COLLECTION)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def measure_service(
    args: argparse.Namespace,
    edge: Connection,
    model_dir: Path,
    searches: list[Request],
    rows: list[list[object]],
    levels: list[int],
    *flags: str,
    catalog: Path | None = None,
) -> tuple[dict[int, Level], Soak | None]:
    """`shopsearch serve FLAGS` over a copy of the collection, searched at each of `levels`,
    then soaked when `catalog` is given (its products are the updates); its CPU and memory
    count the worker processes too."""
    found: dict[int, Level] = {}
    soaked = None
    if not levels:
        return found, soaked
    system = " ".join(["shopsearch serve", *flags])
    api_key = f"bench-{os.getpid()}"
    with copy_of(edge, args.work) as directory:
        port = free_port()
        cmd = service_command(port, directory, model_dir, *flags, "--api-key", api_key)
        with served(system, cmd, port, args.work / "serve.log") as process:
            for n in levels:
                found[n] = asyncio.run(
                    closed_loop(system, port, n, args.warmup, args.duration,
                                lambda k: searches[k % len(searches)], pid=process.pid)
                )  # fmt: skip
                rows.append(found[n].row())
                print(table(LEVEL_HEADER, [rows[-1]]).splitlines()[-1], file=sys.stderr)
            if catalog is not None and args.soak_seconds > 0:
                soaked = soak(
                    port, process.pid, api_key, searches, catalog,
                    args.soak_clients, args.soak_seconds, args.update_share,
                )  # fmt: skip
    return found, soaked


def log_tail(log: Path, chars: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def machine_load() -> str:
    """What else the machine was doing: the load average, and how much of the last minute
    some task waited for a CPU (Linux pressure stall information), where available."""
    note = f"load average {os.getloadavg()[0]:.1f}"
    with contextlib.suppress(OSError, IndexError, ValueError):
        some = Path("/proc/pressure/cpu").read_text().split()
        note += f", CPU pressure {float(some[2].split('=')[1]):.0f}% (avg60)"
    return note


# -- the workload ---------------------------------------------------------------------


def workload(queries: list[str]) -> list[tuple[str, list[str]]]:
    """Each dev query with its filters: every third one (from the first) gets FILTERS."""
    return [(text, FILTERS if i % 3 == 0 else []) for i, text in enumerate(queries)]


def search_requests(work: list[tuple[str, list[str]]]) -> list[Request]:
    """POST /search bodies, as a shop's page sends them (filters only where it has some)."""
    out = []
    for text, filters in work:
        doc: dict[str, Any] = {"q": text}
        if filters:
            doc["filters"] = filters
        out.append(Request("search", http_request("POST", "/search", doc)))
    return out


def in_process(
    edge: Connection,
    model_dir: Path,
    work: list[tuple[str, list[str]]],
    threads: list[int],
    warmup: float,
    duration: float,
) -> list[Level]:
    """The same searches as the service's, called directly: sequentially, then from each
    number of threads with the plain encoder and with the service's BatchingEncoder."""
    conditions = parse_filters(FILTERS)
    queries = [Query(text, conditions if filters else ()) for text, filters in work]
    options = SearchOptions()
    encoder = OnnxEncoder.load(model_dir, precision="int8")
    backend = edge.open()
    levels = []
    try:
        plain = ProductSearch(backend, encoder)
        batching = ProductSearch(backend, BatchingEncoder(encoder), typos=plain.typos)
        one_thread = OnnxEncoder.load(model_dir, precision="int8", threads=1)
        arms = [
            (CPU_FLOOR, ProductSearch(backend, one_thread, typos=plain.typos), 1),
            ("in-process, sequential", plain, 1),
        ]
        for n in threads:
            arms += [
                (f"in-process, {n} threads", plain, n),
                (f"in-process, {n} threads, BatchingEncoder", batching, n),
            ]
        for system, search, n in arms:

            def call(k: int, search: ProductSearch = search) -> None:
                search.search(queries[k % len(queries)], options)

            levels.append(thread_loop(system, call, n, warmup, duration))
            print(table(LEVEL_HEADER, [levels[-1].row()]).splitlines()[-1], file=sys.stderr)
    finally:
        backend.close()
    return levels


@dataclass
class Soak:
    level: Level
    acknowledged: dict[str, tuple[str, float]]
    read_back: int = 0
    mismatches: list[str] = field(default_factory=list)

    @property
    def rss_growth(self) -> float:
        start, end = self.level.rss_kb[0], self.level.rss_kb[-1]
        return (end - start) / start


def soak(
    port: int,
    pid: int,
    api_key: str,
    searches: list[Request],
    catalog: Path,
    clients: int,
    seconds: float,
    update_share: float,
) -> Soak:
    """Searches with product updates mixed in; each acknowledged update is then read back."""
    rows = pq.read_table(catalog).to_pylist()
    random.Random(37).shuffle(rows)
    fresh = iter(rows)  # one update per product: acknowledgements cannot race each other
    rng = random.Random(5)
    acknowledged: dict[str, tuple[str, float]] = {}
    headers = {"X-API-Key": api_key}

    def make(k: int) -> Request:
        if rng.random() >= update_share:
            return searches[k % len(searches)]
        row = next(fresh)
        record = {key: value for key, value in row.items() if value is not None}
        record["title"] = f"{row['title']} (soak edit {k})"
        record["price"] = round(row["price"] + 1 + (k % 100) / 100, 2)
        raw = http_request("PUT", "/products", {"products": [record]}, headers)
        return Request("update", raw, (record["id"], record["title"], record["price"]))

    def check(req: Request, status: int, body: bytes) -> bool:
        if req.kind != "update":
            return True
        answer = json.loads(body)
        if answer.get("upserted") != 1 or answer.get("rejected"):
            return False
        product_id, title, price = req.note
        acknowledged[product_id] = (title, price)
        return True

    level = asyncio.run(
        closed_loop("service, soak", port, clients, 0.0, seconds, make, check, pid, sample_rss=True)
    )
    result = Soak(level, acknowledged)
    asyncio.run(read_back(port, result))
    return result


async def read_back(port: int, result: Soak, clients: int = 8) -> None:
    pending = list(result.acknowledged.items())

    async def client() -> None:
        conn = HttpConnection(port)
        try:
            while pending:
                product_id, (title, price) = pending.pop()
                try:
                    status, body = await conn.request(
                        http_request("GET", f"/products/{quote(product_id, safe='')}")
                    )
                except (OSError, EOFError, ValueError) as exc:
                    conn.close()
                    result.mismatches.append(f"{product_id}: {exc!r}")
                    continue
                result.read_back += 1
                stored = json.loads(body) if status == 200 else {}
                # Stored as an ingest stores text: runs of whitespace made one space.
                if (
                    stored.get("title") != " ".join(title.split())
                    or abs(stored.get("price", -1) - price) > 1e-6
                ):
                    result.mismatches.append(
                        f"{product_id}: HTTP {status}, title {stored.get('title')!r}, "
                        f"price {stored.get('price')!r}; acknowledged {title!r}, {price}"
                    )
        finally:
            conn.close()

    await asyncio.gather(*(client() for _ in range(clients)))


def ensure_local(local_dir: Path, catalog: Path, model_dir: Path) -> None:
    """query_latency.py's local-mode collection, built under another name and renamed when
    complete, so that an interrupted build is never taken for one."""
    if local_dir.exists():
        return
    from qdrant_client import QdrantClient

    from shopsearch.ingest.pipeline import ingest_catalog
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.store.server import ServerBackend

    building = local_dir.with_name(local_dir.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    started = time.perf_counter()
    backend = ServerBackend(QdrantClient(path=str(building)), COLLECTION, str(building))
    try:
        report = ingest_catalog(
            CatalogReader(catalog),
            backend,
            OnnxEncoder.load(model_dir, precision="int8"),
            rejects_path=local_dir.with_name("local.rejects.jsonl"),
        )
    finally:
        backend.close()
    building.rename(local_dir)
    print(
        f"built {local_dir}: {report.upserted} products in {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
    )


# -- the report -----------------------------------------------------------------------


CPU_FLOOR = "in-process, sequential, one encoder thread"


def cpu_bound(inproc: list[Level], cpus: int, clients: int = 8, p99_ms: float = 25.0) -> str:
    """What the cores can serve at all, from the CPU a search costs with nothing spinning,
    against the throughput `clients` closed loops need for every request within `p99_ms`."""
    floor = next(lv for lv in inproc if lv.system == CPU_FLOOR)
    cpu_ms = 1000 * floor.server_cpu / floor.qps
    return (
        f"A search costs {cpu_ms:.2f} ms of CPU in-process ({CPU_FLOOR}, no HTTP): "
        f"{cpus} cores serve at most {1000 * cpus / cpu_ms:.0f} QPS. {clients} closed-loop "
        f"clients each answered within {p99_ms:g} ms need at least {1000 * clients / p99_ms:.0f}."
    )


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else "met" if ok else "MISSED"


def targets(
    limit: Level | None,
    service: dict[int, Level],
    naive: dict[int, Level],
    soaked: Soak | None,
    one_thread: dict[int, Level] | None = None,
    workers: dict[int, Level] | None = None,
    workers_soaked: Soak | None = None,
) -> list[list[object]]:
    rows: list[list[object]] = []
    top = service.get(32)
    if top and limit:
        ratio = top.qps / limit.qps
        rows.append(
            ["service QPS at c=32 >= 0.6x in-process limit",
             f"{top.qps:.1f} / {limit.qps:.1f} = {ratio:.2f}x", verdict(ratio >= 0.6)]
        )  # fmt: skip
    else:
        rows.append(["service QPS at c=32 >= 0.6x in-process limit", "not measured", "n/a"])
    best_naive = max(naive.values(), key=lambda lv: lv.qps, default=None)
    if top and best_naive and best_naive.qps > 0:
        ratio = top.qps / best_naive.qps
        rows.append(
            ["service QPS at c=32 >= 10x naive service's (its best level)",
             f"{rate(top.qps)} / {rate(best_naive.qps)} = {ratio:.0f}x", verdict(ratio >= 10)]
        )  # fmt: skip
    else:
        rows.append(["service QPS at c=32 >= 10x naive service's", "not measured", "n/a"])
    eight = service.get(8)
    rows.append(
        ["service p99 at c=8 <= 25 ms, one process (the default)",
         f"{eight.pct('p99'):.2f} ms" if eight else "not measured",
         verdict(eight.pct("p99") <= 25 if eight else None)]
    )  # fmt: skip
    others = [("... one process, --search-threads 1", (one_thread or {}).get(8)),
              ("... --workers, one per core", (workers or {}).get(8))]  # fmt: skip
    for name, level in others:
        if level is not None:
            rows.append([name, f"{level.pct('p99'):.2f} ms", verdict(level.pct("p99") <= 25)])
    for which, done in (("", soaked), (" (--workers)", workers_soaked)):
        if done is None:
            continue
        errors = sum(done.level.errors.values())
        rows.append([f"zero errors in the soak{which}", str(errors), verdict(errors == 0)])
        growth = done.rss_growth
        start, end = done.level.rss_kb[0] / 1024, done.level.rss_kb[-1] / 1024
        rows.append(
            [f"service RSS growth in the soak < 10%{which}",
             f"{start:.0f} -> {end:.0f} MiB ({growth:+.1%})", verdict(growth < 0.10)]
        )  # fmt: skip
        rows.append(
            [f"every acknowledged update read back{which}",
             f"{len(done.acknowledged) - len(done.mismatches)}/{len(done.acknowledged)}",
             verdict(not done.mismatches)]
        )  # fmt: skip
    return rows


def print_soak(soaked: Soak, args: argparse.Namespace, workers: bool) -> dict[str, Any]:
    lv = soaked.level
    which = f" (--workers {args.workers})" if workers else ""
    print(f"\nSoak{which}: {args.soak_seconds:g} s, {args.soak_clients} clients, "
          f"{args.update_share:.0%} updates:\n")  # fmt: skip
    soak_rows = [
        [kind, len(lv.latencies.get(kind, [])) + lv.errors[kind], lv.errors[kind],
         f"{lv.pct('p50', kind):.2f}", f"{lv.pct('p99', kind):.2f}"]
        for kind in ("search", "update")
    ]  # fmt: skip
    print(table(["request", "answered", "errors", "p50 ms", "p99 ms"], soak_rows))
    print(
        f"\n{lv.qps:.1f} requests/s, service CPU {lv.server_cpu:.2f} cores; "
        f"RSS {lv.rss_kb[0] / 1024:.0f} MiB at start, {max(lv.rss_kb) / 1024:.0f} MiB "
        f"peak, {lv.rss_kb[-1] / 1024:.0f} MiB at end; {len(soaked.acknowledged)} updates "
        f"acknowledged, {soaked.read_back} read back, {len(soaked.mismatches)} mismatched"
    )
    for line in [*lv.error_samples, *soaked.mismatches][:10]:
        print(f"- {line}")
    return {
        **lv.summary(),
        "latency_by_kind": {
            kind: {"p50_ms": lv.pct("p50", kind), "p99_ms": lv.pct("p99", kind)}
            for kind in lv.latencies
        },
        "rss_kb": lv.rss_kb,
        "acknowledged": len(soaked.acknowledged),
        "read_back": soaked.read_back,
        "mismatches": soaked.mismatches,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds measured a level")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each level")
    parser.add_argument("--levels", default="1,8,32", help="client concurrencies")
    parser.add_argument("--inproc-threads", default="8,32", help="in-process thread counts")
    parser.add_argument("--soak-seconds", type=float, default=60.0)
    parser.add_argument("--soak-clients", type=int, default=16)
    parser.add_argument("--update-share", type=float, default=0.05)
    parser.add_argument(
        "--naive-duration",
        type=float,
        default=None,
        help="seconds measured a naive level (default: min(--duration, 10))",
    )
    parser.add_argument(
        "--one-thread-levels",
        default="8,32",
        help="client concurrencies for the service with --search-threads 1 ('' skips it)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes of the --workers arm, one per core (1 skips it)",
    )
    parser.add_argument(
        "--workers-levels", default="8,32", help="client concurrencies for the --workers arm"
    )
    parser.add_argument(
        "--workers-flags", default="", help="other `shopsearch serve` flags of the --workers arm"
    )
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-inproc", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",") if x]
    one_thread_levels = [int(x) for x in args.one_thread_levels.split(",") if x]
    workers_levels = [int(x) for x in args.workers_levels.split(",") if x]
    inproc_threads = [int(x) for x in args.inproc_threads.split(",") if x]
    naive_duration = args.naive_duration or min(args.duration, 10.0)
    # SIGTERM ends the run as Ctrl-C does, through the blocks that stop the services.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    model_dir = ensure_model(args.model_dir or default_model_dir())
    catalog = write_catalog(args.work / "homedepot-attrs.parquet")
    edge = Connection(collection=COLLECTION, path=args.work / "edge")
    ensure_collection(edge, catalog, model_dir)
    work = workload(dev_queries())
    searches = search_requests(work)
    print(
        f"{len(work)} dev queries, {sum(1 for _, f in work if f)} with filters {FILTERS}; "
        f"default hybrid fusion, top 10; {os.cpu_count()} CPUs; {args.warmup:g} s warm-up + "
        f"{args.duration:g} s a level. At start: {machine_load()}\n"
    )
    if os.getloadavg()[0] > 1.0:
        print("The machine is busy with other work: figures from this run are not comparable.\n")
    report: dict[str, Any] = {
        "queries": len(work),
        "cpus": os.cpu_count(),
        "at_start": machine_load(),
    }
    rows: list[list[object]] = []
    limit: Level | None = None
    inproc: list[Level] = []
    naive: dict[int, Level] = {}

    if not args.skip_inproc:
        inproc = in_process(edge, model_dir, work, inproc_threads, args.warmup, args.duration)
        limit = max(inproc, key=lambda lv: lv.qps)
        rows += [lv.row() for lv in inproc]
        report["in_process"] = [lv.summary() for lv in inproc]

    service, soaked = measure_service(
        args, edge, model_dir, searches, rows, levels, catalog=catalog
    )
    report["service"] = [lv.summary() for lv in service.values()]

    one_thread, _ = measure_service(
        args, edge, model_dir, searches, rows, one_thread_levels, "--search-threads", "1"
    )
    report["service_one_search_thread"] = [lv.summary() for lv in one_thread.values()]
    workers: dict[int, Level] = {}
    workers_soaked: Soak | None = None
    if args.workers > 1:
        flags = ["--workers", str(args.workers), *args.workers_flags.split()]
        workers, workers_soaked = measure_service(
            args, edge, model_dir, searches, rows, workers_levels, *flags, catalog=catalog
        )
        report["service_workers"] = [lv.summary() for lv in workers.values()]

    if not args.skip_naive:
        local_dir = args.work / "local"
        ensure_local(local_dir, catalog, model_dir)
        port = free_port()
        cmd = [sys.executable, str(HERE / "serve_naive.py"), "--port", str(port),
               "--qdrant-path", str(local_dir), "--collection", COLLECTION]  # fmt: skip
        with served("naive service", cmd, port, args.work / "naive.log") as process:
            for n in levels:
                naive[n] = asyncio.run(
                    closed_loop(
                        "naive: FastAPI + sentence-transformers + qdrant-client local",
                        port, n, args.warmup, naive_duration,
                        lambda k: searches[k % len(searches)], pid=process.pid,
                        min_done=NAIVE_MIN_DONE, max_seconds=NAIVE_MAX_SECONDS,
                        timeout=NAIVE_TIMEOUT_S,
                    )
                )  # fmt: skip
                rows.append(naive[n].row())
                print(table(LEVEL_HEADER, [rows[-1]]).splitlines()[-1], file=sys.stderr)
        report["naive"] = [lv.summary() for lv in naive.values()]

    print("Throughput and latency (closed loops; latency from the client, ms):\n")
    print(table(LEVEL_HEADER, rows))
    errors = [s for lv in [*service.values(), *naive.values()] for s in lv.error_samples]
    if errors:
        print("\nFirst errors:\n" + "\n".join(f"- {e}" for e in errors[:10]))
    for name, done in (("soak", soaked), ("soak_workers", workers_soaked)):
        if done is not None:
            report[name] = print_soak(done, args, name == "soak_workers")
    if limit:
        print(f"\nIn-process limit: {limit.system}, {limit.qps:.1f} QPS.")
        bound = cpu_bound(inproc, os.cpu_count() or 1)
        print(bound)
        report["cpu_bound"] = bound
    print(f"At end: {machine_load()}\n")
    report["at_end"] = machine_load()
    goals = targets(limit, service, naive, soaked, one_thread, workers, workers_soaked)
    print(table(["target", "measured", ""], goals))
    report["targets"] = goals
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the services were stopped on the way out
        sys.exit(130)
