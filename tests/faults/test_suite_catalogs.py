"""Generated catalogs in all three formats, ingested by the real pipeline: `read = upserted +
rejected`, each reject names its row, product and field, and the stored payloads are the
accepted rows (`fault_catalogs` holds the generator and what each row must come to).

Most catalogs go into QdrantClient(":memory:"), a real backend that costs nothing to create;
a share go into a real Edge collection each. The encoder is the shared fp32 one.
Deterministic (`derandomize`): CI tries the same catalogs every run; benchmarks/faults.py
tries more, with new seeds.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fault_catalogs import FORMATS, catalogs, check_ingest, write
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SETTINGS = {
    "deadline": None,
    "derandomize": True,
    "database": None,
    "suppress_health_check": [
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
    "print_blob": True,
}
IN_MEMORY_CASES = 148  # per format
EDGE_CASES = 20  # per format


@pytest.fixture(scope="module")
def qdrant():
    """One in-memory Qdrant for every case here, each case in a collection of its own."""
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    yield client
    client.close()


def _ingest_into(target, catalog, encoder, batch_size: int) -> list[str]:
    """Write `catalog`, ingest it into a new collection (Edge when `target` is "edge", else
    in the in-memory Qdrant client `target`) and check what came of it."""
    from shopsearch.store.edge import EdgeBackend
    from shopsearch.store.server import ServerBackend

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        path = write(catalog, work)
        if target == "edge":
            backend = EdgeBackend(work / "products")
        else:
            backend = ServerBackend(target, work.name, ":memory:")
        try:
            return check_ingest(catalog, path, backend, encoder, work, batch_size)
        finally:
            if target == "edge":
                backend.close()
            else:
                target.delete_collection(work.name)


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_catalogs_are_counted_rejected_and_stored_as_given(fmt, encoder, qdrant):
    @settings(max_examples=IN_MEMORY_CASES, **SETTINGS)
    @given(catalog=catalogs(fmt), batch_size=st.integers(2, 9))
    def check(catalog, batch_size):
        problems = _ingest_into(qdrant, catalog, encoder, batch_size)
        assert not problems, f"{catalog.summary()}\n" + "\n".join(problems)

    check()


@pytest.mark.parametrize("fmt", FORMATS)
def test_generated_catalogs_in_an_edge_collection(fmt, encoder):
    @settings(max_examples=EDGE_CASES, **SETTINGS)
    @given(catalog=catalogs(fmt, max_rows=12), batch_size=st.integers(1, 9))
    def check(catalog, batch_size):
        problems = _ingest_into("edge", catalog, encoder, batch_size)
        assert not problems, f"{catalog.summary()}\n" + "\n".join(problems)

    check()


def test_a_computed_price_is_stored_as_read_and_found_unchanged(encoder, tmp_path):
    """0.1 + 0.2 and other prices of 16-17 significant digits: Edge would store about 1 in 10
    of them one unit in the last place off, and every ingest would encode them again."""
    import json

    from search_helpers import ingest

    from shopsearch.store.edge import EdgeBackend
    from shopsearch.store.schema import point_id

    prices = [0.1 + 0.2, 9827.854760376531, 3988.2354222426875, 1171.3429320851799, 19.99]
    rows = [{"id": f"p{i}", "title": f"Widget {i}", "price": p} for i, p in enumerate(prices)]
    catalog = tmp_path / "prices.jsonl"
    catalog.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    backend = EdgeBackend(tmp_path / "products")
    ingest(catalog, backend, encoder, tmp_path)
    stored = backend.payloads([point_id(r["id"]) for r in rows])
    assert [stored[point_id(r["id"])]["price"] for r in rows] == [
        float(f"{p:.15g}") for p in prices
    ]
    again = ingest(catalog, backend, encoder, tmp_path)
    assert again.unchanged == again.upserted == len(rows)
    backend.close()
