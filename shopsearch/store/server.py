"""Server backend: a Qdrant server or cluster through qdrant-client.

For shops that outgrow one machine (docker-compose.yml runs one). The collection's
documents (its metadata, vocabulary and learned fusion) go into Qdrant's collection
metadata, each under its `Document.key`, so other services can read which encoder and BM25
settings built it. Tests run this code against `QdrantClient(":memory:")`, which speaks the
same client API.

The collection's name is a Qdrant alias of a versioned collection (`<name>-<version>`), so
that `ingest --recreate` builds a new version beside the one in use and switches the alias
to it in one atomic request: services querying the name never see a partial collection.
A collection created before aliases (a real collection under the name) is searched as it
is; its first `--recreate` deletes it just before the alias takes its name.

Every request goes through `ServerBackend._call`, which names the server, the operation and
the failure in a `ServerError`, and repeats the requests that are safe to repeat (reads,
upserts, deletes, metadata writes) while the server is briefly unreachable or overloaded:
a peer restarting, a cluster electing a leader, a proxy with no healthy upstream. Repeating
an upsert is idempotent by construction: a point's id is a UUIDv5 of the product's id
(`schema.point_id`), so an upsert applied twice writes the same points twice. Creating and
deleting collections and switching aliases are not repeated: a repeat of one that did apply
would fail on its own effect.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from qdrant_client import QdrantClient, models
from qdrant_client.common.client_exceptions import ResourceExhaustedResponse
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from shopsearch.errors import CollectionError, ServerError, ShopsearchError, UsageError
from shopsearch.store import qdrant_requests
from shopsearch.store.backend import (
    FusionMethod,
    Hit,
    IndexSettings,
    ProductPoint,
    SearchMode,
    SearchRequest,
    hits_by_score,
    rrf_weights,
)
from shopsearch.store.conditions import Condition, build_filter
from shopsearch.store.counts import FacetCount, ValueRange, by_count
from shopsearch.store.schema import CollectionMeta, Document

WEIGHTED_RRF_SINCE = (1, 17)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Answers a server, or the proxy or load balancer before it, gives while it restarts, elects a
# leader or sheds load: worth asking again.
TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Failures to talk to the server at all that a moment can cure: refused or reset connections,
# an answer cut short, timeouts. Not a URL or a protocol the client cannot use.
TRANSIENT_TRANSPORT = (httpx.NetworkError, httpx.TimeoutException, httpx.RemoteProtocolError)
RETRY_SECONDS_VARIABLE = "SHOPSEARCH_RETRY_SECONDS"
# The key of a server collection's metadata that records the placement an ingest created it with.
PLACEMENT_KEY = "shopsearch_placement"
PLACEMENT_FIELDS = ("shard_number", "replication_factor", "write_consistency_factor")


@dataclass(frozen=True)
class Retry:
    """How long a repeatable request keeps being tried: exponential backoff with jitter, from
    `first_wait` doubling up to `max_wait`, until `seconds` have passed since the first
    attempt (0: one attempt). An attempt started within the budget runs to its own end, so a
    request fails within `seconds` plus one request's timeout. The jitter keeps the clients
    of a server that comes back from asking again all at once."""

    seconds: float = 30.0
    first_wait: float = 0.1
    max_wait: float = 5.0

    @classmethod
    def from_environment(cls) -> Retry:
        """`SHOPSEARCH_RETRY_SECONDS` as the budget, when set."""
        raw = os.environ.get(RETRY_SECONDS_VARIABLE, "").strip()
        if not raw:
            return cls()
        try:
            seconds = float(raw)
        except ValueError:
            seconds = -1.0
        if not 0 <= seconds < float("inf"):
            raise UsageError(
                f"bad {RETRY_SECONDS_VARIABLE} {raw!r}: seconds to keep retrying a request, "
                "a number >= 0"
            )
        return cls(seconds=seconds)

    def wait(self, attempt: int, elapsed: float, asked: float | None = None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, `elapsed` seconds after the first
        began; None when the budget is spent. `asked`: the server's Retry-After, waited at
        least. The last wait is cut to end with the budget, so the last attempt comes then."""
        left = self.seconds - elapsed
        if left <= 0:
            return None
        step = min(self.max_wait, self.first_wait * 2 ** (attempt - 1))
        wait = max(step / 2 + random.uniform(0, step / 2), asked or 0.0)
        return min(wait, left)


