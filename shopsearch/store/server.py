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
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from pydantic import ValidationError
from qdrant_client import QdrantClient, models
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


SERVER_MODELS = ServerModels(models, prefetch_field="prefetch")


class ServerBackend:
    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        location: str,
        index: IndexSettings | None = None,
        url: str | None = None,
    ) -> None:
        """`url`: the server's, for messages (default: `location`)."""
        self.client = client
        self.collection = collection
        self._location = location
        self._url = url or location
        self.index = index or IndexSettings()
        self._server_version: str | None = None
        # A version being built by `rebuilding()`: every request goes to it, not the name.
        self._building: str | None = None

    @contextmanager
    def _server(self, doing: str = "answered") -> Iterator[None]:
        """qdrant-client raises a connection failure as ResponseHandlingException and an HTTP
        error as UnexpectedResponse, both with a traceback of httpx frames: name the URL and
        the fix instead. A 200 that is not Qdrant's JSON (another service at that address, a
        proxy's HTML page) surfaces as a JSON, assertion or (wrapped) validation error from
        its parsing: named as such. `doing`: what the server did with an HTTP error
        ("rejected the query")."""
        try:
            yield
        except ResponseHandlingException as exc:
            if isinstance(exc.source, ValidationError):  # it answered, but not as Qdrant does
                raise self._garbage(f"JSON of another shape ({_first_error(exc.source)})") from exc
            raise ServerError(
                f"cannot reach Qdrant at {self._url} ({exc.source}): is the server running, and "
                "is --qdrant-url (QDRANT_URL) its address?"
            ) from exc
        except json.JSONDecodeError as exc:  # qdrant-client parses any 200 body as JSON
            raise self._garbage(f"a body that is not JSON: {exc.doc[:80]!r}") from exc
        except AssertionError as exc:  # qdrant-client asserts a 200 body has a result
            raise self._garbage(f"a body without a result ({exc})") from exc
        except UnexpectedResponse as exc:
            status = f"HTTP {exc.status_code} {exc.reason_phrase}".strip()
            if exc.status_code in (401, 403):
                raise ServerError(
                    f"Qdrant at {self._url} refused the request ({status}): check --api-key "
                    "(QDRANT_API_KEY)"
                ) from exc
            raise ServerError(
                f"Qdrant at {self._url} {doing} with {status}: {_error_text(exc)}"
            ) from exc

    def _garbage(self, got: str) -> ServerError:
        return ServerError(
            f"the server at {self._url} is not answering as Qdrant does: it sent {got}; is "
            "--qdrant-url (QDRANT_URL) the address of a Qdrant server?"
        )

    def _check_weighted_rrf(self) -> None:
        """Servers before 1.17 reject RRF weights with a bare 400: name the fix instead."""
        if self._server_version is None:
            with self._server():
                try:
                    self._server_version = self.client.info().version
                except UnexpectedResponse:  # a key that may query but not read the root
                    self._server_version = "unknown"
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
    ) -> ServerBackend:
        if url == ":memory:":
            return cls(QdrantClient(":memory:"), collection, ":memory:", index)
        try:
            # No compatibility check: it costs every command a request to the server, and
            # warns (a bare UserWarning) before the error a server that is down gets anyway.
            # The one version this project depends on is checked where it matters
            # (_check_weighted_rrf).
            client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
        except ValueError as exc:  # urllib3's LocationParseError is one
            raise UsageError(f"bad --qdrant-url (QDRANT_URL) {url!r}: {exc}") from None
        return cls(client, collection, f"{url}/{collection}", index, url=url)

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
        that name (created before aliases), or None when there is none."""
        if self._building is not None:
            return self._building
        with self._server():
            for alias in self.client.get_aliases().aliases:
                if alias.alias_name == self.collection:
                    return alias.collection_name
            return self.collection if self.client.collection_exists(self.collection) else None

    def identity(self) -> str | None:
        """Which version the name stands for (a service reopens the collection when it
        changes); the `Reindexable` counterpart of an Edge directory's inode."""
        return self.version()

    def rebuild_under_way(self) -> bool:
        """Whether an `ingest --recreate` is building a new version now: a version of this
        name other than the one in use exists."""
        current = self.version()
        with self._server():
            names = [c.name for c in self.client.get_collections().collections]
        return any(n != current and _is_version_of(n, self.collection) for n in names)

    def _metadata(self) -> dict[str, Any] | None:
        """The collection's metadata ({} when it has none); None when there is no collection."""
        version = self.version()
        if version is None:
            return None
        with self._server():
            return self.client.get_collection(version).config.metadata or {}

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
        # Merged into the collection's metadata, beside the other documents' keys.
        version = self.version()
        if version is None:
            raise CollectionError(f"no collection '{self.collection}' at {self._url}")
        with self._server():
            self.client.update_collection(version, metadata={document.key: data})

    def create(self, meta: CollectionMeta) -> None:
        """A new version (the one `rebuilding()` builds, or a first one), complete with its
        metadata and payload indexes before the name points at it."""
        if self._building is None and self.version() is not None:
            raise CollectionError(f"collection '{self.collection}' already exists")
        version = self._building or _new_version(self.collection)
        self._create_version(version, meta)
        if self._building is None:
            with self._server():
                self.client.update_collection_aliases(
                    change_aliases_operations=[_alias(self.collection, version)]
                )

    def _create_version(self, version: str, meta: CollectionMeta) -> None:
        config = qdrant_requests.collection_config(meta, self.index, SERVER_MODELS)
        with self._server():
            if self.client.collection_exists(version):  # a killed build's leftovers
                self.client.delete_collection(version)
            self.client.create_collection(
                version,
                vectors_config=config["vectors"],
                sparse_vectors_config=config["sparse_vectors"],
                hnsw_config=config["hnsw_config"],
                quantization_config=config["quantization_config"],
                # With the collection, not after it: no one sees it without its metadata.
                metadata={Document.META.key: meta.to_dict()},
            )
            for name, schema in qdrant_requests.payload_indexes(SERVER_MODELS).items():
                self.client.create_payload_index(version, name, field_schema=schema)

    def drop(self) -> None:
        version = self.version()
        with self._server():
            if self._building is None and version not in (None, self.collection):
                self.client.update_collection_aliases(
                    change_aliases_operations=[
                        models.DeleteAliasOperation(
                            delete_alias=models.DeleteAlias(alias_name=self.collection)
                        )
                    ]
                )
            if version is not None:
                self.client.delete_collection(version)

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
        with self._server():
            for c in self.client.get_collections().collections:
                if c.name != current and _is_version_of(c.name, self.collection):
                    self.client.delete_collection(c.name)
        built = ServerBackend(self.client, self.collection, self._location, self.index, self._url)
        built._building = _new_version(self.collection)
        try:
            yield built
        except BaseException:
            with contextlib.suppress(ShopsearchError):
                built.drop()
            raise
        with self._server():
            if not self.client.collection_exists(built._building):
                return  # the block created nothing: the collection stays as it was
            switch = [_alias(self.collection, built._building)]
            if current == self.collection:  # a collection from before aliases holds the name
                self.client.delete_collection(current)
            elif current is not None:
                delete = models.DeleteAlias(alias_name=self.collection)
                switch.insert(0, models.DeleteAliasOperation(delete_alias=delete))
            self.client.update_collection_aliases(change_aliases_operations=switch)
            if current not in (None, self.collection):
                self.client.delete_collection(current)

    def close(self) -> None:
        self.client.close()

    def upsert(self, points: Sequence[ProductPoint]) -> None:
        if not points:
            return
        structs = [
            models.PointStruct(
                id=p.id, vector=qdrant_requests.point_vectors(p, SERVER_MODELS), payload=p.payload
            )
            for p in points
        ]
        with self._server():
            self.client.upsert(self._target, structs, wait=True)

    def point_ids(self) -> Iterator[str]:
        with self._server():
            yield from qdrant_requests.scrolled_ids(self._scroll)

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self._server():
                self.client.delete(
                    self._target, models.PointIdsList(points=list(ids)), wait=True
                )

    def payloads(self, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        with self._server():
            records = self.client.retrieve(self._target, list(ids), with_payload=True)
        return {str(r.id): r.payload or {} for r in records}

    def count(self, conditions: Sequence[Condition] = ()) -> int:
        flt = build_filter(conditions, SERVER_MODELS)
        with self._server():
            return self.client.count(self._target, count_filter=flt, exact=True).count

    def facet(self, field: str, conditions: Sequence[Condition], limit: int) -> list[FacetCount]:
        flt = build_filter(conditions, SERVER_MODELS)
        with self._server("rejected the count"):
            response = self.client.facet(
                self._target, field, facet_filter=flt, limit=limit, exact=True
            )
        return by_count(response.hits)

    def value_range(self, field: str, conditions: Sequence[Condition]) -> ValueRange | None:
        with self._server("rejected the range"):
            return qdrant_requests.value_range(self._scroll, field, conditions, SERVER_MODELS)

    def search_batch(self, requests: Sequence[SearchRequest]) -> list[list[Hit]]:
        if any(_weighted_rrf(r) for r in requests):
            self._check_weighted_rrf()
        built = [qdrant_requests.query_request(r, SERVER_MODELS) for r in requests]
        with self._server("rejected the query"):
            responses = self.client.query_batch_points(self._target, built)
        return [hits_by_score(response.points) for response in responses]

    def _scroll(self, filter: Any = None, **request: Any) -> tuple[list[Any], Any]:
        """`qdrant_requests.Scroll` on this collection."""
        return self.client.scroll(self._target, scroll_filter=filter, **request)


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
