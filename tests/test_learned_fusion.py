"""Learned fusion: its features and model on hand-made inputs, then fit and searched end to
end on real components (an Edge shard, QdrantClient(':memory:'), the real exported model)."""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient

from shopsearch.cli.app import main
from shopsearch.encoders.onnx_encoder import OnnxEncoder
from shopsearch.errors import CollectionError, UsageError
from shopsearch.evaluation.fusion_fit import FusionFit, fit_fusion
from shopsearch.evaluation.judgments import load_judgments
from shopsearch.ingest.pipeline import ingest_catalog
from shopsearch.ingest.readers import CatalogReader
from shopsearch.search.filters import parse_filters
from shopsearch.search.learned_fusion import FEATURES, FORMAT, FusionModel, fit, union_features
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import FusionMethod, Hit, SearchMode, SearchRequest, SparseVec
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.documents import read_fusion, read_meta, read_vocabulary, write_fusion
from shopsearch.store.edge import FUSION_FILE, EdgeBackend
from shopsearch.store.server import ServerBackend

COL = {name: i for i, name in enumerate(FEATURES)}
LEARNED = SearchOptions(fusion=FusionMethod.LEARNED)
Opener = Callable[[Path], EdgeBackend]

# -- features on hand-made hits -----------------------------------------------------------


def test_union_features_hand_computed() -> None:
    dense = [
        Hit("a", 0.9, {"title": "a"}, terms=(1, 2, 3, 4)),
        Hit("b", 0.7, {"title": "b"}, terms=(2, 5)),
        Hit("c", 0.5, {"title": "c"}, terms=(9,)),
    ]
    bm25 = [Hit("b", 8.0, {"title": "b"}, terms=(2, 5)), Hit("d", 4.0, {}, terms=(1, 3, 7))]
    hits, x = union_features([1, 2, 3], dense, bm25, depth=10)

    # dense order first, then BM25's others; a product in both lists appears once
    assert [h.point_id for h in hits] == ["a", "b", "c", "d"]
    assert hits[1] is dense[1]
    assert x.shape == (4, len(FEATURES)) and x.dtype == np.float32

    # dense scores 0.9, 0.7, 0.5: mean 0.7, population std sqrt(0.08 / 3)
    zd = 0.2 / math.sqrt(0.08 / 3)
    # BM25 scores 8, 4: mean 6, std 2 -> z 1, -1
    missing = math.log1p(10)
    expected = {
        # dense z, dense log rank, dense missing, bm25 z, bm25 log rank, bm25 missing,
        # bm25 / best, dense cosine, query terms, covered, product terms
        "a": [zd, 0.0, 0, -2.0, missing, 1, 0.0, 0.9, 3, 1.0, 4],
        "b": [0.0, math.log1p(1), 0, 1.0, 0.0, 0, 1.0, 0.7, 3, 1 / 3, 2],
        "c": [-zd, math.log1p(2), 0, -2.0, missing, 1, 0.0, 0.5, 3, 0.0, 1],
        # missing from the dense list: its worst rank, a z-score 1 below its worst, and a
        # cosine 0.05 below its worst
        "d": [-zd - 1, missing, 1, -1.0, math.log1p(1), 0, 0.5, 0.45, 3, 2 / 3, 3],
    }
    for i, pid in enumerate("abcd"):
        assert x[i].tolist() == pytest.approx(expected[pid], abs=1e-6), pid
    # the missing-from-one-list z-score is below every z-score that list has
    assert x[:, COL["dense z-score"]].min() == x[3, COL["dense z-score"]]
    assert x[3, COL["dense z-score"]] < x[:3, COL["dense z-score"]].min()


