"""Helpers the search and ingest tests share: ingesting a catalog the way the tests do,
small JSONL catalogs, empty collections on either backend, and comparing rankings across
engines that may order tied scores differently."""

import json

from qdrant_client import QdrantClient

from shopsearch.ingest.pipeline import ingest_catalog
from shopsearch.ingest.readers import CatalogReader
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.server import ServerBackend


def ingest(catalog, backend, encoder, tmp_path, **kw):
    return ingest_catalog(
        CatalogReader(catalog),
        backend,
        encoder,
        rejects_path=tmp_path / "rejects.jsonl",
        batch_size=32,
        **kw,
    )


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


QUERIES = ["women's casual shoes", "gold ring", "analog watch for men", "black boots", "cotton"]


# BM25 candidate lists of these have no tied scores (see the RRF test).
TIE_FREE_QUERIES = ["stainless steel bottle", "canvas sneakers", "wrist watch"]


def _ranking(hits, tol=1e-3):
    """Ids in rank order, each group of tied scores as a set; the last group may be cut by
    the limit at a different member in each engine, so only its score is compared."""
    groups: list[set[str]] = []
    top = None
    for h in hits:
        if top is None or top - h.score > tol:
            groups.append(set())
            top = h.score
        groups[-1].add(h.point_id)
    return groups[:-1]


def _empty_backend(name, tmp_path):
    """A new Edge directory or an empty in-memory server, for tests run on both backends."""
    if name == "edge":
        return EdgeBackend(tmp_path / "products")
    return ServerBackend(QdrantClient(":memory:"), "products", ":memory:")
