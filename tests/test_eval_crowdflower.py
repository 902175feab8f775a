"""`shopsearch eval` on CrowdFlower's shape, end to end on a real Edge collection built with
the exported model: string product ids (16 hex characters), ratings 1..4 with halves, a
catalog with descriptions. Also eval's rough edges: the grade scale (given or
detected), the strata only a collection can tell (lexical match, typo correction), the
collection's coverage of the judged products (a warning, or an error when it holds none)
and the per-query wins and losses."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsearch.cli.app import main
from shopsearch.errors import UsageError
from shopsearch.evaluation.coverage import COVERAGE_WARNING, CoverageError, check_collection
from shopsearch.evaluation.evaluate import System, evaluate
from shopsearch.evaluation.judgments import (
    GradeScheme,
    JudgedQuery,
    Judgments,
    default_relevant,
    detect_scale,
    load_judgments,
    parse_scale,
)
from shopsearch.evaluation.runs import Ranking
from shopsearch.evaluation.strata import by_lexical_match, by_typos

# (title, description): a few products per need, so each query has relevant products,
# near misses and unrelated ones. Descriptions carry words the titles lack ("couch").
PRODUCTS = [
    ("Sony Wireless Noise Cancelling Headphones", "Over-ear headphones, 30 hour battery."),
    ("Bose QuietComfort Earbuds", "True wireless earbuds with noise cancelling."),
    ("Wired Studio Headphones", "Closed-back monitor headphones with a coiled cable."),
    ("Portable Bluetooth Speaker", "Waterproof speaker with deep bass, 12 hour battery."),
    ("JBL Flip Speaker - Blue", "Portable waterproof bluetooth speaker."),
    ("Soundbar with Subwoofer", "TV soundbar, wireless subwoofer, HDMI ARC."),
    ("Modern Leather Couch", "Three-seat couch in brown leather for the living room."),
    ("Grey Fabric Loveseat", "Two-seat loveseat, soft fabric upholstery."),
    ("Reclining Armchair", "Faux leather recliner chair with footrest."),
    ("Oak Coffee Table", "Solid oak table for the living room."),
    ("Men's Running Shoes", "Lightweight road running shoes with a cushioned sole."),
    ("Women's Trail Running Shoes", "Grippy outsole for muddy trails."),
    ("Leather Dress Shoes for Men", "Oxford shoes in polished leather."),
    ("Cotton Running Socks", "Six pairs of breathable socks."),
    ("Chef Knife Set with Block", "Eight stainless steel kitchen knives in a wooden block."),
    ("Santoku Knife", "Seven inch Japanese kitchen knife."),
    ("Bamboo Cutting Board", "Large cutting board for the kitchen."),
    ("Knife Sharpener", "Two-stage sharpener for kitchen knives."),
    ("LED Christmas Lights, 100 Bulbs", "Warm white string lights for the tree."),
    ("Christmas Tree Stand", "Steel stand for trees up to 8 feet."),
    ("Solar Garden Lights", "Eight LED path lights, solar powered."),
    ("Ceramic Table Lamp", "Bedside lamp with a linen shade."),
    ("Stainless Steel Water Bottle", ""),
    ("Yoga Mat, 6 mm", "Non-slip exercise mat with a carry strap."),
]
# (query_id, text, {product index: rating}); ratings are medians of 1..4, x.5 where a
# listing was judged twice. "bluetooth speakr" is corrected to "speaker" (the catalog has
# the word); "sofa" finds its relevant couches by meaning, not by a shared word.
QUERIES = [
    ("101", "wireless headphones", {0: 4, 1: 3.5, 2: 2, 3: 1, 5: 1.5, 13: 1}),
    ("102", "bluetooth speakr", {3: 4, 4: 4, 5: 2, 0: 1.5, 21: 1}),
    ("103", "sofa", {6: 4, 7: 3.5, 8: 2, 9: 1.5, 10: 1}),
    ("104", "running shoes for men", {10: 4, 11: 3, 12: 2, 13: 2, 22: 1}),
    ("105", "kitchen knife set", {14: 4, 15: 3, 17: 2, 16: 1.5, 23: 1}),
    ("106", "led christmas lights", {18: 4, 20: 2, 19: 2, 21: 1.5, 6: 1}),
]


def _pid(i: int) -> str:
    """16 hex characters, as CrowdFlower's; one is all digits with a leading zero, which must
    stay a string end to end (not the number 42)."""
    return "0000000000000042" if i == 7 else hashlib.sha1(str(i).encode()).hexdigest()[:16]


def _judgments(path: Path, queries=QUERIES, ids=_pid) -> Path:
    rows = [
        {
            "query_id": qid,
            "query": text,
            "product_id": ids(i),
            "relevance": float(r),
            "relevance_variance": 0.25 if r % 1 else 0.0,
        }
        for qid, text, grades in queries
        for i, r in grades.items()
    ]
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def shop(exported_model, tmp_path_factory):
    """The catalog ingested as CrowdFlower's is (title + description) into an Edge shard."""
    tmp = tmp_path_factory.mktemp("crowdflower")
    catalog = tmp / "products.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [{"id": _pid(i), "title": t, "description": d} for i, (t, d) in enumerate(PRODUCTS)]
        ),
        catalog,
    )
    where = ["--model", str(exported_model), "--path", str(tmp / "data"), "-c", "cf"]
    code = main(
        [
            "ingest",
            str(catalog),
            "--template",
            "{title}|{description}",
            "--rejects",
            str(tmp / "rejects.jsonl"),
            "--json",
            *where,
        ]
    )
    assert code == 0
    return tmp, where, _judgments(tmp / "judgments-dev.parquet")


