"""Keyword filters that forgive case: `brand=Nike` finds the products a
catalog spells "nike" or "NIKE" and shows them as spelled, through a normalised copy of the
keyword fields each point holds (`match`); a collection ingested without the copies keeps
matching exactly; and a filtered search that finds nothing says which filter matched no
product and names the stored values nearest to it. On Edge and on a server alike, with the
real small model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from search_helpers import _empty_backend, _jsonl, ingest
from service_helpers import service_thread

from shopsearch.ingest.validate import Product
from shopsearch.search.filter_hints import filter_hints, nearest
from shopsearch.search.filters import for_collection, parse_filter_object, parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.responses import search_document
from shopsearch.store.backend import FusionMethod, SearchMode
from shopsearch.store.conditions import Match
from shopsearch.store.counts import FacetCount
from shopsearch.store.documents import read_meta
from shopsearch.store.schema import (
    MATCH_FIELDS,
    MATCH_KEY,
    CollectionMeta,
    EncoderInfo,
    match_copy,
    normalise,
    point_id,
)

ROWS = [
    {"id": "s1", "title": "Leather running shoes", "brand": "nike", "color": "Black",
     "category": "Footwear > Running Shoes", "size": "M", "price": 80,
     "attributes": {"Material": "Leather"}},
    {"id": "s2", "title": "Court sneakers", "brand": "NIKE", "color": "brown",
     "category": "footwear > sneakers", "size": "m", "price": 90},
    {"id": "s3", "title": "Trail running shoes", "brand": "Nike", "color": "BROWN",
     "category": "Footwear > Running Shoes", "price": 120},
    {"id": "s4", "title": "Cushioned air shoes", "brand": "Nike  Air", "color": "White",
     "category": "Footwear > Running Shoes", "price": 150},
    {"id": "c1", "title": "Compact digital camera", "brand": "nikon", "color": "Black",
     "category": "Electronics > Cameras", "price": 400},
    {"id": "p1", "title": "Suede sneakers", "brand": "Puma", "color": "Red",
     "category": "Footwear > Sneakers", "price": 60, "attributes": {"Material": "Suede"}},
]  # fmt: skip
ALL = SearchOptions(top_k=20)


@pytest.fixture(params=["edge", "server"])
def backend_name(request):
    return request.param


@pytest.fixture
def collection(backend_name, encoder, tmp_path):
    """ROWS ingested into a new collection on either backend."""
    backend = _empty_backend(backend_name, tmp_path)
    ingest(_jsonl(tmp_path / "catalog.jsonl", ROWS), backend, encoder, tmp_path)
    yield backend
    backend.close()


def _found(search: ProductSearch, *filters: str, text: str = "shoes") -> dict[str, str]:
    """Product id -> stored brand of every product a search under `filters` returns."""
    hits = search.search(Query(text, parse_filters(filters)), ALL)
    return {h.payload["product_id"]: h.payload.get("brand") for h in hits}


# -- the copy ----------------------------------------------------------------------------------


def test_the_copy_is_the_keyword_fields_casefolded_with_whitespace_collapsed():
    product = Product(
        "x1",
        "Shoe",
        brand="  NIKE   Air ",
        category=("Footwear", "Running Shoes"),
        color="Schwarz Weiß",
        size="XL",
        currency="EUR",
        parent_id="ABC",
        attributes={"Ideal For": "Women", "Model No.": "ＡＢ-12"},
    )
    payload = product.payload()
    assert payload["brand"] == "  NIKE   Air "  # the original, for display
    assert payload[MATCH_KEY] == {
        "brand": "nike air",
        "category": ["footwear", "running shoes"],
        "color": "schwarz weiss",
        "size": "xl",
        "currency": "eur",
        "attributes": {"Ideal For": "women", "Model No.": "ab-12"},  # keys as they are
    }
    # Identifiers stay exact; a product without keyword fields has no copy.
    assert "parent_id" not in payload[MATCH_KEY] and "product_id" not in payload[MATCH_KEY]
    assert MATCH_KEY not in Product("x2", "Mug").payload()
    assert MATCH_KEY not in product.payload(match_fields=())
    assert Product.from_payload(payload) == product  # the copy is no catalog field


def test_filter_values_are_normalised_as_the_copy_is():
    meta = CollectionMeta(EncoderInfo("e", 4, "f" * 64), {}, "{title}", match_fields=MATCH_FIELDS)
    conditions = parse_filters(
        [
            "brand=NIKE  air",
            "color in (black, BLACK, Brown)",
            "category=FOOTWEAR > running shoes",
            "attributes.Ideal For!=WOMEN",
            "product_id=AbC",
            "price<=100",
            "in_stock=true",
        ]
    )
    forgiving = for_collection(conditions, meta)
    assert forgiving[:4] == [
        Match("match.brand", ("nike air",)),
        Match("match.color", ("black", "brown")),
        Match("match.category", (("footwear", "running shoes"),)),
        Match('match.attributes."Ideal For"', ("women",), negate=True),
    ]
    assert forgiving[4:] == conditions[4:]  # ids, numbers and booleans as they were
    assert for_collection(forgiving, meta) == forgiving  # a query prepared twice
    assert for_collection(conditions, CollectionMeta(meta.encoder, {}, "{title}")) == conditions


def test_metadata_records_the_copies_and_reads_an_old_collection_as_without_them():
    meta = CollectionMeta(EncoderInfo("e", 4, "f" * 64), {}, "{title}", match_fields=MATCH_FIELDS)
    stored = json.loads(json.dumps(meta.to_dict()))
    assert stored["match_fields"] == list(MATCH_FIELDS)
    assert CollectionMeta.from_dict(stored) == meta
    del stored["match_fields"]  # written before the copies existed
    assert CollectionMeta.from_dict(stored).match_fields == ()


# -- matching --------------------------------------------------------------------------------


def test_keyword_filters_forgive_case_and_results_show_the_stored_spelling(collection, encoder):
    search = ProductSearch(collection, encoder)
    assert read_meta(collection).match_fields == MATCH_FIELDS
    assert _found(search, "brand=Nike") == {"s1": "nike", "s2": "NIKE", "s3": "Nike"}
    assert set(_found(search, "brand=nike air")) == {"s4"}  # the whole value, spaces collapsed
    assert set(_found(search, "color in (black, BROWN)")) == {"s1", "s2", "s3", "c1"}
    assert set(_found(search, "category=FOOTWEAR > running shoes")) == {"s1", "s3", "s4"}
    assert set(_found(search, "category=Sneakers")) == {"s2", "p1"}
    assert set(_found(search, "size=m")) == {"s1", "s2"}
    assert set(_found(search, "attributes.Material=LEATHER")) == {"s1"}
    assert set(_found(search, "brand!=NIKE")) == {"s4", "c1", "p1"}
    assert set(_found(search, "brand not in (nike, PUMA)")) == {"s4", "c1"}
    # The same in the JSON object form the service takes.
    hits = search.search(Query("shoes", parse_filter_object({"brand": ["NIKE", "puma"]})), ALL)
    assert {h.payload["product_id"] for h in hits} == {"s1", "s2", "s3", "p1"}
    # Every search path: each retriever alone, and fused in Qdrant.
    for options in (
        SearchOptions(top_k=20, mode=SearchMode.DENSE),
        SearchOptions(top_k=20, mode=SearchMode.BM25),
        SearchOptions(top_k=20, fusion=FusionMethod.RRF),
    ):
        hits = search.search(Query("running shoes", parse_filters(["brand=NIKE"])), options)
        assert {h.payload["product_id"] for h in hits} <= {"s1", "s2", "s3"} and hits
    # Results show the catalog's spelling, not the copy.
    hits = search.search(Query("shoes", parse_filters(["brand=Nike"])), ALL)
    doc = search_document(Query("shoes"), ["brand=Nike"], ALL, hits)
    assert all(
        MATCH_KEY not in r and r["brand"] in ("nike", "NIKE", "Nike") for r in doc["results"]
    )


def test_facet_counts_show_the_stored_values_and_count_under_forgiving_filters(collection, encoder):
    search = ProductSearch(collection, encoder)
    counted = search.catalog_facets(parse_filters(["brand=NIKE"]), ["brand", "color"], 10)
    assert counted.products == 3
    assert {c.value for c in counted.counts["brand"]} == {"nike", "NIKE", "Nike"}
    assert {c.value for c in counted.counts["color"]} == {"Black", "brown", "BROWN"}


def test_the_stored_payload_holds_the_copy_of_its_catalog_fields(collection):
    stored = collection.payloads([point_id("s1")])[point_id("s1")]
    assert (
        stored[MATCH_KEY]
        == match_copy(stored)
        == {
            "brand": "nike",
            "category": ["footwear", "running shoes"],
            "color": "black",
            "size": "m",
            "attributes": {"Material": "leather"},
        }
    )


def test_a_collection_without_the_copies_matches_exactly_until_recreated(
    backend_name, encoder, tmp_path, monkeypatch
):
    """An old collection (simulated by ingesting with no fields copied, through the same
    code path) keeps exact matching, is re-ingested without being encoded again, gets the
    hint with the stored spelling, and `--recreate` gives it the copies."""
    catalog = _jsonl(tmp_path / "catalog.jsonl", ROWS)
    backend = _empty_backend(backend_name, tmp_path)
    with monkeypatch.context() as patched:
        patched.setattr("shopsearch.ingest.pipeline.MATCH_FIELDS", ())
        ingest(catalog, backend, encoder, tmp_path)
    assert read_meta(backend).match_fields == ()
    assert MATCH_KEY not in backend.payloads([point_id("s1")])[point_id("s1")]
    search = ProductSearch(backend, encoder)
    assert _found(search, "brand=Nike") == {"s3": "Nike"}
    assert _found(search, "brand=puma") == {}
    (hint,) = filter_hints(backend, search.meta, parse_filters(["brand=puma"]))
    assert hint.near == ("Puma",)
    assert "match case exactly" in hint.message and "--recreate" in hint.message

    again = ingest(catalog, backend, encoder, tmp_path)  # as written before: nothing encoded
    assert again.unchanged == again.upserted == len(ROWS)
    assert read_meta(backend).match_fields == ()

    ingest(catalog, backend, encoder, tmp_path, recreate=True)
    assert read_meta(backend).match_fields == MATCH_FIELDS
    search = ProductSearch(backend, encoder)
    assert set(_found(search, "brand=puma")) == {"p1"}
    assert set(_found(search, "brand=Nike")) == {"s1", "s2", "s3"}
    backend.close()


def test_new_collections_index_the_copies(backend_name, tmp_path, monkeypatch):
    """Each keyword copy has its own keyword index (attributes, like the map, none)."""
    from shopsearch.store.server import ServerBackend

    asked: dict[str, str] = {}
    if backend_name == "server":
        original = ServerBackend.create

        def spy(self, meta):  # QdrantClient(':memory:') keeps no indexes to read back
            client = self.client
            create_index = client.create_payload_index

            def recorded(collection, name, field_schema, **kw):
                asked[name] = str(field_schema)
                return create_index(collection, name, field_schema=field_schema, **kw)

            monkeypatch.setattr(client, "create_payload_index", recorded)
            return original(self, meta)

        monkeypatch.setattr(ServerBackend, "create", spy)
    backend = _empty_backend(backend_name, tmp_path)
    with backend.writing():
        backend.create(
            CollectionMeta(EncoderInfo("e", 4, "f" * 64), {}, "{title}", match_fields=MATCH_FIELDS)
        )
    if backend_name == "edge":
        schema = backend.shard().info().payload_schema
        asked = {name: str(info.data_type) for name, info in schema.items()}
    copies = {name for name in asked if name.startswith(f"{MATCH_KEY}.")}
    assert copies == {
        f"{MATCH_KEY}.{f}" for f in ("brand", "category", "color", "size", "currency")
    }
    assert all("keyword" in asked[name].lower() for name in copies)
    backend.close()


# -- hints -----------------------------------------------------------------------------------


def test_a_filter_matching_nothing_names_the_nearest_stored_values(collection, encoder):
    search = ProductSearch(collection, encoder)
    conditions = parse_filters(["brand=Nikee"])
    assert search.search(Query("shoes", conditions), ALL) == []
    (hint,) = filter_hints(collection, search.meta, conditions)
    assert hint.field == "brand" and hint.values == ("Nikee",) and hint.filter == "brand=Nikee"
    assert set(hint.near[:3]) == {"nike", "NIKE", "Nike"} and hint.near[3:] == ("nikon",)
    assert hint.message.startswith("brand=Nikee matches no product; stored brands near it: ")
    assert "case exactly" not in hint.message
    assert hint.to_dict()["near"] == list(hint.near)

    (hint,) = filter_hints(
        collection, search.meta, parse_filters(["category=Footwear > Runing Shoes"])
    )
    assert hint.near == ("Running Shoes",)  # the level that matches nothing, not "Footwear"
    (hint,) = filter_hints(collection, search.meta, parse_filters(["category=cameras > sneakers"]))
    assert hint.near == () and hint.message.endswith("no product's category holds all its levels")
    (hint,) = filter_hints(collection, search.meta, parse_filters(["color in (Purple, Blakc)"]))
    assert hint.near == ("Black",)
    (hint,) = filter_hints(collection, search.meta, parse_filters(["brand=Zzyzx"]))
    assert hint.near == () and "no stored brands are near it" in hint.message
    (hint,) = filter_hints(collection, search.meta, parse_filters(["attributes.Material=Wool"]))
    assert hint.near == () and hint.message == "attributes.Material=Wool matches no product"
    (hint,) = filter_hints(collection, search.meta, parse_filters(["price<=10"]))
    assert hint.message == "price<=10 matches no product; stored price values run from 60 to 400"


def test_hints_name_only_what_matches_nothing(collection, encoder):
    search = ProductSearch(collection, encoder)
    meta = search.meta
    # Each filter matches some products, together none: said so, with no values to offer.
    together = parse_filters(["brand=Puma", "color=black"])
    assert search.search(Query("shoes", together), ALL) == []
    (hint,) = filter_hints(collection, meta, together)
    assert hint.field is None and hint.near == ()
    assert (
        hint.message
        == "brand=Puma and color=black match no product together; each matches some on its own"
    )
    # Only the one that matches nothing, among others that do; never a negated one.
    (hint,) = filter_hints(collection, meta, parse_filters(["color=Black", "brand=Pumaa"]))
    assert hint.field == "brand" and hint.near == ("Puma",)
    assert filter_hints(collection, meta, parse_filters(["brand!=Nikee"])) == []
    # Filters that match products give no hint (a search that found nothing for its text).
    assert filter_hints(collection, meta, parse_filters(["brand=NIKE", "color=brown"])) == []


def test_nearest_ranks_case_equal_then_prefix_then_edits_by_products():
    stored = [
        FacetCount("Nikon", 9),
        FacetCount("nike", 2),
        FacetCount("NIKE", 5),
        FacetCount("Nike Air", 1),
        FacetCount("Mike", 7),
        FacetCount("Puma", 30),
        FacetCount(True, 3),
    ]
    assert nearest(["Nike"], stored) == ("NIKE", "nike", "Nike Air", "Mike", "Nikon")
    assert nearest(["Nike"], stored, limit=2) == ("NIKE", "nike")
    assert nearest(["pum", "nikon"], stored) == ("Nikon", "Puma", "NIKE", "nike")
    assert nearest(["Adidas"], stored) == ()
    assert normalise("  Ｎｉｋｅ\tAIR ") == "nike air"


# -- the CLI and the service -----------------------------------------------------------------


def test_the_cli_prints_the_hint_on_stderr_and_in_its_json(exported_model, encoder, tmp_path):
    from shopsearch.store.edge import EdgeBackend

    backend = EdgeBackend(tmp_path / "data" / "products")
    ingest(_jsonl(tmp_path / "catalog.jsonl", ROWS), backend, encoder, tmp_path)
    backend.close()
    env = {
        **os.environ,
        "SHOPSEARCH_MODEL_DIR": str(exported_model),
        "SHOPSEARCH_DATA_DIR": str(tmp_path / "data"),
    }

    def query(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "shopsearch", "query", "shoes", *args],
            capture_output=True,
            text=True,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        return proc

    doc = json.loads(query("-f", "brand=Nikee", "--json").stdout)
    assert doc["results"] == []
    (hint,) = doc["filter_hints"]
    assert hint["field"] == "brand" and hint["near"][-1] == "nikon"
    doc = json.loads(query("-f", "brand=NIKE", "--json").stdout)
    assert doc["filter_hints"] == [] and {r["brand"] for r in doc["results"]} == {
        "nike",
        "NIKE",
        "Nike",
    }
    shown = query("-f", "color=purple")
    assert "hint:" not in shown.stdout
    assert shown.stderr.startswith("hint: color=purple matches no product")


def test_the_service_forgives_case_answers_with_hints_and_stores_the_copy(encoder, tmp_path):
    from qdrant_client import QdrantClient

    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.live import LiveCollection
    from shopsearch.store.server import ServerBackend

    client = QdrantClient(":memory:")
    backend = ServerBackend(client, "products", ":memory:")
    ingest(_jsonl(tmp_path / "catalog.jsonl", ROWS), backend, encoder, tmp_path)
    live = LiveCollection(
        lambda: ServerBackend(client, "products", ":memory:"), BatchingEncoder(encoder), "test"
    )
    with service_thread(create_app(live)) as url:
        found = httpx.post(f"{url}/search", json={"q": "shoes", "filters": {"brand": "NIKE"}})
        doc = found.json()
        assert found.status_code == 200 and doc["filter_hints"] == []
        assert {r["product_id"]: r["brand"] for r in doc["results"]} == {
            "s1": "nike",
            "s2": "NIKE",
            "s3": "Nike",
        }
        assert all(MATCH_KEY not in r for r in doc["results"])

        missed = httpx.get(f"{url}/search", params={"q": "shoes", "filter": "brand=Nikee"}).json()
        assert missed["results"] == []
        (hint,) = missed["filter_hints"]
        assert hint["filter"] == "brand=Nikee" and hint["near"][-1] == "nikon"
        assert "stored brands near it" in hint["message"]

        put = httpx.put(
            f"{url}/products",
            json={"products": [{"id": "a1", "title": "Road runner", "brand": "ADIDAS",
                                "color": "Blue", "category": "Footwear > Running Shoes"}]},
        )  # fmt: skip
        assert put.status_code == 200 and put.json()["upserted"] == 1
        stored = httpx.get(f"{url}/products/a1").json()
        assert stored["brand"] == "ADIDAS"
        assert stored[MATCH_KEY] == {
            "brand": "adidas",
            "color": "blue",
            "category": ["footwear", "running shoes"],
        }
        found = httpx.post(f"{url}/search", json={"q": "runner", "filters": ["brand=Adidas"]})
        assert [r["product_id"] for r in found.json()["results"]] == ["a1"]
    live.close()


def test_every_ingested_product_holds_the_copy_its_collection_records(collection):
    """The payload path ingest and PUT /products share (`Product.payload`) is the one that
    made the stored copies: each stored payload is its own fields' copy."""
    ids = [point_id(r["id"]) for r in ROWS]
    for payload in collection.payloads(ids).values():
        assert payload[MATCH_KEY] == match_copy(payload, MATCH_FIELDS)