def test_union_features_of_empty_and_single_lists_are_finite() -> None:
    hits, x = union_features([], [], [], depth=100)
    assert hits == [] and x.shape == (0, len(FEATURES))

    dense = [Hit("a", 0.6, terms=(1, 2)), Hit("b", 0.4, terms=())]
    hits, x = union_features([], dense, [], depth=100)  # a query with no BM25 terms
    assert [h.point_id for h in hits] == ["a", "b"] and np.isfinite(x).all()
    assert x[:, COL["bm25 missing"]].tolist() == [1, 1]
    assert x[:, COL["bm25 z-score"]].tolist() == [-1, -1]
    assert x[:, COL["bm25 log rank"]].tolist() == pytest.approx([math.log1p(100)] * 2)
    assert x[:, COL["bm25 / best bm25"]].tolist() == [0, 0]
    assert x[:, COL["query terms"]].tolist() == [0, 0]
    assert x[:, COL["query terms covered"]].tolist() == [0, 0]
    assert x[:, COL["product terms"]].tolist() == [2, 0]

    bm25 = [Hit("c", 3.0, terms=(5,))]  # one hit: no spread, z-score 0
    hits, x = union_features([5, 6], [], bm25, depth=20)
    assert [h.point_id for h in hits] == ["c"] and np.isfinite(x).all()
    assert x[0].tolist() == pytest.approx(
        [-1, math.log1p(20), 1, 0, 0, 0, 1, 0, 2, 0.5, 1], abs=1e-6
    )


# -- the model: storage, errors, fit ------------------------------------------------------


def _small_model(seed: int = 0) -> FusionModel:
    rng = np.random.default_rng(seed)
    lists = [rng.normal(size=(20, len(FEATURES))).astype(np.float32) for _ in range(10)]
    gains = [(x[:, 0] > 0).astype(np.float32) for x in lists]
    fitted_on = {"encoder": "e", "bm25": {"k": 0.3}}
    return fit(
        lists, gains, depth=30, fitted_on=fitted_on, members=2, hidden=4, epochs=2, seed=seed
    )


def test_model_round_trips_through_json_and_scores_the_same() -> None:
    model = _small_model()
    stored = json.loads(json.dumps(model.to_dict()))
    assert stored["format"] == FORMAT and stored["features"] == list(FEATURES)
    again = FusionModel.from_dict(stored, "somewhere")
    assert again.depth == 30 and again.fitted_on == {"encoder": "e", "bm25": {"k": 0.3}}
    x = np.random.default_rng(5).normal(size=(50, len(FEATURES))).astype(np.float32)
    assert np.array_equal(again.score(x), model.score(x))
    assert again.score(x).shape == (50,)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: d.update(format="shopsearch-learned-fusion/0"), "of another format"),
        (lambda d: d.pop("format"), "of another format"),
        (lambda d: d.update(features=d["features"][:-1]), "of another format"),
        (lambda d: d.pop("w1"), r"damaged learned fusion \('w1'\)"),
        (lambda d: d.update(w1=[row[:-1] for row in d["w1"]]), "wrong shape"),
        (lambda d: d.update(mean=d["mean"][:-1]), "wrong shape"),
        (lambda d: d.pop("fitted_on"), "damaged learned fusion"),
        (lambda d: d.update(depth="deep"), "damaged learned fusion"),
        (lambda d: d.update(b2=None), "damaged learned fusion"),
    ],
)
def test_a_model_of_another_format_or_damaged_is_a_collection_error_naming_where(
    damage: Callable[[dict[str, Any]], Any], message: str
) -> None:
    stored = _small_model().to_dict()
    damage(stored)
    with pytest.raises(CollectionError, match=message) as info:
        FusionModel.from_dict(stored, "/data/shop/fusion.json")
    assert str(info.value).startswith("/data/shop/fusion.json holds")


def _ranks(a: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(a)).astype(np.float64)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _lists(rng: np.random.Generator, queries: int) -> list[np.ndarray]:
    """Candidate lists of 10-60 rows, "product terms" on a scale of its own."""
    lists = []
    for _ in range(queries):
        x = rng.normal(size=(int(rng.integers(10, 61)), len(FEATURES))).astype(np.float32)
        x[:, COL["product terms"]] = np.round(x[:, COL["product terms"]] * 4 + 20)
        lists.append(x)
    return lists


def test_fit_orders_lists_by_a_gain_that_rises_with_one_feature_and_is_seeded() -> None:
    rng = np.random.default_rng(11)
    lists = _lists(rng, 200)
    # Graded like judgments: 0 for most candidates, more the higher one feature is.
    gains = [np.clip(np.round(x[:, COL["bm25 z-score"]]), 0, 2) / 2 for x in lists]

    def fitted(seed: int) -> FusionModel:
        return fit(lists, gains, depth=100, fitted_on={}, members=2, hidden=16, seed=seed)

    model = fitted(seed=3)
    held = np.concatenate(_lists(rng, 20))
    scores = model.score(held)
    assert _spearman(scores, held[:, COL["bm25 z-score"]]) > 0.9
    assert abs(_spearman(scores, held[:, COL["dense z-score"]])) < 0.1
    assert model.b2 == 0.0  # a list's softmax ignores a bias

    again = fitted(seed=3)
    assert np.array_equal(again.score(held), scores)
    assert again.to_dict() == model.to_dict()
    assert not np.array_equal(fitted(seed=4).score(held), scores)


