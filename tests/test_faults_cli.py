"""Faults and hostile input through the real CLI: a message and an exit code, never a
traceback (2 for bad input, 1 for a fault, 130 for Ctrl-C).

Each case runs `python -m shopsearch` in a separate process, on a real Edge collection built
with the exported model, or against a real HTTP server on 127.0.0.1 that answers garbage.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shopsearch.errors import CollectionError, FilterError, ServerError
from shopsearch.search.filters import parse_filter
from shopsearch.store.bm25 import Bm25Settings

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"


def run_cli(*args: str | bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shopsearch", *args],
        capture_output=True,
        text=True,
        errors="replace",
        env={**os.environ, **(env or {})},
    )


def assert_message(proc: subprocess.CompletedProcess, code: int, *parts: str) -> None:
    """Exit `code`, no traceback, and stderr ending in one `error: ...` line holding `parts`
    (after a progress bar's last state, where the command drew one)."""
    detail = f"exit {proc.returncode}\nstdout: {proc.stdout[-500:]}\nstderr: {proc.stderr[-2000:]}"
    assert proc.returncode == code, detail
    assert "Traceback" not in proc.stderr, detail
    message = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert message.startswith("error: "), detail
    for part in parts:
        assert part in message, f"{part!r} not in the message\n{detail}"


@pytest.fixture(scope="module")
def demo(exported_model: Path, tmp_path_factory: pytest.TempPathFactory):
    """60 demo products ingested through the CLI into an Edge directory; the tests here only
    read it (each one that alters a collection builds its own)."""
    import pyarrow.parquet as pq

    tmp = tmp_path_factory.mktemp("faults")
    catalog = tmp / "demo.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 60), catalog)
    env = {
        "SHOPSEARCH_MODEL_DIR": str(exported_model),
        "SHOPSEARCH_DATA_DIR": str(tmp / "data"),
        "XDG_CACHE_HOME": str(tmp / "xdg"),
    }
    proc = run_cli("ingest", str(catalog), "--json", "--rejects", str(tmp / "rej.jsonl"), env=env)
    assert proc.returncode == 0, proc.stderr
    return env, tmp, catalog


# -- a server that answers 200 with something other than Qdrant's JSON --------------------


class _Garbage(http.server.BaseHTTPRequestHandler):
    body = b""
    content_type = "text/html"

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(200)
        self.send_header("Content-Type", self.content_type)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: object) -> None:
        pass


GARBAGE = {
    "html": (b"<html><body>It works!</body></html>", "text/html", "not JSON: '<html>"),
    "empty object": (b"{}", "application/json", "without a result"),
    "wrong result": (b'{"result": 42}', "application/json", "JSON of another shape"),
    "wrong nesting": (b'{"result": {"exists": true}}', "application/json", "another shape"),
}


@pytest.fixture(params=list(GARBAGE))
def garbage_server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """The URL of a real HTTP server on a free local port that answers every request with
    200 and one kind of garbage, and what the message should say it got."""
    body, content_type, got = GARBAGE[request.param]
    handler = type("Handler", (_Garbage,), {"body": body, "content_type": content_type})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", got
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_answering_garbage_is_named_not_a_traceback(garbage_server, demo) -> None:
    url, got = garbage_server
    env, tmp, catalog = demo
    for args in (("info",), ("query", "shoes", "--mode", "bm25"), ("facets", "brand")):
        proc = run_cli(*args, "--qdrant-url", url, env=env)
        assert_message(proc, 1, url, "not answering as Qdrant does", got, "--qdrant-url")
    proc = run_cli(
        "ingest", str(catalog), "--qdrant-url", url, "--rejects", str(tmp / "r.jsonl"), env=env
    )
    assert_message(proc, 1, url, got)


def test_the_server_backend_raises_server_error_on_garbage(garbage_server) -> None:
    from shopsearch.store.server import ServerBackend

    url, got = garbage_server
    backend = ServerBackend.connect(url, "products")
    try:
        with pytest.raises(ServerError, match=re.escape(url)) as raised:
            backend.count()
        assert got in str(raised.value)
    finally:
        backend.close()


# -- bad input --------------------------------------------------------------------------


def test_a_query_of_invalid_utf8_is_refused(demo) -> None:
    env, _, _ = demo
    for mode in ("hybrid", "bm25"):
        proc = run_cli("query", b"shoes \xff", "--mode", mode, "--json", env=env)
        assert_message(proc, 2, "the query is not valid UTF-8")
    proc = run_cli("query", "shoes", "--filter", b"brand=\xff", "--json", env=env)
    assert_message(proc, 2, "not valid UTF-8", "--filter")