def supports_weighted_rrf(version: str) -> bool:
    """Whether a Qdrant server of this version ("1.16.3", "1.17.0-rc1") takes RRF weights;
    a version it cannot read is given the benefit of the doubt."""
    parts = re.findall(r"\d+", version)[:2]
    if len(parts) < 2:
        return True
    return (int(parts[0]), int(parts[1])) >= WEIGHTED_RRF_SINCE


class ServerModels(qdrant_requests.Models):
    """qdrant_client's spelling of the requests `shopsearch.store.qdrant_requests` builds."""

    def nearest(self, vector: Any, using: str) -> dict[str, Any]:
        return {"query": vector, "using": using}  # the request names the vector

    def rrf(self, k: int, weights: list[float] | None) -> models.RrfQuery:
        return models.RrfQuery(rrf=models.Rrf(k=k, weights=weights))

    def dbsf(self) -> models.FusionQuery:
        return models.FusionQuery(fusion=models.Fusion.DBSF)

    def int8(self) -> models.ScalarQuantization:
        config = models.ScalarQuantizationConfig(type=models.ScalarType.INT8)
        return models.ScalarQuantization(scalar=config)

    def expression(self, op: str, *args: Any) -> Any:
        if op in ("variable", "constant", "condition"):  # a name, a number, a condition
            return args[0]
        if op == "div":
            left, right, by_zero = args
            params = models.DivParams(left=left, right=right, by_zero_default=by_zero)
            return models.DivExpression(div=params)
        if op == "max":
            return models.MaxExpression(max=args[0])
        if op == "mult":
            return models.MultExpression(mult=args[0])
        return models.SumExpression(sum=args[0])

    def formula(self, expression: Any, defaults: dict[str, float]) -> models.FormulaQuery:
        return models.FormulaQuery(formula=expression, defaults=defaults)


SERVER_MODELS = ServerModels(models, prefetch_field="prefetch")


