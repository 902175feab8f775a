"""Damaged files and a server answering garbage, for the fault suite (tests/faults/) and its
soak mode (benchmarks/faults.py).

- Model files: a copy of an export with one file truncated, zeroed, overwritten, emptied or
  deleted, or its manifest replaced by JSON of another shape. Loading the encoder must raise
  a `ShopsearchError` that the CLI prints as a message.
- Collection files: a copy of an Edge collection with one of its files damaged the same way
  (metadata, vocabulary, the shard's config, WAL and segment files). `shopsearch query` and
  `info` in a child process (a damaged mmap can kill a process outright) must answer, or fail
  with a message and exit 1; never a traceback or a death by signal.
- A local HTTP server that answers every request with one kind of garbage: every operation of
  a `ServerBackend` must raise a `ShopsearchError`.
"""

from __future__ import annotations

import http.server
import json
import os
import random
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

FILE_DAMAGE = ("truncate", "zero", "garbage", "empty", "delete", "flip")
JSON_DAMAGE = ("garbage json", "another shape", "deep nesting", "not utf-8")
MANIFEST_SHAPES: list[Any] = [
    [],
    "manifest",
    {"format_version": "1"},
    {"format_version": 10**6},
    {"dimension": "384"},
    {"max_seq_length": "long"},
    {"max_seq_length": -1},
    {"pooling": ["mean"]},
    {"pooling": "median"},
    {"normalize": "yes"},
    {"files": {"fp32": 5}},
    {"files": ["onnx/model.onnx"]},
    {"sha256": None},
    {"tokenizer": 7},
    {"tokenizer": "../../etc/passwd"},
    {"query_prefix": 3},
    {"model_name": None},
    {"dimension": 0},
    {"files": {"fp32": "onnx/model.onnx", "int8": "/etc/hostname"}},
]


def damage(path: Path, kind: str, rng: random.Random) -> None:
    """Damage one file in place."""
    size = path.stat().st_size if path.exists() else 0
    if kind == "delete":
        path.unlink()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncate":
        with path.open("r+b") as handle:
            handle.truncate(rng.randrange(size) if size else 0)
    elif kind == "zero":
        start = rng.randrange(size) if size else 0
        with path.open("r+b") as handle:
            handle.seek(start)
            handle.write(b"\0" * min(4096, size - start))
    elif kind == "garbage":
        start = rng.randrange(size) if size else 0
        with path.open("r+b") as handle:
            handle.seek(start)
            handle.write(rng.randbytes(min(512, max(size - start, 1))))
    elif kind == "flip":
        if size:
            at = rng.randrange(size)
            data = bytearray(path.read_bytes())
            data[at] ^= 0xFF
            path.write_bytes(bytes(data))
    elif kind == "garbage json":
        path.write_text(rng.choice(['{"a": ', "[1, 2", "nul", "{'single': 1}", ""]))
    elif kind == "another shape":
        path.write_text(json.dumps(rng.choice([[], 42, "x", None, {"words": 5}, {"bm25": []}])))
    elif kind == "deep nesting":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif kind == "not utf-8":
        path.write_bytes(b'{"a": "caf\xe9"}')
    else:
        raise ValueError(kind)


# -- models ------------------------------------------------------------------------------


def model_copy(source: Path, target: Path) -> Path:
    """A copy of an export whose files may be damaged: small files copied, the large ONNX
    files copied only when damaged (`own`)."""
    target.mkdir(parents=True)
    for item in source.rglob("*"):
        dest = target / item.relative_to(source)
        if item.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
        elif item.suffix == ".onnx":
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(item, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, dest)
    return target


def own(path: Path) -> None:
    """Replace a symlinked file of `model_copy` by a copy of its own."""
    if path.is_symlink():
        real = path.resolve()
        path.unlink()
        shutil.copy2(real, path)


def model_cases(rng: random.Random, count: int) -> list[tuple[str, str, Any]]:
    """(file, damage, manifest shape) for `count` damaged exports."""
    cases: list[tuple[str, str, Any]] = []
    for _ in range(count):
        target = rng.choice(["manifest", "manifest", "tokenizer", "int8", "int8", "fp32"])
        if target == "manifest":
            if rng.random() < 0.6:
                cases.append((target, "another shape", rng.choice(MANIFEST_SHAPES)))
            else:
                cases.append((target, rng.choice([*FILE_DAMAGE, *JSON_DAMAGE]), None))
        elif target == "fp32":  # hashing 90 MB: kept rare
            cases.append((target, rng.choice(["truncate", "delete", "empty"]), None))
        else:
            cases.append((target, rng.choice(FILE_DAMAGE), None))
    return cases