def test_an_attribute_key_qdrant_cannot_quote_is_a_filter_error(demo) -> None:
    env, _, _ = demo
    for expression in ("attributes.\\=x", "attributes.a\\b=x", "attributes.\\ in (x, y)"):
        with pytest.raises(FilterError, match="cannot filter a key"):
            parse_filter(expression)
        proc = run_cli("query", "shoes", "--mode", "bm25", "--filter", expression, env=env)
        assert_message(proc, 2, "bad --filter", "cannot filter a key")
    assert parse_filter("attributes.'Size (UK)'=9").field == 'attributes."Size (UK)"'


def _batch(tmp: Path) -> Path:
    queries = tmp / "queries.jsonl"
    queries.write_text('{"query_id": "q1", "query": "shoes"}\n', encoding="utf-8")
    return queries


def test_query_out_is_checked_before_searching(demo, tmp_path: Path) -> None:
    env, _, _ = demo
    batch = _batch(tmp_path)
    for out, says in (
        (tmp_path / "missing" / "run.jsonl", "does not exist"),
        (tmp_path, "is a directory"),
    ):
        proc = run_cli("query", "--batch", str(batch), "--mode", "bm25", "--out", str(out), env=env)
        assert_message(proc, 2, "--out", says)
    existing = tmp_path / "run.jsonl"
    existing.write_text("old\n")
    proc = run_cli(
        "query", "--batch", str(batch), "--mode", "bm25", "--out", str(existing), env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(existing.read_text().splitlines()[0])["query_id"] == "q1"


def test_an_output_that_fails_while_written_is_a_message(demo, tmp_path: Path) -> None:
    """A full disk under --out (Linux's /dev/full answers every write with ENOSPC)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    env, _, _ = demo
    batch = _batch(tmp_path)
    proc = run_cli("query", "--batch", str(batch), "--mode", "bm25", "--out", "/dev/full", env=env)
    assert_message(proc, 1, "no space left on device")


def test_eval_outputs_are_checked_before_evaluating(demo, tmp_path: Path) -> None:
    env, _, _ = demo
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text(
        '{"query_id": "q1", "query": "shoes", "product_id": "p1", "relevance": 3}\n'
    )
    run = tmp_path / "run.jsonl"
    run.write_text('{"query_id": "q1", "results": [{"product_id": "p1", "score": 1.0}]}\n')
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    base = ("eval", "--judgments", str(judgments), "--run", str(run), "--resamples", "100")
    for extra, says in (
        (("--report", str(tmp_path / "missing" / "r.html")), "does not exist"),
        (("--report", str(tmp_path)), "is a directory"),
        (("--save-runs", str(a_file)), "is a file, not a directory"),
        (("--save-runs", str(a_file / "runs")), "is a file, not a directory"),
        (("--mode", "bm25", "--save-runs", str(a_file)), "is a file, not a directory"),
    ):
        proc = run_cli(*base, *extra, env=env)
        assert_message(proc, 2, extra[-2], says)
        assert proc.stdout == ""  # nothing was evaluated first
    proc = run_cli(*base, "--report", str(tmp_path / "r.html"), env=env)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r.html").is_file()


def test_train_out_is_checked_before_training(demo, tmp_path: Path) -> None:
    env, _, catalog = demo
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_text(
        '{"query_id": "q1", "query": "shoes", "product_id": "p1", "relevance": 3}\n'
    )
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    proc = run_cli(
        "train",
        "--judgments",
        str(judgments),
        "--products",
        str(catalog),
        "--out",
        str(a_file),
        env=env,
    )
    assert_message(proc, 2, "--out", "is a file, not a directory")


def test_a_non_numeric_bm25_setting_names_the_setting(demo, tmp_path: Path) -> None:
    env, _, catalog = demo
    data = Path(env["SHOPSEARCH_DATA_DIR"])
    rejects = str(tmp_path / "r.jsonl")
    proc = run_cli("ingest", str(catalog), "-c", "bm25bad", "--rejects", rejects, env=env)
    assert proc.returncode == 0, proc.stderr
    meta_file = data / "bm25bad" / "shopsearch.json"
    meta = json.loads(meta_file.read_text())
    meta["bm25"]["k"] = "abc"
    meta_file.write_text(json.dumps(meta))
    for args in (
        ("query", "shoes", "-c", "bm25bad", "--mode", "bm25"),
        ("query", "shoes", "-c", "bm25bad"),
        ("ingest", str(catalog), "-c", "bm25bad", "--rejects", rejects),
    ):
        proc = run_cli(*args, env=env)
        assert_message(proc, 1, "BM25 setting 'k' is 'abc', not a number", "shopsearch.json")


@pytest.mark.parametrize(
    ("stored", "says"),
    [
        ({"k": "abc"}, "'k' is 'abc', not a number"),
        ({"b": True}, "'b' is True, not a number"),
        ({"avg_len": None}, "'avg_len' is None, not a number"),
        ({"k": float("nan")}, "not a finite number"),
        ({"k": -1}, "'k' is -1, not a number >= 0"),
        ({"b": 2}, "not a number between 0 and 1"),
        ({"avg_len": 0}, "not a number > 0"),
        ({"language": 5}, "'language' is 5"),
    ],
)
def test_stored_bm25_settings_are_checked_when_read(stored: dict, says: str) -> None:
    with pytest.raises(CollectionError, match=re.escape(says)):
        Bm25Settings.from_dict({**Bm25Settings().to_dict(), **stored}, where="shopsearch.json")


def test_stored_bm25_settings_the_tokenizer_refuses_are_a_collection_error() -> None:
    settings = Bm25Settings.from_dict({"k": 1, "b": 0.5, "avg_len": 20, "language": "klingon"})
    with pytest.raises(CollectionError, match="klingon"):
        settings.model()
    assert Bm25Settings.from_dict({}) == Bm25Settings()


# -- Ctrl-C ------------------------------------------------------------------------------


def _interrupt_on_import(
    module: str, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess:
    """Run the CLI as its entry point does, sending SIGINT to itself the moment `module` is
    first imported: a Ctrl-C at an exact point of the start, without guessing its timing."""
    code = f"""
        import os, signal, sys

        class InterruptOnImport:
            def find_spec(self, name, path=None, target=None):
                if name == {module!r}:
                    sys.meta_path.remove(self)
                    os.kill(os.getpid(), signal.SIGINT)
                return None

        sys.meta_path.insert(0, InterruptOnImport())
        sys.argv = ["shopsearch", *{list(args)!r}]
        from shopsearch.cli.app import run

        run()
    """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    "module",
    [
        "typer",  # importing the CLI, before main runs
        "shopsearch.cli.commands_query",  # importing the command
        "shopsearch.store.edge",  # inside the command: opening the collection
    ],
)
def test_ctrl_c_while_starting_says_interrupted(module: str, demo) -> None:
    env, _, _ = demo
    proc = _interrupt_on_import(module, "info", env=env)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "interrupted\n", proc.stderr
    assert proc.stdout == ""


def test_ctrl_c_in_the_first_half_second_never_prints_a_traceback(demo) -> None:
    """Real SIGINTs at 0.05 to 0.5 s into `shopsearch query`. Before Python runs the CLI's
    first line (its own start-up, `site`), a Ctrl-C is Python's to report, out of reach."""
    env, _, _ = demo
    ours = 0
    for delay in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "shopsearch", "query", "casual shoes", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **env},
        )
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate()
        if proc.returncode == -signal.SIGINT or "init_import_site" in err:
            continue  # interrupted inside Python's own start-up
        if proc.returncode == 0:
            assert json.loads(out)["query"] == "casual shoes"
            continue
        assert "Traceback" not in err, err
        assert (proc.returncode, err) == (130, "interrupted\n")
        ours += 1
    assert ours >= 5


def test_ctrl_c_mid_ingest_says_what_was_kept_and_a_rerun_resumes(
    exported_model: Path, tmp_path: Path
) -> None:
    import pyarrow.parquet as pq

    catalog = tmp_path / "demo.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 300), catalog)
    env = {
        "SHOPSEARCH_MODEL_DIR": str(exported_model),
        "SHOPSEARCH_DATA_DIR": str(tmp_path / "data"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    args = ["ingest", str(catalog), "--batch-size", "16", "--rejects", str(tmp_path / "r.jsonl")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "shopsearch", *args, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    meta = tmp_path / "data" / "products" / "shopsearch.json"
    deadline = time.monotonic() + 120
    while not meta.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few batches of 16 in
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and out == ""
    said = re.fullmatch(
        r"interrupted: ([\d,]+) of 300 rows read and stored; run the same command again to "
        r"resume \(stored products that have not changed are not encoded again\)\n",
        err,
    )
    assert said, err
    stored = int(said[1].replace(",", ""))
    assert stored < 300
    again = run_cli(*args, "--json", env=env)
    assert again.returncode == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["read"] == report["upserted"] == report["points_in_collection"] == 300
    assert report["unchanged"] >= stored