class ServerBackend:
    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        location: str,
        index: IndexSettings | None = None,
        url: str | None = None,
        retry: Retry | None = None,
    ) -> None:
        """`url`: the server's, for messages (default: `location`); `retry`: how long
        repeatable requests are tried (default `Retry()`)."""
        self.client = client
        self.collection = collection
        self._location = location
        self._url = url or location
        self.index = index or IndexSettings()
        self.retry = retry or Retry()
        self._server_version: str | None = None
        # A version being built by `rebuilding()`: every request goes to it, not the name.
        self._building: str | None = None

    def _call(
        self,
        operation: str,
        request: Callable[[], T],
        *,
        repeatable: bool = True,
        doing: str = "answered",
    ) -> T:
        """`request()`, the one way this backend talks to the server. A transient failure
        (`TRANSIENT_STATUSES`, `TRANSIENT_TRANSPORT`) of a `repeatable` request is tried
        again within `self.retry`; a failure that lasts, or any other, is a `ServerError`
        naming the server, the `operation` ("the search") and the last failure, instead of
        qdrant-client's traceback of httpx frames. qdrant-client raises a connection failure
        as ResponseHandlingException and an HTTP error as UnexpectedResponse (429 with a
        Retry-After as ResourceExhaustedResponse). A 200 that is not Qdrant's JSON (another
        service at that address, a proxy's HTML page) surfaces as a JSON, assertion or
        (wrapped) validation error from its parsing, a body that is not UTF-8 as a decoding
        error, JSON nested deeper than Python parses as a RecursionError: named as such.
        `doing`: what the
        server did with an HTTP error ("rejected the query")."""
        started = time.monotonic()
        attempt = 1
        while True:
            try:
                return request()
            except (
                ResponseHandlingException,
                UnexpectedResponse,
                ResourceExhaustedResponse,
                json.JSONDecodeError,
                UnicodeDecodeError,
                RecursionError,
                AssertionError,
            ) as exc:
                elapsed = time.monotonic() - started
                wait = None
                if repeatable and _transient(exc):
                    wait = self.retry.wait(attempt, elapsed, _retry_after(exc))
                if wait is None:
                    tried = f", {attempt} tries in {elapsed:.1f} s" if attempt > 1 else ""
                    raise self._failure(exc, f"{operation}{tried}", doing) from exc
                log.debug(
                    "Qdrant at %s: %s failed (try %d, %s); again in %.2f s",
                    self._url, operation, attempt, _failure_text(exc), wait,
                )  # fmt: skip
                time.sleep(wait)
                attempt += 1

    def _failure(self, exc: Exception, operation: str, doing: str) -> ServerError:
        """The `ServerError` that names what `exc` says about the server."""
        if isinstance(exc, ResponseHandlingException):
            if isinstance(exc.source, ValidationError):  # it answered, but not as Qdrant does
                return self._garbage(f"JSON of another shape ({_first_error(exc.source)})")
            return ServerError(
                f"cannot reach Qdrant at {self._url} ({operation}: {_failure_text(exc)}): is "
                "the server running, and is --qdrant-url (QDRANT_URL) its address?"
            )
        if isinstance(exc, json.JSONDecodeError):  # qdrant-client parses any 200 body as JSON
            return self._garbage(f"a body that is not JSON: {exc.doc[:80]!r}")
        if isinstance(exc, UnicodeDecodeError):
            return self._garbage(f"a body that is not UTF-8 ({exc.reason} at byte {exc.start})")
        if isinstance(exc, RecursionError):
            return self._garbage("JSON nested deeper than it can be read")
        if isinstance(exc, AssertionError):  # qdrant-client asserts a 200 body has a result
            return self._garbage(f"a body without a result ({exc})")
        if isinstance(exc, ResourceExhaustedResponse):
            return ServerError(
                f"Qdrant at {self._url} {doing} with HTTP 429 Too Many Requests ({operation}): "
                f"{exc}"
            )
        assert isinstance(exc, UnexpectedResponse)
        status = f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
        if exc.status_code in (401, 403):
            return ServerError(
                f"Qdrant at {self._url} refused the request ({status}): check --api-key "
                "(QDRANT_API_KEY)"
            )
        return ServerError(
            f"Qdrant at {self._url} {doing} with {status} ({operation}): {_error_text(exc)}"
        )

    def _garbage(self, got: str) -> ServerError:
        return ServerError(
            f"the server at {self._url} is not answering as Qdrant does: it sent {got}; is "
            "--qdrant-url (QDRANT_URL) the address of a Qdrant server?"
        )

    def _check_weighted_rrf(self) -> None:
        """Servers before 1.17 reject RRF weights with a bare 400: name the fix instead."""
        if self._server_version is None:

            def version() -> str:
                try:
                    return self.client.info().version
                except UnexpectedResponse as exc:  # a key that may query but not read the root
                    if exc.status_code in TRANSIENT_STATUSES:
                        raise
                    return "unknown"

            self._server_version = self._call("reading the server's version", version)
        if not supports_weighted_rrf(self._server_version):
            raise UsageError(
                f"the Qdrant server at {self._location} is version {self._server_version}: "
                "weighted RRF (any --bm25-weight but 1, the default included) needs Qdrant "
                ">= 1.17. Upgrade the server, or pass --bm25-weight 1"
            )

    @classmethod
    def connect(
        cls,
        url: str,
        collection: str,
        api_key: str | None = None,
        index: IndexSettings | None = None,
        retry: Retry | None = None,
    ) -> ServerBackend:
        """`retry`: default `Retry.from_environment()` (SHOPSEARCH_RETRY_SECONDS)."""
        retry = retry or Retry.from_environment()
        if url == ":memory:":
            return cls(QdrantClient(":memory:"), collection, ":memory:", index, retry=retry)
        try:
            # No compatibility check: it costs every command a request to the server, and
            # warns (a bare UserWarning) before the error a server that is down gets anyway.
            # The one version this project depends on is checked where it matters
            # (_check_weighted_rrf).
            client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
        except ValueError as exc:  # urllib3's LocationParseError is one
            raise UsageError(f"bad --qdrant-url (QDRANT_URL) {url!r}: {exc}") from None
        return cls(client, collection, f"{url}/{collection}", index, url=url, retry=retry)

    @property
    def location(self) -> str:
        return self._location

    @property
    def _target(self) -> str:
        """Where data requests go: the version being built, else the name (Qdrant resolves
        an alias in every data request)."""
        return self._building or self.collection

    def version(self) -> str | None:
        """The collection the name stands for now: the alias's version, the collection of
        that name (a plain collection, no alias), or None when there is none."""
        if self._building is not None:
            return self._building
        aliases = self._call("reading the aliases", lambda: self.client.get_aliases().aliases)
        for alias in aliases:
            if alias.alias_name == self.collection:
                return alias.collection_name
        exists = self._call(
            "reading the collection", lambda: self.client.collection_exists(self.collection)
        )
        return self.collection if exists else None

    def identity(self) -> str | None:
        """Which version the name stands for (a service reopens the collection when it
        changes); the `Reindexable` counterpart of an Edge directory's inode."""
        return self.version()

    def rebuild_under_way(self) -> bool:
        """Whether an `ingest --recreate` is building a new version now: a version of this
        name other than the one in use exists."""
        current = self.version()
        names = self._collection_names()
        return any(n != current and _is_version_of(n, self.collection) for n in names)

    def _collection_names(self) -> list[str]:
        collections = self._call(
            "listing the collections", lambda: self.client.get_collections().collections
        )
        return [c.name for c in collections]

    def _info(self) -> models.CollectionInfo | None:
        """The collection's configuration and metadata; None when there is no collection."""
        version = self.version()
        if version is None:
            return None
        return self._call("reading the collection", lambda: self.client.get_collection(version))

    def _metadata(self) -> dict[str, Any] | None:
        """The collection's metadata ({} when it has none); None when there is no collection."""
        info = self._info()
        return None if info is None else info.config.metadata or {}

    def placement(self) -> dict[str, int | None] | None:
        """The collection's shard_number, replication_factor and write_consistency_factor:
        as the server reports them, else as its creation recorded them (`PLACEMENT_KEY`; a
        server in local mode reports none), None for a value neither holds (the server's
        default). None when there is no collection."""
        info = self._info()
        if info is None:
            return None
        recorded = (info.config.metadata or {}).get(PLACEMENT_KEY)
        recorded = recorded if isinstance(recorded, dict) else {}
        params = info.config.params
        reported = {name: getattr(params, name, None) for name in PLACEMENT_FIELDS}
        return {
            name: reported[name] if reported[name] is not None else recorded.get(name)
            for name in PLACEMENT_FIELDS
        }

    def read_document(self, document: Document) -> dict[str, Any] | None:
        metadata = self._metadata()
        if metadata is None:
            return None
        data = metadata.get(document.key)
        if data is None and document is Document.META:
            raise CollectionError(
                f"collection '{self.collection}' exists but was not created by shopsearch"
            )
        if data is not None and not isinstance(data, dict):
            raise CollectionError(
                f"collection '{self.collection}': metadata key {document.key!r} is not an object"
            )
        return data

    def write_document(self, document: Document, data: dict[str, Any]) -> None:
        # Merged into the collection's metadata, beside the other documents' keys: setting a
        # key to a value, which may be repeated.
        version = self.version()
        if version is None:
            raise CollectionError(f"no collection '{self.collection}' at {self._url}")
        self._call(
            f"writing the {document.key} metadata",
            lambda: self.client.update_collection(version, metadata={document.key: data}),
        )

    def create(self, meta: CollectionMeta) -> None:
        """A new version (the one `rebuilding()` builds, or a first one), complete with its
        metadata and payload indexes before the name points at it."""
        if self._building is None and self.version() is not None:
            raise CollectionError(f"collection '{self.collection}' already exists")
        version = self._building or _new_version(self.collection)
        self._create_version(version, meta)
        if self._building is None:
            self._switch_alias([_alias(self.collection, version)])

    def _create_version(self, version: str, meta: CollectionMeta) -> None:
        """The collection, with the placement of this backend's `IndexSettings` (None: the
        server's default), recorded in its metadata too."""
        config = qdrant_requests.collection_config(meta, self.index, SERVER_MODELS)
        placement = {name: getattr(self.index, name) for name in PLACEMENT_FIELDS}
        if self._call("reading the collection", lambda: self.client.collection_exists(version)):
            self._delete_collection(version)  # a killed build's leftovers
        self._call(
            f"creating collection {version}",
            lambda: self.client.create_collection(
                version,
                vectors_config=config["vectors"],
                sparse_vectors_config=config["sparse_vectors"],
                hnsw_config=config["hnsw_config"],
                quantization_config=config["quantization_config"],
                **placement,
                # With the collection, not after it: no one sees it without its metadata.
                metadata={Document.META.key: meta.to_dict(), PLACEMENT_KEY: placement},
            ),
            repeatable=False,
        )
        for name, schema in qdrant_requests.payload_indexes(SERVER_MODELS, meta).items():
            self._call(
                f"indexing payload field {name}",
                lambda name=name, schema=schema: self.client.create_payload_index(
                    version, name, field_schema=schema
                ),  # the same index asked for again is the index there: repeatable
            )

    def _delete_collection(self, name: str) -> None:
        self._call(
            f"deleting collection {name}",
            lambda: self.client.delete_collection(name),
            repeatable=False,
        )

    def _switch_alias(self, operations: list[Any]) -> None:
        self._call(
            "switching the alias",
            lambda: self.client.update_collection_aliases(change_aliases_operations=operations),
            repeatable=False,
        )

    def drop(self) -> None:
        version = self.version()
        if self._building is None and version not in (None, self.collection):
            delete = models.DeleteAlias(alias_name=self.collection)
            self._switch_alias([models.DeleteAliasOperation(delete_alias=delete)])
        if version is not None:
            self._delete_collection(version)

    def writing(self) -> AbstractContextManager[None]:
        """No lock: the server serialises writes, so two ingests interleave their upserts as
        any two clients' do. Nothing to finish: upserts wait until they are durable, and the
        server indexes in the background."""
        return nullcontext()

    @contextmanager
    def rebuilding(self) -> Iterator[ServerBackend]:
        """A new version built beside the one in use, then the alias switched to it in one
        request and the old version deleted. Versions of this name other than the one in
        use (a killed rebuild's) are deleted first; a build that fails is deleted, leaving
        the collection as it was."""
        current = self.version()
        for name in self._collection_names():
            if name != current and _is_version_of(name, self.collection):
                self._delete_collection(name)
        built = ServerBackend(
            self.client, self.collection, self._location, self.index, self._url, self.retry
        )
        built._building = _new_version(self.collection)
        try:
            yield built
        except BaseException:
            with contextlib.suppress(ShopsearchError):
                built.drop()
            raise
        exists = self._call(
            "reading the collection", lambda: self.client.collection_exists(built._building)
        )
        if not exists:
            return  # the block created nothing: the collection stays as it was
        switch = [_alias(self.collection, built._building)]
        if current == self.collection:  # a plain collection, not an alias, holds the name
            self._delete_collection(current)
        elif current is not None:
            delete = models.DeleteAlias(alias_name=self.collection)
            switch.insert(0, models.DeleteAliasOperation(delete_alias=delete))
        self._switch_alias(switch)
        if current not in (None, self.collection):
            self._delete_collection(current)

    def close(self) -> None:
        self.client.close()

    def upsert(self, points: Sequence[ProductPoint]) -> None:
        """Repeated after a transient failure: the points' ids are their products' (UUIDv5),
        so an upsert the server applied before the failure is overwritten by the same one."""
        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.id, vector=qdrant_requests.point_vectors(p, SERVER_MODELS), payload=p.payload
            )
            for p in points
        ]
        self._call(
            f"the upsert of {len(structs)} points",
            lambda: self.client.upsert(self._target, structs, wait=True),
        )

    def point_ids(self) -> Iterator[str]:
        yield from qdrant_requests.scrolled_ids(self._scroller("answered"))

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            selector = models.PointIdsList(points=list(ids))
            self._call(
                f"the delete of {len(ids)} points",
                lambda: self.client.delete(self._target, selector, wait=True),
            )

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        records = self._call(
            "reading payloads",
            lambda: self.client.retrieve(self._target, list(ids), with_payload=True),
        )
        return {str(r.id): r.payload or {} for r in records}

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        flt = build_filter(conditions, SERVER_MODELS)
        return self._call(
            "the count",
            lambda: self.client.count(self._target, count_filter=flt, exact=True).count,
        )

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        flt = build_filter(conditions, SERVER_MODELS)
        response = self._call(
            f"the count of {field} values",
            lambda: self.client.facet(
                self._target, field, facet_filter=flt, limit=limit, exact=True
            ),
            doing="rejected the count",
        )
        return by_count(response.hits)

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        scroll = self._scroller("rejected the range")
        return qdrant_requests.value_range(scroll, field, conditions, SERVER_MODELS)

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        if any(_weighted_rrf(r) for r in requests):
            self._check_weighted_rrf()
        built = [qdrant_requests.query_request(r, SERVER_MODELS) for r in requests]
        responses = self._call(
            "the search",
            lambda: self.client.query_batch_points(self._target, built),
            doing="rejected the query",
        )
        return [hits_by_score(response.points) for response in responses]

    def _scroller(self, doing: str) -> qdrant_requests.Scroll:
        """`qdrant_requests.Scroll` on this collection; `doing` as in `_call`."""

        def scroll(filter: Any = None, **request: Any) -> tuple[list[Any], Any]:
            return self._call(
                "the scroll",
                lambda: self.client.scroll(self._target, scroll_filter=filter, **request),
                doing=doing,
            )

        return scroll