def test_fit_ignores_a_list_without_a_gain() -> None:
    """A query whose candidates all have gain 0 has no order to learn. Here that list copies
    every row, so the features' scaling (which sees all rows) stays the same too."""
    rng = np.random.default_rng(2)
    lists = _lists(rng, 40)
    gains = [(x[:, COL["bm25 z-score"]] > 1).astype(np.float32) for x in lists]
    every_row = np.concatenate(lists)
    args = {"depth": 50, "fitted_on": {}, "members": 1, "hidden": 4, "epochs": 1, "seed": 0}
    base = fit(lists, gains, **args)
    more = fit([*lists, every_row], [*gains, np.zeros(len(every_row), np.float32)], **args)
    # (equal up to float32 rounding of the scaling, which training amplifies a little)
    assert np.allclose(more.score(every_row), base.score(every_row), atol=0.02)


def test_fit_refuses_candidates_without_any_gain() -> None:
    x = np.zeros((5, len(FEATURES)), np.float32)
    with pytest.raises(ValueError, match="no candidates"):
        fit([], [], depth=10, fitted_on={})
    with pytest.raises(ValueError, match="no judged product with a gain"):
        fit([x], [np.zeros(5, np.float32)], depth=10, fitted_on={})


# -- end to end on Edge ------------------------------------------------------------------

# (query, words of a relevant title, category of a relevant product)
JUDGED = [
    ("black boots", ("boots",), "womens footwear"),
    ("gold ring", ("ring",), "rings"),
    ("women's casual top", ("top",), "womens clothing"),
    ("wrist watch", ("watch",), "wrist watches"),
    ("casual shoes for women", ("shoes", "casual"), "casual shoes"),
    ("coffee mug", ("mug",), "coffee mugs"),
]


@pytest.fixture(scope="module")
def encoder(exported_model: Path) -> OnnxEncoder:
    return OnnxEncoder.load(exported_model, precision="fp32")


@pytest.fixture(scope="module")
def shop(
    small_catalog: Path, encoder: OnnxEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The small catalog in an Edge collection (closed, never fitted): copy it to change it."""
    tmp = tmp_path_factory.mktemp("shop")
    backend = EdgeBackend(tmp / "data" / "products")
    try:
        ingest_catalog(
            CatalogReader(small_catalog),
            backend,
            encoder,
            rejects_path=tmp / "rejects.jsonl",
            batch_size=32,
        )
    finally:
        backend.close()
    return tmp / "data" / "products"


@pytest.fixture(scope="module")
def judgments_path(small_catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every other product of the catalog graded for each of JUDGED's queries: 3 when both its
    title and its category match, 2 when one does, else 1 (gain 0)."""
    rows = pq.read_table(small_catalog).to_pylist()
    lines = []
    for n, (text, words, category) in enumerate(JUDGED):
        for r in rows[::2]:
            title_match = any(w in r["title"].lower() for w in words)
            category_match = category in (r["category"] or [])
            lines.append(
                {
                    "query_id": f"q{n}",
                    "query": text,
                    "product_id": r["id"],
                    "relevance": 1 + int(title_match) + int(category_match),
                }
            )
    path = tmp_path_factory.mktemp("judged") / "judgments.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fitted(
    shop: Path,
    encoder: OnnxEncoder,
    judgments_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, FusionFit]:
    """A copy of `shop` with a learned fusion fit on `judgments_path` (library path)."""
    directory = tmp_path_factory.mktemp("fitted") / "data" / "products"
    shutil.copytree(shop, directory)
    backend = EdgeBackend(directory)
    try:
        search = ProductSearch(backend, encoder)
        # ~600 rows are one mini-batch (1024): the fit's MIN_STEPS, not its 8 epochs, train it.
        result = fit_fusion(search, load_judgments(judgments_path), SearchOptions())
        write_fusion(backend, result.model.to_dict())
    finally:
        backend.close()
    return directory, result


