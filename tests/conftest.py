"""Shared fixtures. The real base model is exported once per session: it takes ~15 s."""

import os
import shutil
import socket
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"

# Requests to a Qdrant server that fail are tried once, not for the default 30 s: the tests
# aim servers that are down or answer garbage on purpose at the backend and the commands
# they start. tests/test_server_retries.py sets its own budgets.
os.environ.setdefault("SHOPSEARCH_RETRY_SECONDS", "0")


@pytest.fixture(scope="session")
def exported_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Directory of all-MiniLM-L6-v2 exported to ONNX (fp32 + int8) with its manifest.

    In the lean environment (the base install, no torch: `.ci/run`), `SHOPSEARCH_TEST_MODEL`
    names an export made by the full environment, copied so tests may alter their copy."""
    exported = os.environ.get("SHOPSEARCH_TEST_MODEL")
    out_dir = tmp_path_factory.mktemp("exported") / "all-MiniLM-L6-v2"
    if exported:
        shutil.copytree(exported, out_dir)
        return out_dir
    from shopsearch.training.export import export_model

    export_model(None, out_dir)
    return out_dir


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on (bound, then released): an unreachable server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def small_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 demo products: all women's footwear first, then a mix of the rest."""
    table = pq.read_table(DEMO)
    rows = table.to_pylist()
    shoes = [r for r in rows if r["category"] and "womens footwear" in r["category"]][:40]
    rest = [r for r in rows if r not in shoes][::11][:80]
    path = tmp_path_factory.mktemp("cat") / "small.parquet"
    pq.write_table(pa.Table.from_pylist(shoes + rest, schema=table.schema), path, row_group_size=32)
    return path


@pytest.fixture(scope="session")
def variant_catalog(small_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small catalog with its 40 women's shoes in six sizes each (one family per shoe,
    sharing the shoe's id as parent_id; size 6 of `s1` is `s1-6`): 320 products, 40
    families of 6 and 80 singles. The demo catalog has no parent_id column: the schema
    gains one, else `from_pylist` would drop the field and leave no families."""
    rows = pq.read_table(small_catalog).to_pylist()
    shoes, rest = rows[:40], rows[40:]
    variants = [
        {
            **shoe,
            "id": f"{shoe['id']}-{size}",
            "title": f"{shoe['title']}, size {size}",
            "size": size,
            "parent_id": shoe["id"],
        }
        for shoe in shoes
        for size in ("6", "7", "8", "9", "10", "11")
    ]
    schema = pq.read_schema(small_catalog).append(pa.field("parent_id", pa.string()))
    path = tmp_path_factory.mktemp("variants") / "variants.parquet"
    pq.write_table(pa.Table.from_pylist(variants + rest, schema=schema), path)
    return path


# -- collections the search tests share (tests/test_search_*.py and others) ----------------
# Session-scoped: built once for every file that searches them; no test changes what they
# hold. The imports wait for the first test that asks, so files that use none load no Qdrant.


@pytest.fixture(scope="session")
def encoder(exported_model):
    from shopsearch.encoders.onnx_encoder import OnnxEncoder

    return OnnxEncoder.load(exported_model, precision="fp32")


@pytest.fixture(scope="session")
def edge(small_catalog, encoder, tmp_path_factory):
    """The small catalog in an Edge shard."""
    from search_helpers import ingest

    from shopsearch.store.edge import EdgeBackend

    tmp = tmp_path_factory.mktemp("edge")
    backend = EdgeBackend(tmp / "products")
    ingest(small_catalog, backend, encoder, tmp)
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def server(small_catalog, encoder, tmp_path_factory):
    """The small catalog in QdrantClient(':memory:'), standing in for a server."""
    from qdrant_client import QdrantClient
    from search_helpers import ingest

    from shopsearch.store.server import ServerBackend

    backend = ServerBackend(QdrantClient(":memory:"), "products", ":memory:")
    ingest(small_catalog, backend, encoder, tmp_path_factory.mktemp("server"))
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def variant_backends(variant_catalog, encoder, tmp_path_factory):
    """`variant_catalog` in an Edge shard and in QdrantClient(':memory:'), by backend name;
    one pair a test module, which may change their metadata."""
    from qdrant_client import QdrantClient
    from search_helpers import ingest

    from shopsearch.store.edge import EdgeBackend
    from shopsearch.store.server import ServerBackend

    tmp = tmp_path_factory.mktemp("variants")
    backends = {
        "edge": EdgeBackend(tmp / "products"),
        "server": ServerBackend(QdrantClient(":memory:"), "products", ":memory:"),
    }
    for backend in backends.values():
        ingest(variant_catalog, backend, encoder, tmp)
    yield backends
    for backend in backends.values():
        backend.close()
