"""The search service a user would write without shopsearch, for benchmarks/serve_load.py.

A FastAPI app around sentence-transformers (the same base model as shopsearch's export, on
the CPU) and qdrant-client in local mode, over a collection of the same products, asking the
same hybrid query as query_latency.py's REFERENCE script: dense and BM25 prefetches fused by
RRF, the request's filters on both. It takes the body serve_load.py sends to `shopsearch
serve` (`q`, `filters` as `field<=number` / `field=value` strings, `top_k`) and answers the
best products' payloads. Endpoints are plain `def`s, as the FastAPI tutorial writes them for
blocking libraries: they run on the threadpool.

    python benchmarks/serve_naive.py --port 8001 --qdrant-path DIR [--collection bench]
        [--model NAME_OR_DIR]
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from qdrant_client import QdrantClient, models
from qdrant_edge import Bm25, Bm25Config
from sentence_transformers import SentenceTransformer


class SearchBody(BaseModel):
    q: str
    filters: list[str] = []
    top_k: int = 10


def condition(expression: str) -> models.FieldCondition:
    """`price<=150` -> a range condition; `in_stock=true` -> a match condition."""
    for op, bound in (("<=", "lte"), (">=", "gte"), ("<", "lt"), (">", "gt")):
        if op in expression:
            name, value = expression.split(op, 1)
            return models.FieldCondition(
                key=name.strip(), range=models.Range(**{bound: float(value)})
            )
    name, value = expression.split("=", 1)
    value = value.strip()
    match: Any = {"true": True, "false": False}.get(value.lower(), value)
    return models.FieldCondition(key=name.strip(), match=models.MatchValue(value=match))


def create_app(model_name: str, qdrant_path: str, collection: str) -> FastAPI:
    model = SentenceTransformer(model_name, device="cpu")
    client = QdrantClient(path=qdrant_path)
    meta = client.get_collection(collection).config.metadata["shopsearch"]["bm25"]
    bm25 = Bm25(Bm25Config(**meta))
    app = FastAPI()

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/search")
    def search(body: SearchBody) -> dict[str, Any]:
        flt = models.Filter(must=[condition(f) for f in body.filters]) if body.filters else None
        dense = model.encode_query(body.q).tolist()
        sparse = bm25.embed_query(body.q)
        points = client.query_points(
            collection,
            prefetch=[
                models.Prefetch(query=dense, using="dense", limit=100, filter=flt),
                models.Prefetch(
                    query=models.SparseVector(indices=sparse.indices, values=sparse.values),
                    using="bm25",
                    limit=100,
                    filter=flt,
                ),
            ],
            query=models.RrfQuery(rrf=models.Rrf(k=2)),
            query_filter=flt,
            limit=body.top_k,
            with_payload=True,
        ).points
        return {"results": [{"score": p.score, **(p.payload or {})} for p in points]}

    return app


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--qdrant-path", required=True)
    parser.add_argument("--collection", default="bench")
    parser.add_argument("--model", default=os.environ.get("NAIVE_MODEL"))
    args = parser.parse_args()
    if args.model is None:
        from shopsearch.encoders import resolve_base_model

        args.model = resolve_base_model(None)
    app = create_app(args.model, args.qdrant_path, args.collection)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