def _eval(args: list[str], capsys) -> tuple[int, dict | None, str]:
    code = main(["eval", *args, "--json", "--resamples", "200"])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def _row(doc: dict, system: str, stratum: str = "all", label: str = "all queries") -> dict:
    for row in doc["results"]["full"]:
        if (row["system"], row["stratum"], row["label"]) == (system, stratum, label):
            return row["metrics"]
    raise KeyError((system, stratum, label))


def test_crowdflower_shape_end_to_end(shop, capsys):
    tmp, where, judgments = shop
    modes = ["--mode", "bm25", "--mode", "dense", "--mode", "hybrid", "--exact"]
    report = tmp / "report.html"
    code, doc, err = _eval(
        [
            "-j",
            str(judgments),
            *modes,
            "--report",
            str(report),
            "--save-runs",
            str(tmp / "runs"),
            *where,
        ],
        capsys,
    )
    assert code == 0, err
    assert "warning" not in err.lower()
    # CrowdFlower's protocol, detected from the ratings: gain (r-1)/3, relevant r >= 3
    assert doc["grades"]["scale"] == "1..4" and doc["grades"]["scale_from"] == "ratings"
    assert doc["grades"]["gain"] == "(r - 1) / (4 - 1)" and doc["grades"]["relevant"] == "r >= 3"
    assert doc["collection_coverage"] == 1.0 and doc["warnings"] == []
    # string ids survive: the all-digit id with a leading zero is ranked as written
    runs = [json.loads(line) for line in (tmp / "runs" / "dense.jsonl").read_text().splitlines()]
    ranked = {r["product_id"] for line in runs for r in line["results"]}
    assert "0000000000000042" in ranked and all(len(p) == 16 for p in ranked)
    # nDCG@10 of the dense run, recomputed here from the run with gain (r-1)/3
    grades = {qid: {_pid(i): r for i, r in g.items()} for qid, _, g in QUERIES}
    mine = []
    for line in runs:
        g = grades[line["query_id"]]
        gains = [(g.get(r["product_id"], 1.0) - 1) / 3 for r in line["results"]][:10]
        dcg = sum(x / math.log2(i + 2) for i, x in enumerate(gains))
        ideal = sorted(((r - 1) / 3 for r in g.values()), reverse=True)[:10]
        mine.append(dcg / sum(x / math.log2(i + 2) for i, x in enumerate(ideal)))
    assert _row(doc, "dense")["nDCG@10"]["mean"] == pytest.approx(np.mean(mine), abs=1e-9)
    # strata that need the collection: the typo query was corrected, "sofa" has no exact match
    strata = {
        (r["stratum"], r["label"]): r["metrics"]["nDCG@10"]["n"]
        for r in doc["results"]["full"]
        if r["system"] == "bm25"
    }
    assert strata[("typos", "corrected")] == 1 and strata[("typos", "as typed")] == 5
    assert strata[("lexical", "no exact match")] >= 1 and strata[("lexical", "exact match")] >= 4
    # per-query wins and losses against the baseline (bm25), in JSON and in the report
    # (the hybrid system's name says its fusion, which is the default's to choose)
    assert [s["name"] for s in doc["systems"]][:2] == ["bm25", "dense"]
    assert set(doc["wins_losses"]) == {s["name"] for s in doc["systems"][1:]}
    for entry in doc["wins_losses"].values():
        assert all(w["delta"] > 0 for w in entry["wins"])
        assert all(x["delta"] < 0 for x in entry["losses"])
    page = report.read_text(encoding="utf-8")
    assert "Where each system helps and where it hurts" in page
    assert "Biggest per-query wins and losses" in page and "lexical: no exact match" in page