def damage_model(model: Path, target: str, kind: str, shape: Any, rng: random.Random) -> str:
    """Damage `target` of the export copy at `model`; returns the precision that reads it."""
    manifest_path = model / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if target == "manifest":
        if shape is not None:
            manifest_path.write_text(
                json.dumps({**manifest, **shape} if isinstance(shape, dict) else shape)
            )
        else:
            damage(manifest_path, kind, rng)
        return rng.choice(["int8", "fp32"])
    path = model / (manifest["tokenizer"] if target == "tokenizer" else manifest["files"][target])
    own(path)
    damage(path, kind, rng)
    return "int8" if target == "tokenizer" else target


# -- collections -------------------------------------------------------------------------


def collection_cases(collection: Path, rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(file relative to the collection directory, damage) for `count` damaged copies."""
    files = sorted(str(p.relative_to(collection)) for p in collection.rglob("*") if p.is_file())
    cases = []
    for _ in range(count):
        name = rng.choice(files)
        kinds = FILE_DAMAGE + JSON_DAMAGE if name.endswith(".json") else FILE_DAMAGE
        cases.append((name, rng.choice(kinds)))
    return cases


def damaged_collection(
    collection: Path, target_root: Path, name: str, kind: str, rng: random.Random
) -> Path:
    """A copy of the collection directory under `target_root` with `name` damaged; returns
    the data directory holding it."""
    data = target_root / "data"
    shutil.copytree(collection, data / collection.name)
    damage(data / collection.name / name, kind, rng)
    return data


def cli(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shopsearch", *args],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, **env},
        timeout=timeout,
    )


def judge_process(proc: subprocess.CompletedProcess, codes: set[int]) -> str | None:
    """Why a child's end is a failure: a signal, a traceback, an exit code not in `codes`, or
    a failure that does not end with a message; None when it is none of these."""
    if proc.returncode < 0:
        return f"killed by signal {-proc.returncode}: {proc.stderr[-500:]}"
    # Edge's panics print a line of their own (and a backtrace under RUST_BACKTRACE) before
    # Python sees them: what counts is that a message follows, not a Python traceback.
    if "Traceback" in proc.stderr:
        return f"a traceback:\n{proc.stderr[-1500:]}"
    if proc.returncode not in codes:
        return f"exit {proc.returncode}: {proc.stderr[-500:]}"
    if proc.returncode:
        lines = proc.stderr.strip().splitlines()
        if not lines or not lines[-1].startswith("error: "):
            return f"exit {proc.returncode} without a message: {proc.stderr[-500:]!r}"
    return None


# -- a server answering garbage ----------------------------------------------------------

GARBAGE: dict[str, tuple[int, str, bytes]] = {
    "html": (200, "text/html", b"<html><body>It works!</body></html>"),
    "empty object": (200, "application/json", b"{}"),
    "wrong result": (200, "application/json", b'{"result": 42, "status": "ok"}'),
    "null result": (200, "application/json", b'{"result": null, "status": "ok"}'),
    "string result": (200, "application/json", b'{"result": "x", "status": "ok"}'),
    "list result": (200, "application/json", b'{"result": [1, "a", null], "status": "ok"}'),
    "truncated json": (200, "application/json", b'{"result": {"collections": ['),
    "deep nesting": (200, "application/json", b"[" * 50_000 + b"]" * 50_000),
    "binary": (200, "application/octet-stream", bytes(range(256)) * 4),
    "not utf-8": (200, "application/json", b'{"result": "caf\xe9"}'),
    "huge number": (200, "application/json", b'{"result": {"count": 1e999}, "status": "ok"}'),
    "500 html": (500, "text/html", b"<html>Internal Server Error</html>"),
    "404 json": (404, "application/json", b'{"status": {"error": "Not found"}}'),
    "401": (401, "text/plain", b"Unauthorized"),
    "503 empty": (503, "text/plain", b""),
    "short body": (200, "application/json", b'{"result":'),  # sent with a longer length
    "hang up": (0, "", b""),  # the connection closed without an answer
}


def _handler(kind: str) -> type[http.server.BaseHTTPRequestHandler]:
    status, content_type, body = GARBAGE[kind]

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            if kind == "hang up":
                self.close_connection = True
                return
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            declared = len(body) + (100 if kind == "short body" else 0)
            self.send_header("Content-Length", str(declared))
            self.end_headers()
            self.wfile.write(body)
            if kind == "short body":
                self.close_connection = True

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def garbage_server(kind: str) -> Iterator[str]:
    """The URL of a server on a free local port answering every request with `kind`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(kind))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def server_operations(url: str, encoder: Any) -> list[str]:
    """Every `ServerBackend` operation against `url`; each that fails otherwise than with a
    `ShopsearchError` naming the URL, described."""
    import numpy as np

    from shopsearch.errors import ShopsearchError
    from shopsearch.store.backend import ProductPoint, SearchMode, SearchRequest, SparseVec
    from shopsearch.store.schema import CollectionMeta, Document, EncoderInfo
    from shopsearch.store.server import ServerBackend

    meta = CollectionMeta(EncoderInfo.of(encoder), {"k": 0.3, "b": 0.75, "avg_len": 8.0}, "{title}")
    vector = np.ones(encoder.dimension, dtype=np.float32) / np.sqrt(encoder.dimension)
    point = ProductPoint("00000000-0000-0000-0000-000000000001", vector, SparseVec([1], [1.0]), {})
    request = SearchRequest(
        dense=vector, sparse=SparseVec([1], [1.0]), mode=SearchMode.HYBRID, limit=5
    )
    operations: dict[str, Any] = {
        "read_document": lambda b: b.read_document(Document.META),
        "write_document": lambda b: b.write_document(Document.VOCABULARY, {"words": {}}),
        "count": lambda b: b.count(),
        "facet": lambda b: b.facet("brand", [], 5),
        "value_range": lambda b: b.value_range("price", []),
        "payloads": lambda b: b.payloads([point.id]),
        "point_ids": lambda b: list(b.point_ids()),
        "search_batch": lambda b: b.search_batch([request]),
        "upsert": lambda b: b.upsert([point]),
        "delete": lambda b: b.delete([point.id]),
        "create": lambda b: b.create(meta),
        "drop": lambda b: b.drop(),
        "version": lambda b: b.version(),
    }
    problems = []
    for name, operation in operations.items():
        backend = ServerBackend.connect(url, "products")
        try:
            operation(backend)
        except ShopsearchError as exc:
            if url not in str(exc):
                problems.append(f"{name}: the message does not name {url}: {exc}")
        except Exception as exc:
            problems.append(f"{name}: {type(exc).__name__}: {str(exc)[:300]}")
        finally:
            try:
                backend.close()
            except Exception as exc:
                problems.append(f"close after {name}: {type(exc).__name__}: {exc}")
    return problems


