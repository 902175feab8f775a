"""`shopsearch serve --workers N`: one port, N worker processes.

One process's Python runs under one interpreter lock, which Qdrant Edge holds for a whole
search, so one process serves about as many searches a second however many cores it has.
Several processes do not share that lock. This process (the supervisor) makes each follower
a copy of the collection, starts the workers, then accepts the connections and hands each
to the next worker in turn (a connection's file descriptor sent over a socket pair): the
kernel's own spreading (`SO_REUSEPORT`) hashes connections, and a few keep-alive
connections often land unevenly, which the busiest worker's latency then shows.

Worker 0 is the writer: it holds the collection itself, as a one-process service does,
takes every write, and logs it for the followers (`write_log`); a follower sends the writes
it receives to the writer over a Unix socket and searches its own copy, brought up to the
log before each request (`followers`). A worker that ends takes the service down with it:
run it under a process manager that restarts it.

    python -m shopsearch.service.workers SPEC   # one worker; SPEC is JSON, from serve_workers
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import uvicorn

from shopsearch.errors import CollectionError, ShopsearchError, UsageError
from shopsearch.service.metrics import MULTIPROCESS
from shopsearch.store.connection import Connection

READY = b"R"
READY_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 40.0  # the workers' graceful shutdown is 30 s
WRITER_SOCKET = "writer.sock"
LOG_DIR = "log"


def serve_workers(
    connection: Connection,
    workers: int,
    *,
    host: str,
    port: int,
    model: Path | None,
    precision: str,
    threads: int | None,
    search_threads: int | None,
    api_key: str | None,
) -> None:
    """Serve `connection`'s Edge collection from `workers` processes on host:port until
    SIGINT or SIGTERM. Each worker's encoder has its share of the cores (`threads`, by
    default) and runs one search at a time (`search_threads`, by default): several threads
    in each worker would only take turns, and spin, on the cores the others need."""
    from shopsearch.service.write_log import Followers, WriteLog

    if not hasattr(socket, "send_fds"):  # Windows
        raise UsageError("--workers needs Linux or macOS: run one process (drop --workers)")
    if connection.url:
        raise UsageError(
            "--workers needs an embedded collection: over a Qdrant server, run one service "
            "per replica behind a load balancer (docs/deploy.md)"
        )
    source = connection.edge_dir()
    if not source.is_dir():
        raise CollectionError(
            f"no collection {connection.collection!r} at {source}: ingest a catalog first "
            f"(shopsearch ingest CATALOG -c {connection.collection})"
        )
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    search_threads = search_threads or 1
    _remove_ended_runs(source)
    run_dir = source.parent / f".{source.name}.serve-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    listener: socket.socket | None = None
    processes: list[subprocess.Popen] = []
    channels: list[socket.socket] = []
    try:
        listener = socket.create_server((host, port), backlog=2048)  # a port in use stops here
        (run_dir / LOG_DIR).mkdir()
        (run_dir / "metrics").mkdir()
        log = WriteLog(run_dir / LOG_DIR)
        log.start()
        Followers(log, source, run_dir, workers - 1).copy(0)
        holder = f"shopsearch serve at http://{host}:{port} ({workers} workers)"
        for index in range(workers):
            ours, theirs = socket.socketpair()
            spec = {
                "index": index, "workers": workers, "fd": theirs.fileno(),
                "collection": connection.collection, "path": str(source.parent),
                "run_dir": str(run_dir), "model": None if model is None else str(model),
                "precision": precision, "threads": threads,
                "search_threads": search_threads, "holder": holder,
            }  # fmt: skip
            env = {
                **os.environ,
                "SHOPSEARCH_WORKER_API_KEY": api_key or "",
                MULTIPROCESS: str(run_dir / "metrics"),  # the workers count together
            }
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "shopsearch.service.workers", json.dumps(spec)],
                    pass_fds=[theirs.fileno()],
                    env=env,
                )
            )
            theirs.close()
            channels.append(ours)
            if index == 0:  # the followers' copies are made; the writer holds the original
                _wait_ready(processes[0], ours)
        for process, channel in zip(processes[1:], channels[1:], strict=True):
            _wait_ready(process, channel)
        _hand_out(listener, processes, channels)
    finally:
        if listener is not None:
            listener.close()
        _stop(processes)
        for channel in channels:
            channel.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def _remove_ended_runs(source: Path) -> None:
    """The copies and logs of services of this collection that were killed."""
    for run_dir in source.parent.glob(f".{source.name}.serve-*"):
        pid = run_dir.name.rsplit("-", 1)[1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(run_dir, ignore_errors=True)
        except PermissionError:  # alive, another user's
            continue


def _wait_ready(process: subprocess.Popen, channel: socket.socket) -> None:
    channel.settimeout(1.0)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CollectionError(
                f"a worker of the service exited ({process.returncode}) while starting: its "
                "message is above"
            )
        with contextlib.suppress(TimeoutError):
            if channel.recv(1) == READY:
                return
    raise CollectionError(f"a worker of the service was not ready in {READY_TIMEOUT_S:.0f} s")


def _hand_out(
    listener: socket.socket, processes: list[subprocess.Popen], channels: list[socket.socket]
) -> None:
    """Accept connections and send each to the next worker, until SIGINT or SIGTERM or a
    worker ends."""
    stopping = threading.Event()

    def stop(*_: Any) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    listener.settimeout(0.5)
    turn = 0
    try:
        while not stopping.is_set():
            ended = [p for p in processes if p.poll() is not None]
            if ended:
                raise CollectionError(
                    f"a worker of the service (pid {ended[0].pid}) ended "
                    f"({ended[0].returncode}): the service stops"
                )
            try:
                conn, _ = listener.accept()
            except (TimeoutError, InterruptedError):
                continue
            with conn, contextlib.suppress(OSError):  # a worker gone: the check above says so
                socket.send_fds(channels[turn % len(channels)], [b"c"], [conn.fileno()])
            turn += 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to every worker (each lets its requests in flight finish), then SIGKILL."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- a worker -------------------------------------------------------------------------


class WriterClient:
    """A follower's way to the writer: HTTP over the writer's Unix socket."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def send(self, method: str, url: str, body: Any, headers: dict[str, str]) -> tuple[int, Any]:
        connection = _UnixHTTPConnection(self.path)
        try:
            payload = None if body is None else json.dumps(body).encode()
            sent = {**headers, "Content-Type": "application/json"} if payload else headers
            connection.request(method, url, body=payload, headers=sent)
            answer = connection.getresponse()
            return answer.status, json.loads(answer.read() or b"null")
        finally:
            connection.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=300)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(str(self.unix_path))