def test_partial_coverage_is_a_loud_warning(shop, tmp_path, capsys):
    """Judged products the collection lacks: exit 0, but stderr and --json say so."""
    _, where, _ = shop
    extra = [
        (qid, text, {**g, 100 + k: 2.0, 200 + k: 1.0}) for k, (qid, text, g) in enumerate(QUERIES)
    ]
    judgments = _judgments(tmp_path / "partial.parquet", extra)
    code, doc, err = _eval(["-j", str(judgments), "--mode", "bm25", *where], capsys)
    assert code == 0, err
    assert doc["collection_coverage"] < COVERAGE_WARNING
    assert len(doc["warnings"]) == 1 and "partial.parquet" in doc["warnings"][0]
    assert "warning:" in err and "holds 24 of the 36 products judged" in err


def test_a_collection_holding_no_judged_product_is_an_error(shop, tmp_path, capsys):
    """The wrong shop's judgments (Home Depot's integer ids): exit 1 naming the collection
    and the judgments file, before any search, not nDCG@10 0.000."""
    _, where, _ = shop
    judgments = _judgments(tmp_path / "homedepot.parquet", ids=lambda i: str(100001 + i))
    code, _, err = _eval(["-j", str(judgments), "--mode", "bm25", *where], capsys)
    assert code == 1
    assert "collection 'cf'" in err and "homedepot.parquet" in err and "none of the" in err
    assert "Traceback" not in err
    # and a run file that ranks none of the judged products
    run = tmp_path / "run.jsonl"
    run.write_text('{"query_id": "101", "results": [{"product_id": "x", "score": 1}]}\n')
    code, _, err = _eval(["-j", str(judgments), "--run", str(run)], capsys)
    assert code == 1 and "ranks none of the products judged" in err


def test_coverage_threshold():
    with pytest.raises(CoverageError, match="collection c holds none of the 10 products"):
        check_collection(0, 10, "c", "j.parquet", ["p1"])
    assert check_collection(9, 10, "c", "j.parquet") == []  # 90%: not below the threshold
    assert "89.0%" in check_collection(89, 100, "c", "j.parquet")[0]


# -- grade scales ----------------------------------------------------------------------------