def _new_version(name: str) -> str:
    """A version's collection name: the alias's name and a time stamp (milliseconds)."""
    return f"{name}-{time.time_ns() // 1_000_000}"


def _is_version_of(collection: str, name: str) -> bool:
    prefix, _, stamp = collection.rpartition("-")
    return prefix == name and stamp.isdigit()


def _alias(name: str, version: str) -> models.CreateAliasOperation:
    return models.CreateAliasOperation(
        create_alias=models.CreateAlias(collection_name=version, alias_name=name)
    )


def _error_text(exc: UnexpectedResponse) -> str:
    """Qdrant's own message ({"status": {"error": ...}}), else the start of the body."""
    try:
        return str(json.loads(exc.content)["status"]["error"])
    except (ValueError, KeyError, TypeError):
        return exc.content[:200].decode("utf-8", errors="replace") or "(no body)"


def _transient(exc: Exception) -> bool:
    """Whether `exc` is a failure that asking again may cure."""
    if isinstance(exc, ResourceExhaustedResponse):
        return True
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code in TRANSIENT_STATUSES
    return isinstance(exc, ResponseHandlingException) and isinstance(
        exc.source, TRANSIENT_TRANSPORT
    )


def _retry_after(exc: Exception) -> float | None:
    """The seconds a 429 or 503 asked the client to wait (Retry-After), if it asked."""
    if isinstance(exc, ResourceExhaustedResponse):
        return float(exc.retry_after_s)
    if isinstance(exc, UnexpectedResponse) and exc.headers is not None:
        with contextlib.suppress(TypeError, ValueError):
            return float(exc.headers.get("Retry-After"))
    return None


def _failure_text(exc: Exception) -> str:
    """A failure on one line: the connection's failure, or the HTTP status."""
    if isinstance(exc, ResponseHandlingException):
        source = exc.source
        return f"{type(source).__name__}: {source}" if str(source) else type(source).__name__
    if isinstance(exc, UnexpectedResponse):
        return f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
    if isinstance(exc, ResourceExhaustedResponse):
        return f"HTTP 429, Retry-After {exc.retry_after_s} s"
    return f"{type(exc).__name__}: {exc}"


def _first_error(exc: ValidationError) -> str:
    """The first of pydantic's complaints, where it is and what it says, on one line."""
    errors = exc.errors()
    if not errors:
        return str(exc).splitlines()[0]
    where = ".".join(str(part) for part in errors[0].get("loc", ())) or "the body"
    return f"{where}: {errors[0].get('msg', 'unexpected value')}"


def _weighted_rrf(req: SearchRequest) -> bool:
    return (
        req.mode is SearchMode.HYBRID
        and req.fusion is FusionMethod.RRF
        and rrf_weights(req.bm25_weight) is not None
    )
