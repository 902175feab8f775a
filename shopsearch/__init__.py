"""shopsearch: semantic, filtered, hybrid product search for online shops.

The Python API a service embeds: open a collection, ingest a catalog into it, search it with
filters, facets and pages, and encode text with the collection's encoder. Its defaults are the
CLI's (an int8 encoder from `default_model_dir()`, hybrid RRF search, typo correction, one
result per product family)::

    from shopsearch import Connection, OnnxEncoder, ProductSearch, Query, parse_filters

    search = ProductSearch(Connection(collection="demo").open(), OnnxEncoder.load())
    for hit in search.search(Query("black boots", parse_filters(["price<=1500"]))):
        print(hit.product_id, hit.payload["title"])

Names are imported on first use (PEP 562): `import shopsearch` costs nothing, so the CLI's
cold start pays only for the command it runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from shopsearch.encoders.manifest import DEFAULT_PRECISION, Manifest
    from shopsearch.encoders.onnx_encoder import OnnxEncoder
    from shopsearch.encoders.protocol import TextEncoder
    from shopsearch.encoders.resolve import default_model_dir
    from shopsearch.errors import ShopsearchError
    from shopsearch.ingest.pipeline import IngestReport, ingest_catalog
    from shopsearch.ingest.product_text import ProductTextTemplate
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.search.facets import Facets
    from shopsearch.search.filters import parse_filters
    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
    from shopsearch.store.backend import Backend, FusionMethod, Hit, SearchMode
    from shopsearch.store.bm25 import Bm25Settings
    from shopsearch.store.connection import Connection

_HOMES = {
    "Backend": "shopsearch.store.backend",
    "Bm25Settings": "shopsearch.store.bm25",
    "CatalogReader": "shopsearch.ingest.readers",
    "Connection": "shopsearch.store.connection",
    "DEFAULT_PRECISION": "shopsearch.encoders.manifest",
    "Facets": "shopsearch.search.facets",
    "FusionMethod": "shopsearch.store.backend",
    "Hit": "shopsearch.store.backend",
    "IngestReport": "shopsearch.ingest.pipeline",
    "Manifest": "shopsearch.encoders.manifest",
    "OnnxEncoder": "shopsearch.encoders.onnx_encoder",
    "ProductSearch": "shopsearch.search.product_search",
    "ProductTextTemplate": "shopsearch.ingest.product_text",
    "Query": "shopsearch.search.product_search",
    "SearchMode": "shopsearch.store.backend",
    "SearchOptions": "shopsearch.search.product_search",
    "ShopsearchError": "shopsearch.errors",
    "TextEncoder": "shopsearch.encoders.protocol",
    "default_model_dir": "shopsearch.encoders.resolve",
    "ingest_catalog": "shopsearch.ingest.pipeline",
    "parse_filters": "shopsearch.search.filters",
}

__all__ = [
    "DEFAULT_PRECISION",
    "Backend",
    "Bm25Settings",
    "CatalogReader",
    "Connection",
    "Facets",
    "FusionMethod",
    "Hit",
    "IngestReport",
    "Manifest",
    "OnnxEncoder",
    "ProductSearch",
    "ProductTextTemplate",
    "Query",
    "SearchMode",
    "SearchOptions",
    "ShopsearchError",
    "TextEncoder",
    "__version__",
    "default_model_dir",
    "ingest_catalog",
    "parse_filters",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)


def __dir__() -> list[str]:
    return __all__