@pytest.fixture
def opened() -> Iterator[Opener]:
    """Opens Edge collections for one test and closes them after it."""
    backends: list[EdgeBackend] = []

    def open_(directory: Path) -> EdgeBackend:
        backends.append(EdgeBackend(directory))
        return backends[-1]

    yield open_
    for backend in backends:
        backend.close()


def _gains(judgments_path: Path) -> dict[str, dict[str, float]]:
    judged = load_judgments(judgments_path)
    return {
        q.text: {pid: judged.scheme.gain(g) for pid, g in q.grades.items()}
        for q in judged.queries.values()
    }


def test_fit_fusion_fits_each_judged_querys_union_and_pins_the_collection(
    fitted: tuple[Path, FusionFit], encoder: OnnxEncoder, judgments_path: Path, opened: Opener
) -> None:
    directory, result = fitted
    backend = opened(directory)
    search = ProductSearch(backend, encoder)
    gains = _gains(judgments_path)
    unions = search.learned_candidates([Query(t) for t in gains], SearchOptions())
    assert result.queries == len(JUDGED)
    assert result.candidates == sum(len(hits) for hits, _ in unions)
    assert result.model.fitted_on["candidates"] == result.candidates
    found = sum(
        sum(1 for h in hits if g.get(h.product_id, 0) > 0)
        for (hits, _), g in zip(unions, gains.values(), strict=True)
    )
    wanted = sum(1 for g in gains.values() for v in g.values() if v > 0)
    assert 0 < result.judged_found == found <= result.judged == wanted

    model = result.model
    assert model.depth == SearchOptions().candidates
    assert model.fitted_on["encoder"] == search.meta.encoder.fingerprint
    assert model.fitted_on["bm25"] == search.meta.bm25
    assert model.fitted_on["queries"] == len(JUDGED)
    assert model.w1.shape == (len(FEATURES), 6 * 32)  # six members of 32 units, side by side
    assert read_fusion(backend) == json.loads(json.dumps(model.to_dict()))

    # on the queries it was fit on, judged relevant candidates score above the others
    for (hits, x), g in zip(unions, gains.values(), strict=True):
        scores = model.score(x)
        relevant = np.array([g.get(h.product_id, 0) > 0 for h in hits])
        if relevant.any() and not relevant.all():
            assert scores[relevant].mean() > scores[~relevant].mean()


def test_learned_search_ranks_the_union_of_both_lists_by_the_model(
    fitted: tuple[Path, FusionFit], encoder: OnnxEncoder, opened: Opener
) -> None:
    directory, result = fitted
    search = ProductSearch(opened(directory), encoder)
    options = SearchOptions(fusion=FusionMethod.LEARNED, top_k=5)
    for text in ("black boots", "gold ring", "the"):  # "the": no BM25 term at all
        hits = search.search(Query(text), options)
        assert 0 < len(hits) <= 5, text
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
        assert all(h.payload.get("title") and h.payload.get("product_id") for h in hits)
        assert all(h.terms == () for h in hits)  # term ids are the model's, not the caller's
        union, x = search.learned_candidates([Query(text)], SearchOptions())[0]
        expected = result.model.score(x)
        order = np.argsort(-expected, kind="stable")[:5]
        assert [h.point_id for h in hits] == [union[j].point_id for j in order], text
        assert scores == pytest.approx(expected[order].tolist(), abs=1e-5)
        if text == "the":
            assert np.isfinite(x).all() and x[:, COL["query terms"]].max() == 0
            assert x[:, COL["bm25 missing"]].min() == 1  # every candidate is dense-only

    # a batch ranks each query as it would alone
    batch = search.search_batch([Query("black boots"), Query("gold ring")], options)
    assert batch == [search.search(Query(t), options) for t in ("black boots", "gold ring")]

    # top_k beyond the union returns all of it, each product once; each retriever is searched
    # as deep as the fit did, whatever --candidates says
    union, _ = search.learned_candidates([Query("boots")], SearchOptions())[0]
    assert result.model.depth == SearchOptions().candidates
    everything = search.search(
        Query("boots"), SearchOptions(fusion=FusionMethod.LEARNED, top_k=1000, candidates=10)
    )
    assert sorted(h.point_id for h in everything) == sorted(h.point_id for h in union)
    assert len(everything) > 20

    # an offset pages through the same ranking, and a page past the union is empty
    page = search.search(Query("boots"), replace(options, offset=5))
    assert page == search.search(Query("boots"), replace(options, top_k=10))[5:]
    assert search.search(Query("boots"), replace(options, offset=len(union))) == []

    # filters apply to both retrievers
    cheap = search.search(Query("boots", parse_filters(["price<=1000"])), options)
    assert cheap and all(h.payload["price"] <= 1000 for h in cheap)

    # the page's payloads are read after ranking: whole, or cut to the asked fields (plus
    # the family fields when collapsing), as any other search returns them
    hits = search.search(Query("black boots"), options)
    assert [h.payload for h in hits] == [
        search.backend.payloads([h.point_id])[h.point_id] for h in hits
    ]
    titled = search.search(Query("black boots"), replace(options, payload_fields=["title"]))
    assert [h.point_id for h in titled] == [h.point_id for h in hits]
    family = {"parent_id", "in_stock"}  # carried for collapsing variants
    assert all(set(h.payload) - family == {"title", "product_id"} for h in titled)
    bare = replace(options, payload_fields=["product_id"], collapse_variants=False)
    assert all(set(h.payload) == {"product_id"} for h in search.search(Query("boots"), bare))


