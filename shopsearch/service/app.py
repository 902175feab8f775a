"""The HTTP API: the shop's search, product updates, and what operations needs to watch it.

Endpoints run on worker threads, where the encoder (which releases the GIL) and Qdrant do
the work: searches on a pool of their own, `search_threads` at most at once (concurrent ones
meet in batches: `LiveCollection.search`, `BatchingEncoder`), the rest on FastAPI's.
Answers have the CLI's JSON shapes (`shopsearch.search.responses`), so a search answers as
`shopsearch query --json` does.
Bad input is a 4xx JSON answer naming the field or expression at fault, with the CLI's
messages; a fault is a 5xx JSON answer with a message, never a traceback.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import quote

import anyio
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shopsearch import __version__
from shopsearch.errors import (
    CollectionError,
    EncoderMismatchError,
    ServerError,
    ShopsearchError,
    UsageError,
)
from shopsearch.search.business_ranking import parse_boosts
from shopsearch.search.facets import check_facet_fields
from shopsearch.search.filters import parse_filter_object, parse_filters
from shopsearch.search.product_search import Query as SearchQuery
from shopsearch.search.product_search import SearchOptions
from shopsearch.search.responses import collection_document, search_answer
from shopsearch.search.rules import current_rules
from shopsearch.search.sorting import parse_sort
from shopsearch.service import DEFAULT_SEARCH_THREADS
from shopsearch.service.batching import BatchingEncoder
from shopsearch.service.live import LiveCollection
from shopsearch.service.metrics import Metrics
from shopsearch.store.backend import FusionMethod, SearchMode

if TYPE_CHECKING:
    from shopsearch.service.workers import WriterClient

log = logging.getLogger("shopsearch.service")
T = TypeVar("T")

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_QUERY_CHARS = 1_000
MAX_TOP_K = 1_000
MAX_OFFSET = 10_000
MAX_CANDIDATES = 2_000
MAX_PRODUCTS_PER_PUT = 1_000
# The header of a write a follower sends on to the writer (`shopsearch serve --workers`).
FORWARDED = b"x-shopsearch-forwarded"
# How old the rules a search applies may be: read again at most this often, so a
# `shopsearch rules set` takes effect within it, at one document read a second.
RULES_CHECK_SECONDS = 1.0


class SearchBody(BaseModel):
    """A search: the query text and everything `shopsearch query` takes."""

    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS, description="What the shopper typed.")
    filters: list[str] | dict[str, Any] = Field(
        default_factory=list,
        description='`--filter` expressions (["brand=Nike", "price<=150"]) or an object '
        '({"brand": ["nike", "puma"], "price": {"lte": 150}}).',
    )
    mode: SearchMode = SearchMode.HYBRID
    fusion: FusionMethod = SearchOptions.fusion
    bm25_weight: float | None = Field(None, description="RRF: the BM25 list's weight.")
    min_confidence: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="Drop the results whose calibrated confidence (0..1) is under this.",
    )
    top_k: int = Field(10, ge=1, le=MAX_TOP_K)
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Results skipped: a page's start.")
    candidates: int = Field(100, ge=1, le=MAX_CANDIDATES)
    facets: list[str] = Field(default_factory=list, description="Fields to count.")
    facet_limit: int = Field(10, ge=1, le=1_000)
    all_variants: bool = Field(False, description="Every variant, not one per family.")
    fix_typos: bool = True
    rules: bool = Field(True, description="Apply the collection's merchandising rules.")
    synonyms: bool = Field(True, description="Widen the BM25 side with the collection's synonyms.")
    sort: str | None = Field(
        None,
        max_length=100,
        description="FIELD:asc|desc: the relevant results by an indexed number field (price).",
    )
    ranking: list[str] = Field(
        default_factory=list,
        max_length=100,
        description='Business ranking weights, "FIELD:WEIGHT" of rank fields (`--boost-field`), '
        "over the collection's stored ranking.",
    )
    in_stock_first: bool = Field(False, description="Products out of stock after all others.")


class EmbedBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    fix_typos: bool = True


class ProductsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    products: list[Any] = Field(
        max_length=MAX_PRODUCTS_PER_PUT,
        description="Catalog records with the ingest's fields (id, title, price, ...).",
    )


class DeleteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] = Field(min_length=1, max_length=MAX_PRODUCTS_PER_PUT)


@dataclass
class ServiceState:
    live: LiveCollection
    api_key: str | None
    metrics: Metrics
    search_threads: int = DEFAULT_SEARCH_THREADS
    # `shopsearch serve --workers`: a follower's way to the writer, and which worker this is.
    writer: WriterClient | None = None
    worker: int | None = None
    _search_lane: anyio.CapacityLimiter | None = None  # made in the event loop, at first use

    async def searching(self, work: Callable[[], T]) -> T:
        """`work()` on a worker thread once fewer than `search_threads` searches are running;
        waiting requests start in arrival order."""
        if self._search_lane is None:
            self._search_lane = anyio.CapacityLimiter(self.search_threads)
        return await anyio.to_thread.run_sync(work, limiter=self._search_lane)


def create_app(
    live: LiveCollection,
    api_key: str | None = None,
    search_threads: int = DEFAULT_SEARCH_THREADS,
    writer: WriterClient | None = None,
    worker: int | None = None,
) -> FastAPI:
    """The service's app over an open collection; closing the app's lifespan closes it.
    `writer`: the writer a follower sends its writes to; `worker`: its number, in /info."""
    metrics = Metrics(lambda: float(live.current.backend.count()))
    if isinstance(live.encoder, BatchingEncoder):
        live.encoder.on_batch = metrics.batch.observe
    state = ServiceState(live, api_key, metrics, search_threads, writer, worker)

    @asynccontextmanager
    async def lifespan(_: FastAPI):  # type: ignore[no-untyped-def]
        yield
        live.close()  # uvicorn lets in-flight requests finish before this

    app = FastAPI(
        title="shopsearch",
        version=__version__,
        summary="Semantic, filtered, hybrid product search for an online shop.",
        lifespan=lifespan,
    )
    app.state.service = state
    _install_error_handlers(app)
    app.add_middleware(_BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(_Observe, metrics=metrics)
    _add_routes(app, state)
    return app


def _add_routes(app: FastAPI, state: ServiceState) -> None:
    live = state.live

    def require_key(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> None:
        """Writes need the API key when the service has one (Bearer or X-API-Key)."""
        if state.api_key is None:
            return
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), state.api_key.encode()):
            raise HTTPException(401, "this endpoint needs the service's API key")

    @app.get("/search", tags=["search"])
    async def search_get(
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        filter: Annotated[list[str] | None, Query(description="Repeatable.")] = None,
        mode: SearchMode = SearchMode.HYBRID,
        fusion: FusionMethod = SearchOptions.fusion,
        bm25_weight: float | None = None,
        min_confidence: Annotated[float | None, Query(ge=0.0, le=1.0, allow_inf_nan=False)] = None,
        top_k: Annotated[int, Query(ge=1, le=MAX_TOP_K)] = 10,
        offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
        candidates: Annotated[int, Query(ge=1, le=MAX_CANDIDATES)] = 100,
        facet: Annotated[list[str] | None, Query(description="Repeatable.")] = None,
        facet_limit: Annotated[int, Query(ge=1, le=1_000)] = 10,
        all_variants: bool = False,
        fix_typos: bool = True,
        rules: bool = True,
        synonyms: bool = True,
        sort: Annotated[str | None, Query(max_length=100)] = None,
        ranking: Annotated[list[str] | None, Query(description="Repeatable.")] = None,
        in_stock_first: bool = False,
    ) -> JSONResponse:
        """Search, with the query in the URL (a link a page can share)."""
        body = SearchBody(
            q=q,
            filters=filter or [],
            mode=mode,
            fusion=fusion,
            bm25_weight=bm25_weight,
            min_confidence=min_confidence,
            top_k=top_k,
            offset=offset,
            candidates=candidates,
            facets=facet or [],
            facet_limit=facet_limit,
            all_variants=all_variants,
            fix_typos=fix_typos,
            rules=rules,
            synonyms=synonyms,
            sort=sort,
            ranking=ranking or [],
            in_stock_first=in_stock_first,
        )
        return await state.searching(partial(run_search, live, body))

    @app.post("/search", tags=["search"])
    async def search_post(body: SearchBody) -> JSONResponse:
        """Search: the answer of `shopsearch query --json`, and `took_ms`."""
        return await state.searching(partial(run_search, live, body))

    @app.post("/embed", tags=["search"])
    async def embed(body: EmbedBody) -> dict[str, Any]:
        """The vectors a search of `q` sends to Qdrant, built with the collection's own
        encoder and BM25 settings, for a service that queries the collection itself."""
        return await state.searching(partial(embedded, live, body))

    @app.get("/products/{product_id}", tags=["products"])
    def get_product(product_id: str) -> dict[str, Any]:
        with live.reading():
            stored = live.current.writer().product(product_id)
        if stored is None:
            raise HTTPException(404, f"no product with id {product_id!r}")
        return stored

    @app.put("/products", tags=["products"], dependencies=[Depends(require_key)])
    def put_products(body: ProductsBody) -> Any:
        """Add or update products: each record is validated as an ingest validates a
        catalog row; rejected records are listed with the reason, the rest are stored
        (only changed products are encoded again)."""
        if state.writer is not None:
            return forwarded("PUT", "/products", body.model_dump())
        return live.upsert(body.products).to_dict()

    @app.delete("/products/{product_id}", tags=["products"], dependencies=[Depends(require_key)])
    def delete_product(product_id: str) -> Any:
        if state.writer is not None:
            return forwarded("DELETE", f"/products/{quote(product_id, safe='')}", None)
        deleted = live.delete([product_id])
        if not deleted:
            raise HTTPException(404, f"no product with id {product_id!r}")
        return {"deleted": deleted}

    @app.post("/products/delete", tags=["products"], dependencies=[Depends(require_key)])
    def delete_products(body: DeleteBody) -> Any:
        """Delete several products; ids not stored are listed as `missing`."""
        if state.writer is not None:
            return forwarded("POST", "/products/delete", body.model_dump())
        deleted = live.delete(body.ids)
        return {"deleted": deleted, "missing": sorted(set(body.ids) - set(deleted))}

    def forwarded(method: str, path: str, body: Any) -> JSONResponse:
        """A follower's write, answered by the writer (`shopsearch serve --workers`); the
        follower then applies the writer's log, as its next request would."""
        assert state.writer is not None
        headers = {FORWARDED.decode(): "1"}
        if state.api_key:
            headers["X-API-Key"] = state.api_key
        try:
            status, answer = state.writer.send(method, path, body, headers)
        except OSError as exc:
            raise CollectionError(f"the service's writer cannot be reached: {exc}") from exc
        with live.reading():
            pass
        return JSONResponse(answer, status)

    @app.get("/info", tags=["operations"])
    def info() -> dict[str, Any]:
        with live.reading() as search:
            doc = {**collection_document(search), "reloads": live.reloads}
        if state.worker is not None:
            doc["worker"] = state.worker
        return doc

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """The model is loaded and the collection open: ready for searches."""
        try:
            with live.reading() as search:
                products = search.backend.count()
        except ShopsearchError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, 503)
        return JSONResponse({"status": "ready", "products": products})

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        return Response(state.metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        """The search page: one static file, its CSS and JS inline; the policy keeps every
        request it makes on this service."""
        from importlib.resources import files

        html = files("shopsearch.service").joinpath("static/index.html").read_bytes()
        policy = (
            "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
            "img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        return Response(html, media_type="text/html; charset=utf-8",
                        headers={"Content-Security-Policy": policy})  # fmt: skip


def run_search(live: LiveCollection, body: SearchBody) -> JSONResponse:
    started = time.perf_counter()
    if isinstance(body.filters, dict):
        conditions = parse_filter_object(body.filters)
    else:
        conditions = parse_filters(body.filters)
    options = SearchOptions(
        mode=body.mode,
        fusion=body.fusion,
        bm25_weight=body.bm25_weight,
        top_k=body.top_k,
        offset=body.offset,
        candidates=body.candidates,
        fix_typos=body.fix_typos,
        collapse_variants=not body.all_variants,
        rules=body.rules,
        synonyms=body.synonyms,
        sort=None if body.sort is None else parse_sort(body.sort, "sort"),
        ranking=parse_boosts(body.ranking, body.in_stock_first, "ranking"),
        confidence=True,
        min_confidence=body.min_confidence,
    )
    facet_names = check_facet_fields(body.facets) if body.facets else []
    with live.reading() as search:
        query = search.prepare(SearchQuery(body.q, conditions), options)
        if body.rules:
            # `shopsearch rules set` writes them beside the collection while it is served.
            current_rules(search, max_age=RULES_CHECK_SECONDS)
            search.ranking.get(max_age=RULES_CHECK_SECONDS)  # `ranking set`, likewise
        search.confidence.get(max_age=RULES_CHECK_SECONDS)  # `fusion fit --confidence`
        if options.ranking is not None:
            options.ranking.check(search.meta, "ranking")
    hits = live.search(query, options)
    counted = None
    if facet_names:
        with live.reading() as search:
            counted = search.facets(query, options, facet_names, body.facet_limit)
    with live.reading() as search:
        doc = search_answer(search, query, body.filters, options, hits, counted)
    doc["took_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return JSONResponse(doc)  # a document of plain values: sent without re-validating it


def embedded(live: LiveCollection, body: EmbedBody) -> dict[str, Any]:
    with live.reading() as search:
        options = SearchOptions(fix_typos=body.fix_typos)
        prepared, dense, sparse = search.query_vectors(SearchQuery(body.q), options)
        pairs = search.query_pairs(prepared.searched or prepared.text)
        meta = search.meta
    return {
        "query": body.q,
        "searched": prepared.searched,
        "dense": None if dense is None else [float(x) for x in dense],
        "sparse": {"indices": sparse.indices, "values": sparse.values},
        # The default fusion's re-rank compares them with each title's `pairs` vector.
        "pairs": pairs,
        "encoder": {
            "name": meta.encoder.name,
            "dimension": meta.encoder.dimension,
            "fingerprint": meta.encoder.fingerprint,
        },
        "bm25": meta.bm25,
    }


def _status(exc: ShopsearchError) -> int:
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, ServerError):
        return 502
    if isinstance(exc, CollectionError | EncoderMismatchError):
        return 503
    return 500


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ShopsearchError)
    async def shopsearch_error(_: Request, exc: ShopsearchError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, _status(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for e in exc.errors():
            if e["type"] == "json_invalid":  # loc holds the character position
                where = e["loc"][1] if len(e["loc"]) > 1 else "?"
                detail = e.get("ctx", {}).get("error", "")
                problems.append({"field": "body", "message": f"invalid JSON at {where}: {detail}"})
                continue
            field = ".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0])
            problems.append({"field": field, "message": e["msg"]})
        first = problems[0] if problems else {"field": "", "message": "bad request"}
        message = f"{first['field']}: {first['message']}" if first["field"] else first["message"]
        return JSONResponse({"error": message, "problems": problems}, 422)

    @app.exception_handler(StarletteHTTPException)  # FastAPI's and Starlette's own (404, ...)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def fault(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, 500)


class _Observe:
    """Counts each request by endpoint (its route's path) and status, and times it: plain
    ASGI, as the request passes, at no cost to the answer. A write a follower forwards to
    the writer (`FORWARDED`) was counted where it arrived."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (FORWARDED, b"1") in scope["headers"]:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sent(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sent)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.observe(endpoint, status, time.perf_counter() - started)


class _BodyLimit:
    """Refuses a request body over `limit` bytes with 413, counting what arrives (a client
    may send no Content-Length), before anything parses it."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await _too_large(self.limit, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(self.limit, send)


class _TooLarge(Exception):
    pass


async def _too_large(limit: int, send: Send) -> None:
    body = f'{{"error": "request body over {limit} bytes"}}'.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