def worker_main(spec: dict[str, Any]) -> None:
    from shopsearch.encoders.onnx_encoder import OnnxEncoder
    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.followers import FollowerCollection
    from shopsearch.service.live import LiveCollection
    from shopsearch.service.write_log import Followers, WriteLog, copy_directory

    _die_with_supervisor()
    channel = socket.socket(fileno=spec["fd"])
    index, run_dir = int(spec["index"]), Path(spec["run_dir"])
    log = WriteLog(run_dir / LOG_DIR, reader=index or None, readers=int(spec["workers"]) - 1)
    connection = Connection(collection=spec["collection"], path=Path(spec["path"]))
    model = None if spec["model"] is None else Path(spec["model"])
    encoder = BatchingEncoder(
        OnnxEncoder.load(model, precision=spec["precision"], threads=spec["threads"])
    )
    sockets: list[socket.socket] = []
    writer: WriterClient | None = None
    if index == 0:
        followers = Followers(log, connection.edge_dir(), run_dir, int(spec["workers"]) - 1)
        live = LiveCollection(connection.open, encoder, spec["holder"], followers)
        path = run_dir / WRITER_SOCKET
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(str(path))
        unix.listen(128)
        sockets.append(unix)
    else:

        def open_copy(generation: int):  # type: ignore[no-untyped-def]
            copy = copy_directory(run_dir, generation, index)
            return Connection(collection=spec["collection"], path=copy).open()

        def remove_copy(generation: int) -> None:
            shutil.rmtree(copy_directory(run_dir, generation, index), ignore_errors=True)

        live = FollowerCollection(open_copy, log, encoder, spec["holder"], remove_copy)
        writer = WriterClient(run_dir / WRITER_SOCKET)
    app = create_app(
        live,
        api_key=os.environ.get("SHOPSEARCH_WORKER_API_KEY") or None,
        search_threads=int(spec["search_threads"]),
        writer=writer,
        worker=index,
    )
    # What startup made lives as long as the worker: kept out of the collector's passes.
    gc.collect()
    gc.freeze()
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=30
    )
    _HandedConnections(config, channel).run(sockets=sockets)


class _HandedConnections(uvicorn.Server):
    """uvicorn serving the connections the supervisor hands this worker, besides `sockets`
    (the writer's Unix socket): each is adopted with uvicorn's own HTTP protocol, as a
    connection its listener accepted would be."""

    def __init__(self, config: uvicorn.Config, channel: socket.socket) -> None:
        super().__init__(config)
        self.channel = channel

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        loop = asyncio.get_running_loop()
        protocol = partial(
            self.config.http_protocol_class,
            config=self.config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )

        adopting: set[asyncio.Task] = set()

        def adopt(conn: socket.socket) -> None:
            conn.setblocking(False)
            task = loop.create_task(loop.connect_accepted_socket(protocol, conn))
            adopting.add(task)
            task.add_done_callback(adopting.discard)

        def receive() -> None:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(self.channel, 1, 4)
                except OSError:
                    return
                if not message:  # the supervisor is gone
                    loop.call_soon_threadsafe(setattr, self, "should_exit", True)
                    return
                for fd in fds:
                    loop.call_soon_threadsafe(adopt, socket.socket(fileno=fd))

        threading.Thread(target=receive, name="shopsearch-handed", daemon=True).start()
        self.channel.sendall(READY)


def _die_with_supervisor() -> None:
    """SIGTERM when the supervisor dies, even by SIGKILL: requests in flight finish and the
    writer closes (flushes) its collection."""
    if sys.platform != "linux":
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def main() -> int:
    """A worker's process: its errors are printed as the CLI prints them, for the
    supervisor's output, without a traceback."""
    try:
        worker_main(json.loads(sys.argv[1]))
    except ShopsearchError as exc:
        sys.stderr.write(f"error: worker: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
