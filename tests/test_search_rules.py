"""Merchandising rules on both backends, with the real encoder: pins, hides, boosts and
buries, their conflicts (a pin a filter excludes, two pins for one position, a hidden pin),
catch-all rules, `--no-rules`, rules kept with the collection, and the rules file's checks
(shopsearch.search.rules)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from search_helpers import _empty_backend, ingest

from shopsearch.cli.app import main
from shopsearch.errors import InputFileError
from shopsearch.search.filters import for_collection, parse_filters
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.rules import Rule, RuleSet, fired_rules, passes
from shopsearch.search.sorting import SortOrder
from shopsearch.store.conditions import Match
from shopsearch.store.documents import write_rules
from shopsearch.store.edge import EdgeBackend

SHOES = "women's casual shoes"
# Rules reorder the best `candidates` results: 20 of the 120 products, so that some are not
# among them. WIDE is that whole list, as the rules see it.
OPTS = SearchOptions(candidates=20)
WIDE = replace(OPTS, top_k=20, rules=False)


@pytest.fixture(scope="module", params=["edge", "server"])
def shop(request, small_catalog, encoder, tmp_path_factory):
    """The small catalog in a collection of its own on each backend (the rules tests write
    rules; the shared collections stay without). A dict, so a test may reopen it."""
    tmp = tmp_path_factory.mktemp(f"rules-{request.param}")
    backend = _empty_backend(request.param, tmp)
    ingest(small_catalog, backend, encoder, tmp)
    held = {"backend": backend, "name": request.param, "dir": tmp}
    yield held
    held["backend"].close()


@pytest.fixture
def rules(shop, encoder):
    """Store a rules file's rules with the collection and return a fresh search of it (which
    reads them at its first search); cleared after the test."""

    def store(*items: dict) -> ProductSearch:
        write_rules(shop["backend"], RuleSet.from_dict({"rules": list(items)}).to_dict())
        return ProductSearch(shop["backend"], encoder)

    yield store
    write_rules(shop["backend"], RuleSet().to_dict())


def ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def plain(shop, encoder, text=SHOES, options=WIDE, filters=()):
    return ProductSearch(shop["backend"], encoder).search(
        Query(text, parse_filters(filters)), options
    )


def test_pins_take_their_positions_and_bring_unranked_products(shop, encoder, rules):
    ranked = ids(plain(shop, encoder))
    elsewhere = ids(plain(shop, encoder, "dog shampoo"))[0]
    assert elsewhere not in ranked
    search = rules(
        {
            "name": "shoes",
            "when": {"contains": "casual shoes"},
            "pin": [
                {"product_id": ranked[7], "position": 1},
                {"product_id": elsewhere, "position": 3},
            ],
        }
    )
    hits = search.search(Query(SHOES), OPTS)
    rest = [p for p in ranked if p != ranked[7]]
    assert ids(hits) == [ranked[7], rest[0], elsewhere, *rest[1:8]]
    assert hits[2].score == 0.0 and hits[2].payload["title"]  # not ranked: score 0, payload read
    assert fired_rules(hits) == [
        {"rule": "shoes", "effect": "pin", "product_id": ranked[7], "position": 1},
        {"rule": "shoes", "effect": "pin", "product_id": elsewhere, "position": 3},
    ]
    # Another query: the rule does not fire, the search is the plain one.
    other = search.search(Query("gold ring"), OPTS)
    assert fired_rules(other) == [] and ids(other) == ids(plain(shop, encoder, "gold ring"))[:10]


def test_a_pinned_product_a_filter_excludes_stays_excluded(shop, encoder, rules):
    cheap = ["price<=500"]
    ranked = plain(shop, encoder, filters=cheap)
    dear = next(h for h in plain(shop, encoder) if h.payload["price"] > 500)
    outside = ids(plain(shop, encoder, "dog shampoo", filters=cheap))[0]
    assert outside not in ids(ranked)
    search = rules(
        {
            "when": {"contains": "shoes"},
            "pin": [
                {"product_id": dear.product_id, "position": 1},
                {"product_id": outside, "position": 2},
                {"product_id": "no-such-product", "position": 3},
            ],
        }
    )
    hits = search.search(Query(SHOES, parse_filters(cheap)), OPTS)
    assert dear.product_id not in ids(hits)
    assert ids(hits) == [ranked[0].product_id, outside, *ids(ranked)[1:9]]
    assert all(h.payload["price"] <= 500 for h in hits)
    effects = fired_rules(hits)
    assert effects[0]["skipped"] == "not found under the query's filters"
    assert effects[1]["position"] == 2
    assert effects[2]["skipped"] == "not found under the query's filters"


def test_two_pins_for_one_position_go_in_rule_order(shop, encoder, rules):
    ranked = ids(plain(shop, encoder))
    search = rules(
        {
            "name": "first",
            "when": {"exact": SHOES},
            "pin": [{"product_id": ranked[5], "position": 2}],
        },
        {"name": "second", "pin": [{"product_id": ranked[6], "position": 2}]},  # catch-all
        {"name": "again", "pin": [{"product_id": ranked[5], "position": 1}]},
    )
    hits = search.search(Query("Women's  CASUAL shoes"), OPTS)  # exact compares words, case-folded
    rest = [p for p in ranked if p not in (ranked[5], ranked[6])]
    assert ids(hits)[:4] == [rest[0], ranked[5], ranked[6], rest[1]]
    effects = fired_rules(hits)
    assert [(e["rule"], e["position"]) for e in effects] == [
        ("first", 2),
        ("second", 3),
        ("again", None),
    ]
    assert effects[2]["skipped"] == "pinned by an earlier rule"


def test_hidden_wins_over_pinned(shop, encoder, rules):
    ranked = ids(plain(shop, encoder))
    search = rules(
        {"name": "pin", "pin": [{"product_id": ranked[3], "position": 1}]},
        {"name": "hide", "when": {"contains": "shoes"}, "hide": [ranked[3], ranked[0]]},
    )
    hits = search.search(Query(SHOES), replace(OPTS, top_k=20))
    assert ranked[3] not in ids(hits) and ranked[0] not in ids(hits)
    assert {"rule": "pin", "effect": "pin", "product_id": ranked[3], "position": None,
            "skipped": "hidden by a rule"} in fired_rules(hits)  # fmt: skip
    # Hidden products are left out of retrieval: by BM25 alone, whose scores are the
    # products' own, the rest rank as they did.
    bm25 = SearchOptions(mode="bm25", top_k=20)  # type: ignore[arg-type]
    before = ids(plain(shop, encoder, options=replace(bm25, rules=False)))
    after = ids(search.search(Query(SHOES), bm25))
    kept = [p for p in before if p not in (ranked[3], ranked[0])]
    assert after[: len(kept)] == kept


def expected_shift(hits, shifts) -> list[str]:
    """The documented order: rank + summed shift, equal values by rank."""
    total = [sum(by for conditions, by in shifts if passes(conditions, h.payload)) for h in hits]
    order = sorted(range(len(hits)), key=lambda j: (j + total[j], j))
    return [hits[j].product_id for j in order]


def test_boosts_and_buries_shift_ranks_as_documented(shop, encoder, rules):
    ranked = plain(shop, encoder)
    # The rules reorder as deep as a boost can bring a product onto the page: its end + 10.
    read = ranked[: 10 + 10]
    lifted = next(h.payload["brand"] for h in read[6:] if h.payload.get("brand"))
    sunk = next(h.payload["brand"] for h in ranked if h.payload.get("brand"))
    search = rules(
        {"name": "lift", "boost": [{"filter": f"brand={lifted.upper()}", "by": 10}]},  # catch-all
        {
            "name": "sink",
            "when": {"category": "footwear"},
            "bury": [{"filter": [f"brand={sunk}", "price>0"], "by": 4}],
        },
    )
    meta = search.meta
    lift = (for_collection(parse_filters([f"brand={lifted}"]), meta), -10)
    sink = (for_collection(parse_filters([f"brand={sunk}", "price>0"]), meta), 4)
    # A catch-all boost fires on every query; the category rule only where a filter names it.
    hits = search.search(Query(SHOES), OPTS)
    assert ids(hits) == expected_shift(ranked, [lift])[:10]
    assert [e["rule"] for e in fired_rules(hits)] == ["lift"]
    assert fired_rules(hits)[0]["products"] == sum(passes(lift[0], h.payload) for h in read)
    footwear = ["category=FOOTWEAR"]
    ranked = plain(shop, encoder, filters=footwear)
    hits = search.search(Query(SHOES, parse_filters(footwear)), OPTS)
    assert [e["rule"] for e in fired_rules(hits)] == ["lift", "sink"]
    assert ids(hits) == expected_shift(ranked, [lift, sink])[:10]
    assert ids(hits) != ids(ranked)[:10]
    # Pages cut one arranged list.
    pages = [search.search(Query(SHOES, parse_filters(footwear)), replace(OPTS, top_k=5, offset=o))
             for o in (0, 5)]  # fmt: skip
    assert ids(pages[0]) + ids(pages[1]) == ids(hits)


def test_no_rules_equals_a_collection_without_rules(shop, encoder, rules):
    before = {t: ids(plain(shop, encoder, t, SearchOptions())) for t in (SHOES, "black boots")}
    ranked = ids(plain(shop, encoder))
    search = rules(
        {"hide": [ranked[0]], "boost": [{"filter": "price>1000", "by": 50}]},
        {"when": {"contains": "boots"}, "pin": [{"product_id": ranked[9], "position": 1}]},
    )
    off = SearchOptions(rules=False)
    for text, want in before.items():
        assert ids(search.search(Query(text), off)) == want
        assert ids(search.search(Query(text))) != want  # and the rules do fire


def test_rules_survive_reopening_the_collection(shop, encoder, rules):
    ranked = ids(plain(shop, encoder))
    rules({"name": "kept", "pin": [{"product_id": ranked[4], "position": 1}]})
    if shop["name"] == "edge":
        shop["backend"].close()
        shop["backend"] = EdgeBackend(shop["dir"] / "products")
        reopened = shop["backend"]
    else:  # a second connection to the same server
        from shopsearch.store.server import ServerBackend

        reopened = ServerBackend(shop["backend"].client, "products", ":memory:")
    hits = ProductSearch(reopened, encoder).search(Query("gold ring"))
    assert hits[0].product_id == ranked[4]
    assert fired_rules(hits)[0]["rule"] == "kept"


def test_conditions_exact_contains_and_category():
    rule = Rule(0, exact=(("red", "dress"),), pins=(("x", 1),))
    assert rule.fires(Query("Red DRESS!")) and not rule.fires(Query("red dresses"))
    assert rule.fires(Query("red dres", searched="red dress"))  # as searched, typos corrected
    rule = Rule(0, contains=(("casual", "shoes"),), pins=(("x", 1),))
    assert rule.fires(Query("women's casual shoes")) and not rule.fires(Query("shoes casual"))
    rule = Rule(0, categories=("Womens Footwear",), pins=(("x", 1),))
    assert rule.fires(Query("shoes", parse_filters(["category=footwear > womens footwear"])))
    assert rule.fires(Query("shoes", parse_filters(["category in (watches, womens footwear)"])))
    assert not rule.fires(Query("shoes", parse_filters(["category!=womens footwear"])))
    assert not rule.fires(Query("womens footwear"))  # a category is matched by a filter
    both = Rule(0, contains=(("shoes",),), categories=("footwear",), pins=(("x", 1),))
    assert not both.fires(Query("shoes")) and both.fires(
        Query("shoes", parse_filters(["category=footwear"]))
    )


@pytest.mark.parametrize(
    ("item", "field", "problem"),
    [
        ({"pin": [{"product_id": "a", "position": 0}]}, "pin[0].position", "from 1 to 1000"),
        ({"boost": [{"filter": "brnd=x", "by": 2}]}, "boost[0].filter", "unknown field 'brnd'"),
        ({"bury": [{"filter": "price>1", "by": "3"}]}, "bury[0].by", "whole number"),
        ({"hide": "a", "when": {"exact": "!!"}}, "when.exact", "has no words"),
        ({"when": {"contains": "x"}}, "(the rule)", "does nothing"),
        ({"hide": ["a"], "when": {"like": "x"}}, "when.like", "unknown condition"),
        ({"hide": ["a"], "colour": 1}, "colour", "unknown field"),
        ({"hide": [""]}, "hide[0]", "non-empty string"),
    ],
)
def test_a_bad_rule_is_named_with_its_field(item, field, problem):
    good = {"name": "fine", "hide": ["x"]}
    with pytest.raises(InputFileError) as caught:
        RuleSet.from_dict({"rules": [good, {"name": "bad", **item}]}, "rules.json")
    message = str(caught.value)
    assert message.startswith(f"rules.json: rule 1 ('bad') field {field}: "), message
    assert problem in message


def test_passes_filters_as_each_backend_does(shop, encoder):
    """Boosts judge payloads in Python: they must agree with Qdrant's own filtering."""
    search = ProductSearch(shop["backend"], encoder)
    stored = search.backend.payloads(list(search.backend.point_ids()))
    assert len(stored) == 120
    sizes = []
    for expression in [
        ["brand=AW"],
        ["brand!=aw"],
        ["category=footwear > womens footwear"],
        ["category in (ballerinas, Watches)"],
        ["color not in (black, red)"],
        ["price>=499", "price<1000"],
        ["in_stock=true"],
        ["attributes.Ideal For=women"],
        ["attributes.'Outer Material'=Patent Leather"],
    ]:
        conditions = for_collection(parse_filters(expression), search.meta)
        mine = [pid for pid, payload in stored.items() if passes(conditions, payload)]
        # As many as Qdrant counts, and each passes Qdrant's filter: the same products.
        assert search.backend.count(conditions) == len(mine), expression
        by_id = Match("product_id", tuple(stored[p]["product_id"] for p in mine) or ("-",))
        assert search.backend.count([*conditions, by_id]) == len(mine), expression
        sizes.append(len(mine))
    assert sum(0 < n < 120 for n in sizes) >= 7, sizes  # the filters tell products apart


