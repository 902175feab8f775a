"""Server-only behaviour: the shipped docker-compose file, an unreachable server, and a
refused API key."""

import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from shopsearch.errors import ServerError, UsageError
from shopsearch.store.backend import SearchMode, SearchRequest, SparseVec
from shopsearch.store.documents import read_meta
from shopsearch.store.server import ServerBackend, supports_weighted_rrf


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