# -- the checks --------------------------------------------------------------------------


def check_models(exported: Path, work: Path, rng: random.Random, count: int) -> list[str]:
    """Load and use `count` damaged copies of the export at `exported` (in this process and
    through `shopsearch query`): each failure that is not a `ShopsearchError` and a message,
    and each damage that went unnoticed."""
    from fault_cli import run_main

    from shopsearch.encoders.onnx_encoder import OnnxEncoder
    from shopsearch.errors import ShopsearchError

    failures = []
    for number, (target, kind, shape) in enumerate(model_cases(rng, count)):
        model = model_copy(exported, work / f"model{number}")
        precision = damage_model(model, target, kind, shape, rng)
        case = f"{target} {kind} {json.dumps(shape)[:60]} ({precision})"
        try:
            OnnxEncoder.load(model, precision=precision).encode_queries(["shoes"])
        except ShopsearchError:
            pass
        except Exception as exc:
            failures.append(f"{case}: {type(exc).__name__}: {str(exc)[:300]}")
        else:
            failures.append(f"{case}: loaded and encoded without a word")
        argv = ["query", "shoes", "--model", str(model), "--precision", precision,
                "--path", str(work / "none")]  # fmt: skip
        outcome = run_main(argv)
        if outcome.error or "Traceback" in outcome.stderr:
            failures.append(
                f"{case}: `shopsearch query`: {(outcome.error or outcome.stderr)[-800:]}"
            )
        shutil.rmtree(model)
    return failures


def check_collections(
    collection: Path, env: dict[str, str], work: Path, rng: random.Random, count: int
) -> list[str]:
    """`shopsearch query` or `info` on `count` damaged copies of the Edge collection at
    `collection`, each in a child process: each failure other than a message and exit 1."""
    failures = []
    for number, (name, kind) in enumerate(collection_cases(collection, rng, count)):
        data = damaged_collection(collection, work / f"case{number}", name, kind, rng)
        where = ["-c", collection.name, "--path", str(data)]
        command = ["query", "shoes", "--mode", "bm25", "--json"] if number % 3 else ["info"]
        proc = cli([*command, *where], env)
        problem = judge_process(proc, {0, 1})
        if problem is None and proc.returncode == 0 and command[0] == "query":
            try:
                json.loads(proc.stdout)
            except ValueError:
                problem = f"exit 0 with output that is not JSON: {proc.stdout[:200]!r}"
        if problem:
            failures.append(f"{name} {kind}, `{command[0]}`: {problem}")
        shutil.rmtree(work / f"case{number}")
    return failures


def check_server(kind: str, encoder: Any) -> list[str]:
    """Every backend operation and three commands against a server answering `kind`."""
    from fault_cli import run_main

    with garbage_server(kind) as url:
        problems = server_operations(url, encoder)
        for argv in (["info"], ["query", "shoes", "--mode", "bm25"], ["facets", "brand"]):
            outcome = run_main([*argv, "--qdrant-url", url])
            if outcome.error or outcome.code != 1 or url not in outcome.stderr:
                said = outcome.error or outcome.stderr
                problems.append(f"`{argv[0]}`: exit {outcome.code}: {said[-600:]}")
    return problems