def test_learned_search_of_a_collection_without_families_carries_no_candidate_payload(
    fitted: tuple[Path, FusionFit], encoder: OnnxEncoder, opened: Opener
) -> None:
    """Recorded without families, the candidates come without payloads and nothing is
    collapsed; the pages are those a collection that may have families (variants
    unrecorded) gets, payloads included."""
    directory, _ = fitted
    search = ProductSearch(opened(directory), encoder)
    assert search.meta.variants is False
    maybe = ProductSearch(search.backend, encoder)
    maybe.meta = replace(search.meta, variants=None)
    learned = SearchOptions(fusion=FusionMethod.LEARNED, top_k=8)
    for options in (learned, replace(learned, payload_fields=["title"])):
        for text in ("black boots", "gold ring", "analog watch for men"):
            hits = search.search(Query(text), options)
            assert hits == maybe.search(Query(text), options), text
            assert all(h.payload.get("title") for h in hits)
    # what the search asks for its candidates there: no field, hence no payload
    bare = replace(learned, payload_fields=[], collapse_variants=False)
    union, _ = search.learned_candidates([Query("boots")], bare)[0]
    assert union and all(h.payload == {} for h in union)


def test_cli_fits_then_queries_with_the_learned_fusion(
    shop: Path,
    encoder: OnnxEncoder,  # loads onnxruntime first: the CLI then encodes in-process
    exported_model: Path,
    judgments_path: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    shutil.copytree(shop, tmp_path / "data" / "cli")
    args = ["--model", str(exported_model), "--path", str(tmp_path / "data"), "-c", "cli"]

    # no model yet: a usage error (exit 2) naming the command that fits one
    assert main(["query", "black boots", "--fusion", "learned", "--json", *args]) == 2
    captured = capsys.readouterr()
    assert "has no learned fusion" in captured.err and "shopsearch fusion fit" in captured.err
    assert captured.out == ""
    backend = EdgeBackend(tmp_path / "data" / "cli")
    try:
        with pytest.raises(UsageError, match="shopsearch fusion fit"):
            ProductSearch(backend, encoder).search(Query("black boots"), LEARNED)
    finally:
        backend.close()
    info_args = ["info", "--json", "--path", str(tmp_path / "data"), "-c", "cli"]
    assert main(info_args) == 0
    assert json.loads(capsys.readouterr().out)["learned_fusion"] is None

    fit_args = ["fusion", "fit", "-j", str(judgments_path), "--epochs", "3", "--json"]
    assert main([*fit_args, *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["collection"] == str(tmp_path / "data" / "cli")
    assert summary["queries"] == len(JUDGED) and summary["candidates"] > 0
    assert 0 < summary["gained_found"] <= summary["gained"]
    stored = json.loads((tmp_path / "data" / "cli" / FUSION_FILE).read_text(encoding="utf-8"))
    assert stored["format"] == FORMAT and stored["fitted_on"]["epochs"] == 3
    assert stored["fitted_on"]["judgments"] == str(judgments_path)
    assert main(info_args) == 0
    assert json.loads(capsys.readouterr().out)["learned_fusion"] == {
        "judgments": str(judgments_path),
        "queries": len(JUDGED),
        "candidates": 100,
        "usable": True,
    }

    assert main(["query", "black boots", "--fusion", "learned", "-k", "5", "--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["fusion"] == "learned" and doc["bm25_weight"] is None
    assert 0 < len(doc["results"]) <= 5
    scores = [r["score"] for r in doc["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(r["title"] and r["product_id"] for r in doc["results"])


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda d: d["fitted_on"].update(encoder="0" * 64), "fit for another encoder.*fusion fit"),
        (lambda d: d["fitted_on"].pop("encoder"), "fit for another encoder"),
        (lambda d: d["fitted_on"]["bm25"].update(k=1.2), "or BM25 setting.*fusion fit"),
        (lambda d: d.update(format="shopsearch-learned-fusion/0"), "another format.*fusion fit"),
        (lambda d: d.pop("w2"), r"holds a damaged learned fusion \('w2'\)"),
    ],
)
def test_a_fusion_fit_for_something_else_is_refused_and_other_fusions_still_run(
    fitted: tuple[Path, FusionFit],
    encoder: OnnxEncoder,
    tmp_path: Path,
    opened: Opener,
    tamper: Callable[[dict[str, Any]], Any],
    message: str,
) -> None:
    directory = tmp_path / "products"
    shutil.copytree(fitted[0], directory)
    backend = opened(directory)
    stored = read_fusion(backend)
    assert stored is not None
    tamper(stored)
    write_fusion(backend, stored)
    search = ProductSearch(backend, encoder)
    with pytest.raises(CollectionError, match=message) as info:
        search.search(Query("black boots"), LEARNED)
    assert str(directory) in str(info.value)  # the collection it was read from
    assert search.search(Query("black boots"), SearchOptions(fusion=FusionMethod.DBSF))
    shown = search.fusion_info()  # what `shopsearch info` shows
    assert shown is not None and not shown["usable"] and shown["problem"] == str(info.value)


def test_an_unreadable_fusion_file_exits_1_naming_it(
    fitted: tuple[Path, FusionFit],
    encoder: OnnxEncoder,
    exported_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory = tmp_path / "data" / "products"
    shutil.copytree(fitted[0], directory)
    (directory / FUSION_FILE).write_text('{"format": "shopsearch-learned', encoding="utf-8")
    args = ["--model", str(exported_model), "--path", str(tmp_path / "data")]
    assert main(["query", "black boots", "--fusion", "learned", "--json", *args]) == 1
    err = capsys.readouterr().err
    assert f"cannot read {directory / FUSION_FILE}" in err and "Traceback" not in err
    # `shopsearch info` still shows the collection, with the fusion's problem
    assert main(["info", "--json", "--path", str(tmp_path / "data")]) == 0
    shown = json.loads(capsys.readouterr().out)["learned_fusion"]
    assert not shown["usable"] and f"cannot read {directory / FUSION_FILE}" in shown["problem"]


def test_eval_names_the_learned_system_hybrid_learned(
    fitted: tuple[Path, FusionFit],
    encoder: OnnxEncoder,
    exported_model: Path,
    judgments_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    directory, _ = fitted
    args = ["--model", str(exported_model), "--path", str(directory.parent), "-c", directory.name]
    modes = ["--mode", "hybrid", "--fusion", "learned", "--mode", "bm25"]
    assert (
        main(["eval", "-j", str(judgments_path), *modes, "--resamples", "100", "--json", *args])
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    assert [s["name"] for s in doc["systems"]] == ["hybrid-learned", "bm25"]
    assert "fusion=learned" in doc["systems"][0]["source"]
    rows = {(r["label"], r["system"]): r["metrics"] for r in doc["results"]["full"]}
    ndcg = rows[("all queries", "hybrid-learned")]["nDCG@10"]
    assert ndcg["n"] == len(JUDGED) and 0 < ndcg["mean"] <= 1


# -- the server backend ------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(
    small_catalog: Path, encoder: OnnxEncoder, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerBackend]:
    backend = ServerBackend(QdrantClient(":memory:"), "products", ":memory:")
    ingest_catalog(
        CatalogReader(small_catalog),
        backend,
        encoder,
        rejects_path=tmp_path_factory.mktemp("server") / "rejects.jsonl",
        batch_size=32,
    )
    yield backend
    backend.close()


def test_the_server_stores_the_fusion_beside_the_collections_metadata(
    server: ServerBackend, fitted: tuple[Path, FusionFit], encoder: OnnxEncoder
) -> None:
    assert read_fusion(server) is None
    with pytest.raises(UsageError, match="has no learned fusion"):
        ProductSearch(server, encoder).search(Query("black boots"), LEARNED)
    meta, words = read_meta(server), read_vocabulary(server)
    model = fitted[1].model.to_dict()
    write_fusion(server, {**model, "depth": 7})
    write_fusion(server, model)  # a refit replaces the model
    assert read_fusion(server) == model
    assert read_meta(server) == meta and read_vocabulary(server) == words  # kept
    # the model fit on the Edge copy of the catalog fits this one: same encoder and BM25
    hits = ProductSearch(server, encoder).search(Query("black boots"), LEARNED)
    assert 0 < len(hits) <= 10
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# BM25 candidate lists of these have no tied scores (checked in the test), so both engines
# rank every candidate alike.
TIE_FREE_QUERIES = ["stainless steel bottle", "canvas sneakers", "wrist watch"]


def test_edge_and_server_give_the_learned_fusion_the_same_candidates(
    server: ServerBackend, fitted: tuple[Path, FusionFit], encoder: OnnxEncoder, opened: Opener
) -> None:
    edge = ProductSearch(opened(fitted[0]), encoder)
    other = ProductSearch(server, encoder)
    queries = [Query(t) for t in TIE_FREE_QUERIES]
    a = edge.learned_candidates(queries, SearchOptions())
    b = other.learned_candidates(queries, SearchOptions())
    for text, (hits_a, x_a), (hits_b, x_b) in zip(TIE_FREE_QUERIES, a, b, strict=True):
        bm25 = x_a[:, COL["bm25 / best bm25"]][x_a[:, COL["bm25 missing"]] == 0]
        assert len(bm25) > 1 and len(np.unique(bm25.round(5))) == len(bm25), text
        assert [h.point_id for h in hits_a] == [h.point_id for h in hits_b], text
        assert x_a == pytest.approx(x_b, abs=1e-4), text
        assert [sorted(h.terms) for h in hits_a] == [sorted(h.terms) for h in hits_b]


@pytest.mark.parametrize("mode", [SearchMode.DENSE, SearchMode.BM25])
def test_both_backends_return_each_hits_bm25_terms_only_when_asked(
    server: ServerBackend,
    fitted: tuple[Path, FusionFit],
    encoder: OnnxEncoder,
    opened: Opener,
    mode: SearchMode,
) -> None:
    edge = opened(fitted[0])
    meta = read_meta(server)
    assert meta is not None
    text = "black leather boots"
    vec = Bm25Settings.from_dict(meta.bm25).model().embed_query(text)
    query_terms = set(vec.indices)
    request = SearchRequest(
        dense=encoder.encode_queries([text])[0],
        sparse=SparseVec(list(vec.indices), list(vec.values)),
        mode=mode,
        limit=15,
        with_terms=True,
    )
    terms: dict[str, dict[str, tuple[int, ...]]] = {}
    for name, backend in (("edge", edge), ("server", server)):
        (hits,) = backend.search_batch([request])
        assert len(hits) == 15 and all(h.terms for h in hits), name
        assert all(len(set(h.terms)) == len(h.terms) for h in hits)
        if mode is SearchMode.BM25:  # a BM25 hit shares a word with the query
            assert all(query_terms & set(h.terms) for h in hits), name
        terms[name] = {h.point_id: tuple(sorted(h.terms)) for h in hits}
        (plain,) = backend.search_batch([replace(request, with_terms=False)])
        assert [h.point_id for h in plain] == [h.point_id for h in hits]
        assert all(h.terms == () for h in plain), name
    shared = terms["edge"].keys() & terms["server"].keys()
    assert len(shared) >= 10
    assert {p: terms["edge"][p] for p in shared} == {p: terms["server"][p] for p in shared}
