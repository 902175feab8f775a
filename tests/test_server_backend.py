"""Server-only behaviour: an unreachable server, a refused API key, aliases, and a
collection's placement over a cluster (the compose files: tests/test_deploy.py; retries:
tests/test_server_retries.py)."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shopsearch.errors import ServerError, UsageError
from shopsearch.store.backend import SearchMode, SearchRequest, SparseVec
from shopsearch.store.documents import read_meta
from shopsearch.store.server import ServerBackend


def test_an_unreachable_server_is_an_error_naming_its_url(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    backend = ServerBackend.connect(url, "products")
    with pytest.raises(ServerError, match=f"cannot reach Qdrant at {re.escape(url)} "):
        read_meta(backend)
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
        read_meta(backend)
    with pytest.raises(ServerError, match="HTTP 403"):
        backend.count()


def test_the_name_is_an_alias_switched_atomically_by_a_rebuild(small_catalog, encoder, tmp_path):
    """A server collection's name is an alias of a versioned collection; `--recreate` builds
    a new version and switches the alias to it, then deletes the old version."""
    from qdrant_client import QdrantClient
    from search_helpers import ingest

    from shopsearch.ingest.pipeline import ingest_catalog
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.store.documents import read_meta
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    backend = ServerBackend(client, "shop", ":memory:")
    ingest(small_catalog, backend, encoder, tmp_path)
    first = backend.version()
    assert first is not None and first.startswith("shop-")
    assert [(a.alias_name, a.collection_name) for a in client.get_aliases().aliases] == [
        ("shop", first)
    ]
    assert not backend.rebuild_under_way()
    count = backend.count()
    ingest_catalog(
        CatalogReader(small_catalog), backend, encoder, rejects_path=tmp_path / "r", recreate=True
    )
    second = backend.version()
    assert second != first
    assert [c.name for c in client.get_collections().collections] == [second]
    assert backend.count() == count and read_meta(backend) is not None


def test_a_collection_from_before_aliases_is_searched_and_then_migrated(
    small_catalog, encoder, tmp_path
):
    from qdrant_client import QdrantClient, models

    from shopsearch.ingest.pipeline import ingest_catalog
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    reader = CatalogReader(small_catalog)
    ingest_catalog(reader, ServerBackend(client, "shop", ":memory:"), encoder,
                   rejects_path=tmp_path / "r")  # fmt: skip
    # The same collection as a real collection of that name, as before aliases.
    version = ServerBackend(client, "shop", ":memory:").version()
    client.update_collection_aliases(
        change_aliases_operations=[
            models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="shop"))
        ]
    )
    legacy = ServerBackend(client, version, ":memory:")
    assert legacy.version() == version and legacy.count() == 120
    ingest_catalog(reader, legacy, encoder, rejects_path=tmp_path / "r", recreate=True)
    assert legacy.version() != version and legacy.version().startswith(f"{version}-")
    assert legacy.count() == 120


def test_a_collection_is_created_with_its_placement_and_info_shows_it(
    small_catalog, encoder, tmp_path
):
    """Shards, replicas and write consistency go to create_collection and into the
    collection's metadata (QdrantClient(':memory:') keeps no shards, so `placement` reads the
    record), through `--recreate` too; `info` (collection_document) shows them."""
    from qdrant_client import QdrantClient
    from search_helpers import ingest

    from shopsearch.ingest.pipeline import ingest_catalog
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.search.product_search import ProductSearch
    from shopsearch.search.responses import collection_document
    from shopsearch.store.backend import IndexSettings
    from shopsearch.store.server import PLACEMENT_KEY

    client = QdrantClient(":memory:")
    placed = IndexSettings(shard_number=6, replication_factor=2, write_consistency_factor=2)
    backend = ServerBackend(client, "shop", ":memory:", placed)
    ingest(small_catalog, backend, encoder, tmp_path)
    wanted = {"shard_number": 6, "replication_factor": 2, "write_consistency_factor": 2}
    assert backend.placement() == wanted
    assert client.get_collection(backend.version()).config.metadata[PLACEMENT_KEY] == wanted
    assert collection_document(ProductSearch(backend, None))["placement"] == wanted

    rebuilt = ServerBackend(client, "shop", ":memory:", IndexSettings(shard_number=2))
    reader = CatalogReader(small_catalog)
    ingest_catalog(reader, rebuilt, encoder, rejects_path=tmp_path / "r", recreate=True)
    assert rebuilt.placement() == {
        "shard_number": 2,
        "replication_factor": None,  # the server's default
        "write_consistency_factor": None,
    }
    assert ServerBackend(client, "none", ":memory:").placement() is None


def test_placement_flags_win_over_the_environment_and_need_a_server(monkeypatch):
    from shopsearch.store.connection import Connection

    server = Connection(url="http://qdrant:6333")
    monkeypatch.setenv("SHOPSEARCH_SHARDS", "4")
    monkeypatch.setenv("SHOPSEARCH_REPLICAS", "3")
    settings = server.index_settings(shards=2)
    assert (settings.shard_number, settings.replication_factor) == (2, 3)
    assert settings.write_consistency_factor is None
    monkeypatch.setenv("SHOPSEARCH_WRITE_CONSISTENCY", "4")
    with pytest.raises(UsageError, match="SHOPSEARCH_WRITE_CONSISTENCY 4 is more than "
                       "SHOPSEARCH_REPLICAS 3"):  # fmt: skip
        server.index_settings()
    monkeypatch.setenv("SHOPSEARCH_WRITE_CONSISTENCY", "two")
    with pytest.raises(UsageError, match="bad SHOPSEARCH_WRITE_CONSISTENCY 'two'"):
        server.index_settings()
    for name in ("SHOPSEARCH_SHARDS", "SHOPSEARCH_REPLICAS", "SHOPSEARCH_WRITE_CONSISTENCY"):
        monkeypatch.delenv(name)
    assert server.index_settings() == Connection().index_settings()  # nothing chosen
    with pytest.raises(UsageError, match=r"^--replicas needs a Qdrant server"):
        Connection().index_settings(replicas=2)
    monkeypatch.setenv("SHOPSEARCH_SHARDS", "2")
    with pytest.raises(UsageError, match=r"^SHOPSEARCH_SHARDS needs .*unset SHOPSEARCH_SHARDS"):
        Connection().index_settings()


def test_ingest_refuses_placement_flags_for_an_embedded_collection(tmp_path):
    """Exit 2 naming the flag, before the model loads or anything is written."""
    import os
    import subprocess
    import sys

    from conftest import DEMO

    env = {k: v for k, v in os.environ.items() if not k.startswith(("QDRANT_", "SHOPSEARCH_S"))}
    proc = subprocess.run(
        [sys.executable, "-m", "shopsearch", "ingest", str(DEMO), "--path", str(tmp_path),
         "--shards", "3"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("error: --shards needs a Qdrant server (--qdrant-url or ")
    assert "Traceback" not in proc.stderr and not any(tmp_path.iterdir())