def test_rules_cli_set_show_test_and_a_bad_file(shop, encoder, exported_model, tmp_path, capsys,
                                                monkeypatch):  # fmt: skip
    if shop["name"] != "edge":
        pytest.skip("the CLI's embedded collection")
    monkeypatch.setenv("SHOPSEARCH_DATA_DIR", str(shop["dir"]))
    monkeypatch.setenv("SHOPSEARCH_MODEL_DIR", str(exported_model))
    shop["backend"].close()  # the CLI opens the shard in this process
    try:
        ranked = ids(plain_cli(capsys))
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps({"rules": [{"hide": ["a"]}, {"name": "top", "pin": [
            {"product_id": "a", "position": "first"}]}]}))  # fmt: skip
        assert main(["rules", "set", str(bad), "-c", "products"]) == 2
        err = capsys.readouterr().err
        assert "bad.json: rule 1 ('top') field pin[0].position" in " ".join(err.split())
        good = tmp_path / "rules.json"
        good.write_text(json.dumps({"rules": [
            {"name": "top", "when": {"contains": "shoes"},
             "pin": [{"product_id": ranked[2], "position": 1}]},
            {"boost": [{"filter": "price<300", "by": 2}]}]}))  # fmt: skip
        assert main(["rules", "set", str(good), "-c", "products", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["rules"] == 2
        assert main(["rules", "show", "-c", "products", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["rules"][0]["name"] == "top"
        assert (
            main(["rules", "test", SHOES, "-c", "products", "--json", "--precision", "fp32"]) == 0
        )
        doc = json.loads(capsys.readouterr().out)
        assert [(r["rule"], r["effect"]) for r in doc["rules"]] == [(1, "boost"), ("top", "pin")]
        assert doc["results"][0]["product_id"] == ranked[2]
        assert main(["rules", "test", "gold ring", "-c", "products", "--precision", "fp32"]) == 0
        out = capsys.readouterr().out
        assert "rule 1: boost" in out and "rule top" not in out
        assert main(["query", SHOES, "-c", "products", "--json", "--no-rules",
                     "--precision", "fp32"]) == 0  # fmt: skip
        assert [r["product_id"] for r in json.loads(capsys.readouterr().out)["results"]] == ranked
        assert main(["rules", "set", str(tmp_path / "missing.json"), "-c", "products"]) == 2
        capsys.readouterr()
        empty = tmp_path / "none.json"
        empty.write_text("[]")
        assert main(["rules", "set", str(empty), "-c", "products"]) == 0
    finally:
        shop["backend"] = EdgeBackend(shop["dir"] / "products")


def plain_cli(capsys) -> list:
    assert main(["query", SHOES, "-c", "products", "--json", "--precision", "fp32"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rules"] == [] and doc["sort"] is None

    class Shown:
        def __init__(self, row):
            self.product_id = row["product_id"]

    return [Shown(r) for r in doc["results"]]


def test_pins_hold_their_place_in_a_sorted_list(shop, encoder, rules):
    order = SortOrder("price", descending=True)
    by_price = ids(plain(shop, encoder, options=replace(WIDE, sort=order)))
    search = rules({"name": "lead", "pin": [{"product_id": by_price[5], "position": 1}]})
    hits = search.search(Query(SHOES), replace(OPTS, sort=order))
    assert ids(hits) == [by_price[5], *[p for p in by_price if p != by_price[5]][:9]]
    assert fired_rules(hits)[0]["position"] == 1