def test_grade_scale_rules(tmp_path):
    assert detect_scale([1.0, 2.33, 3.0]) == (1, 3)  # Home Depot's means
    assert detect_scale([1.5, 3.5]) == (1, 4)  # CrowdFlower halves reach out to the scale
    assert [default_relevant(*s) for s in [(1, 3), (1, 4), (0, 3), (1, 5), (0, 1)]] == [
        2.5,
        3.0,
        2.0,
        4.0,
        0.5,
    ]
    assert parse_scale("1..4") == parse_scale("1:4") == (1.0, 4.0)
    for bad in ("4..1", "a..b", "3", "1..inf"):
        with pytest.raises(UsageError):
            parse_scale(bad)
    # a sample without 4s is detected as 1..3; --grades sets the real scale
    path = _judgments(tmp_path / "j.parquet", [("1", "x", {0: 3.0, 1: 1.5})])
    assert load_judgments(path).scheme.hi == 3.0
    given = load_judgments(path, rating_range=(1.0, 4.0)).scheme
    assert (given.hi, given.relevant_level, given.detected) == (4.0, 3.0, False)
    assert given.gain(3.0) == pytest.approx(2 / 3)
    with pytest.raises(UsageError, match=r"outside --grades 1\.\.2"):
        load_judgments(path, rating_range=(1.0, 2.0))


def test_cli_grades_flag(shop, capsys):
    _, where, judgments = shop
    code, doc, err = _eval(
        ["-j", str(judgments), "--mode", "bm25", "--grades", "0..4", *where], capsys
    )
    assert code == 0, err
    assert doc["grades"]["scale_from"] == "given" and doc["grades"]["relevant"] == "r >= 3"
    assert doc["grades"]["gain"] == "(r - 0) / (4 - 0)"


# -- strata and wins/losses, known answers ------------------------------------------------------


def test_lexical_and_typo_strata_known_answers():
    scheme = GradeScheme("numeric", lo=1, hi=4)
    j = Judgments(
        {
            "a": JudgedQuery("a", "red drill", {"p1": 4.0, "p2": 1.0}),
            "b": JudgedQuery("b", "sofa", {"p3": 3.0, "p4": 1.0}),
            "c": JudgedQuery("c", "saw", {"p5": 2.0}),  # nothing relevant: no label
            "d": JudgedQuery("d", "drll", {"p1": 3.5}),
        },
        scheme,
    )
    terms = {"p1": {1, 2, 3}, "p2": {1, 2}, "p3": {7}, "p4": {8}, "p5": {9}}
    queries = {"a": {1, 2}, "b": {8}, "c": {9}, "d": {2}}  # b's term is only in irrelevant p4
    assert by_lexical_match(j, queries, terms) == {
        "a": "exact match",
        "b": "no exact match",
        "d": "exact match",
    }
    searched = {"a": "red drill", "b": "sofa", "c": "saw", "d": "drill"}
    assert by_typos(j, searched) == {
        "a": "as typed",
        "b": "as typed",
        "c": "as typed",
        "d": "corrected",
    }


def test_wins_and_losses_are_the_largest_deltas_each_way():
    scheme = GradeScheme("numeric", lo=0, hi=1)
    queries = {f"q{i}": JudgedQuery(f"q{i}", f"query {i}", {"p": 1.0, "n": 0.0}) for i in range(6)}
    j = Judgments(queries, scheme)
    base = {q: Ranking(q, ("n", "p"), (2.0, 1.0)) for q in queries}  # nDCG@10 = 1/log2(3)
    other = dict(base)
    other["q1"] = other["q4"] = Ranking("q", ("p", "n"), (2.0, 1.0))  # perfect: a win
    other["q2"] = Ranking("q", ("n",), (2.0,))  # p not retrieved: 0, a loss
    ev = evaluate(j, [System("base", base), System("new", other)], resamples=200)
    wins, losses = ev.wins_losses(ev.systems[1], "full", "nDCG@10")
    assert [d.query_id for d in wins] == ["q1", "q4"] and [d.text for d in losses] == ["query 2"]
    assert losses[0].delta == pytest.approx(-1 / math.log2(3))
