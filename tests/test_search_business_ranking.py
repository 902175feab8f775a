"""Business ranking on both backends, with the real encoder: rank fields kept at ingest,
the formula run by Qdrant (Edge's `Formula`, qdrant-client's `FormulaQuery`), weights that
move popular products up, in-stock first, stored rankings, bad values refused naming the
flag or field, the service's `ranking`, and searches without a ranking left as they were
(shopsearch.search.business_ranking)."""

from __future__ import annotations

import json
from dataclasses import replace

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from qdrant_client import QdrantClient
from search_helpers import QUERIES, _empty_backend, _jsonl, ingest
from service_helpers import service_thread

from shopsearch.cli.app import main
from shopsearch.errors import UsageError
from shopsearch.search.business_ranking import (
    STOCK_PENALTY,
    BusinessRanking,
    parse_boosts,
    resolved,
)
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import FusionMethod, SearchMode
from shopsearch.store.documents import read_meta, write_ranking
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.server import ServerBackend

OPTS = SearchOptions(candidates=40)
FUSIONS = [
    SearchOptions(candidates=40),  # the default: adaptive
    SearchOptions(candidates=40, fusion=FusionMethod.RRF),
    SearchOptions(candidates=40, fusion=FusionMethod.DBSF),
    SearchOptions(candidates=40, mode=SearchMode.DENSE),
    SearchOptions(candidates=40, mode=SearchMode.BM25),
]
POPULAR = BusinessRanking((("popularity", 2.0),))


def ids(hits) -> list[str]:
    return [h.product_id for h in hits]


def popularity(n: int) -> float | None:
    """Every seventh product has none; the others spread from 0 to 990."""
    return None if n % 7 == 3 else float((n * 37) % 100 * 10)


@pytest.fixture(scope="module")
def ranked_catalog(small_catalog, tmp_path_factory):
    """The small catalog with a `popularity` column (some products without one) and every
    fifth product out of stock."""
    rows = pq.read_table(small_catalog).to_pylist()
    for n, row in enumerate(rows):
        row["popularity"] = popularity(n)
        row["in_stock"] = n % 5 != 2
    path = tmp_path_factory.mktemp("ranked") / "ranked.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


@pytest.fixture(scope="module")
def ranked(ranked_catalog, encoder, tmp_path_factory):
    """`ranked_catalog` ingested with --rank-field popularity, on each backend."""
    tmp = tmp_path_factory.mktemp("ranked-backends")
    backends = {
        "edge": EdgeBackend(tmp / "products"),
        "server": ServerBackend(QdrantClient(":memory:"), "products", ":memory:"),
    }
    for backend in backends.values():
        ingest(ranked_catalog, backend, encoder, tmp, rank_fields=["popularity"])
    yield backends
    for backend in backends.values():
        backend.close()


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_without_a_ranking_every_search_is_as_before(edge, server, encoder, backend_name):
    """No rank fields and no weights (or weights of 0): the same requests, so the same hits,
    in every mode and fusion. Edge answers a request alike to the bit; QdrantClient(':memory:')
    sums DBSF's floats in another order from one call to the next (1e-9 apart)."""
    backend = {"edge": edge, "server": server}[backend_name]
    search = ProductSearch(backend, encoder)
    assert search.meta.rank_fields == {}
    off = BusinessRanking((("popularity", 0.0),), over_stored=False)
    sent = []

    def spy(requests):
        sent.extend(requests)
        return type(backend).search_batch(backend, requests)

    for options in FUSIONS:
        assert search._formula(resolved(search, options), 10) is None
        for text in QUERIES:
            plain = search.search(Query(text), options)
            for other in (replace(options, ranking=off), replace(options, rules=False)):
                search.backend = _Spy(backend, spy)
                got = search.search(Query(text), other)
                search.backend = backend
                assert ids(got) == ids(plain), text
                if backend_name == "edge":
                    assert got == plain, text
                else:
                    scores = [h.score for h in plain]
                    assert [h.score for h in got] == pytest.approx(scores, abs=1e-6)
    assert sent and all(r.formula is None for r in sent)


class _Spy:
    """A backend whose searches go through `search_batch`, the rest to `backend`."""

    def __init__(self, backend, search_batch):
        self._backend = backend
        self.search_batch = search_batch

    def __getattr__(self, name):
        return getattr(self._backend, name)


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_rank_fields_are_kept_indexed_with_their_scale(ranked, ranked_catalog, backend_name):
    backend = ranked[backend_name]
    meta = read_meta(backend)
    values = sorted(
        v for n in range(pq.read_metadata(ranked_catalog).num_rows)
        if (v := popularity(n)) is not None and v > 0
    )  # fmt: skip
    median = (values[(len(values) - 1) // 2] + values[len(values) // 2]) / 2
    assert meta.rank_fields == {"popularity": pytest.approx(median)}
    payloads = list(backend.payloads(list(backend.point_ids())).values())
    assert {type(p["popularity"]) for p in payloads if "popularity" in p} == {float}
    assert any("popularity" not in p for p in payloads)  # missing values are left out
    # A float index: a range filter on it is served.
    from shopsearch.store.conditions import Range

    assert backend.count([Range("popularity", gte=500.0)]) > 0


@pytest.mark.parametrize("backend_name", ["edge", "server"])
@pytest.mark.parametrize("fusion", [0, 1, 3], ids=["adaptive", "rrf", "dense"])
def test_the_formula_adds_each_products_saturated_values(ranked, encoder, backend_name, fusion):
    """final = relevance + w * f / (f + k), a missing value counting 0: each hit's score
    with the ranking is its score without plus the term (the default fusion's re-rank sees
    the term in its own units), and the popular products move up."""
    search = ProductSearch(ranked[backend_name], encoder)
    options = replace(FUSIONS[fusion], top_k=40)
    k = search.meta.rank_fields["popularity"]
    moved_up = 0
    for text in QUERIES:
        plain = search.search(Query(text), options)
        boosted = search.search(Query(text), replace(options, ranking=POPULAR))
        before = {h.product_id: h.score for h in plain}
        for hit in boosted[:10]:
            if hit.product_id in before:
                f = hit.payload.get("popularity", 0.0)
                assert hit.score == pytest.approx(
                    before[hit.product_id] + 2 * f / (f + k), abs=1e-4
                )
        mean = [sum(h.payload.get("popularity", 0) for h in hits[:5]) for hits in (plain, boosted)]
        moved_up += mean[1] > mean[0]
    assert moved_up >= 3


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_in_stock_first_with_stable_pages(ranked, encoder, backend_name):
    search = ProductSearch(ranked[backend_name], encoder)
    first = BusinessRanking(in_stock_first=True)
    for text in QUERIES:
        whole = search.search(Query(text), replace(OPTS, top_k=80, ranking=first))
        stock = [h.payload.get("in_stock") for h in whole]
        assert False in stock and stock == sorted(stock, key=lambda s: s is False), text
        # Relevance order within each group, where the ranking is the fused list's (RRF);
        # the default fusion re-ranks its first 50, which are then the first in stock.
        rrf = replace(OPTS, top_k=80, fusion=FusionMethod.RRF)
        plain = ids(search.search(Query(text), rrf))
        stocked = search.search(Query(text), replace(rrf, ranking=first))
        for group in (True, False):
            members = [h.product_id for h in stocked if h.payload.get("in_stock") is group]
            shared = [m for m in members if m in set(plain)]
            assert shared == [p for p in plain if p in set(members)], text
            assert members[: len(shared)] == shared, text  # the deeper ones after them
        assert min(h.score for h in whole) < -STOCK_PENALTY / 2
        pages = [
            search.search(Query(text), replace(OPTS, top_k=10, offset=o, ranking=first))
            for o in (0, 10, 20)
        ]
        # One list, as a search 30 deep reads it (a deeper one reads more candidates).
        thirty = search.search(Query(text), replace(OPTS, top_k=30, ranking=first))
        assert [p for page in pages for p in ids(page)] == ids(thirty), text


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_the_stored_ranking_applies_with_rules_and_hand_weights_override_it(
    ranked, encoder, backend_name
):
    backend = ranked[backend_name]
    search = ProductSearch(backend, encoder)
    text = QUERIES[0]
    plain = search.search(Query(text), OPTS)
    write_ranking(backend, BusinessRanking((("popularity", 2.0),)).to_dict())
    try:
        stored = ProductSearch(backend, encoder)
        want = search.search(Query(text), replace(OPTS, ranking=POPULAR))
        assert ids(stored.search(Query(text), OPTS)) == ids(want) != ids(plain)
        # --no-rules, as eval searches: by relevance alone.
        assert stored.search(Query(text), replace(OPTS, rules=False)) == plain
        # A hand weight of 0 turns the stored one off; rules (none) still apply.
        zero = parse_boosts(["popularity:0"])
        assert stored.search(Query(text), replace(OPTS, ranking=zero)) == plain
    finally:
        write_ranking(backend, BusinessRanking().to_dict())


def test_learned_fusion_adds_the_terms_in_python(ranked, encoder):
    """The learned fusion ranks in Python: the same formula, from the payload."""
    from shopsearch.evaluation.fusion_fit import fit_fusion
    from shopsearch.evaluation.judgments import GradeScheme, JudgedQuery, Judgments
    from shopsearch.store.documents import write_fusion

    backend = ranked["edge"]
    search = ProductSearch(backend, encoder)
    top = {t: ids(search.search(Query(t), OPTS))[:3] for t in QUERIES}
    judged = Judgments(
        {t: JudgedQuery(t, t, {p: 1.0 for p in top[t]}) for t in QUERIES},
        GradeScheme("numeric", 0.0, 1.0),
        "test",
    )
    write_fusion(backend, fit_fusion(search, judged, OPTS, epochs=1).model.to_dict())
    learned = replace(OPTS, fusion=FusionMethod.LEARNED, top_k=20)
    k = search.meta.rank_fields["popularity"]
    for text in QUERIES[:2]:
        before = {h.product_id: h.score for h in search.search(Query(text), learned)}
        for hit in search.search(Query(text), replace(learned, ranking=POPULAR))[:10]:
            if hit.product_id in before:
                f = hit.payload.get("popularity", 0.0)
                assert hit.score == pytest.approx(
                    before[hit.product_id] + 2 * f / (f + k), abs=1e-4
                )


def test_bad_weights_are_refused_naming_the_flag(ranked, encoder):
    with pytest.raises(UsageError, match="--boost-field 'popularity'"):
        parse_boosts(["popularity"])
    with pytest.raises(UsageError, match="--boost-field 'popularity:lots'"):
        parse_boosts(["popularity:lots"])
    with pytest.raises(UsageError, match="from -10 to 10"):
        parse_boosts(["popularity:11"])
    search = ProductSearch(ranked["server"], encoder)
    with pytest.raises(UsageError, match="'margin': not a rank field"):
        search.search(Query("shoes"), replace(OPTS, ranking=parse_boosts(["margin:0.5"])))


def test_the_cli_boosts_and_refuses_bad_flags(
    ranked_catalog, exported_model, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    base = ["--path", str(tmp_path), "-c", "shop", "--model", str(exported_model)]
    assert main(["ingest", str(ranked_catalog), *base, "--rank-field", "popularity"]) == 0
    capsys.readouterr()

    def query(*args: str) -> list[dict]:
        assert main(["query", QUERIES[0], *base, "--json", "-k", "10", *args]) == 0
        return json.loads(capsys.readouterr().out)["results"]

    plain = query()
    boosted = query("--boost-field", "popularity:3", "--in-stock-first")
    assert main(["query", QUERIES[0], *base, "--json", "--boost-field", "popularity:3"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["ranking"] == {"weights": {"popularity": 3.0}, "in_stock_first": False}
    assert [r["product_id"] for r in boosted] != [r["product_id"] for r in plain]
    assert all(r["in_stock"] is not False for r in boosted)
    for bad, named in (
        (["--boost-field", "popularity"], "--boost-field 'popularity'"),
        (["--boost-field", "rating:0.5"], "--boost-field 'rating'"),
    ):
        assert main(["query", QUERIES[0], *base, *bad]) == 2
        assert named in capsys.readouterr().err
    # `ranking set` stores it; `--no-rules` searches without it.
    file = tmp_path / "ranking.json"
    file.write_text(json.dumps({"weights": {"popularity": 3}, "in_stock_first": True}))
    assert main(["ranking", "set", str(file), *base[:4]]) == 0
    assert "popularity:3, in stock first" in capsys.readouterr().out
    assert main(["ranking", "show", *base[:4], "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["weights"] == {"popularity": 3.0} and "popularity" in shown["rank_fields"]
    assert [r["product_id"] for r in query()] == [r["product_id"] for r in boosted]
    assert [r["product_id"] for r in query("--no-rules")] == [r["product_id"] for r in plain]
    file.write_text(json.dumps({"weights": {"margin": 1}}))
    assert main(["ranking", "set", str(file), *base[:4]]) == 2
    assert "'margin'" in capsys.readouterr().err


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_non_numeric_rank_value_rejects_its_row_naming_the_field(encoder, tmp_path, backend_name):
    catalog = _jsonl(
        tmp_path / "c.jsonl",
        [
            {"id": "a", "title": "red shoe", "popularity": 10},
            {"id": "b", "title": "blue shoe", "popularity": "lots"},
            {"id": "c", "title": "green shoe", "popularity": "1,200"},
            {"id": "d", "title": "grey shoe"},
        ],
    )
    backend = _empty_backend(backend_name, tmp_path)
    try:
        report = ingest(catalog, backend, encoder, tmp_path, rank_fields=["popularity"])
        assert (report.upserted, report.rejected) == (3, 1)
        rejects = [
            json.loads(line) for line in (tmp_path / "rejects.jsonl").read_text().splitlines()
        ]
        assert rejects == [
            {"row": 2, "id": "b", "field": "popularity",
             "reason": "popularity 'lots' is not a number"}
        ]  # fmt: skip
        stored = {p["product_id"]: p.get("popularity") for p in backend.payloads(
            list(backend.point_ids())).values()}  # fmt: skip
        assert stored == {"a": 10.0, "c": 1200.0, "d": None}
        assert read_meta(backend).rank_fields == {"popularity": 605.0}
        # Another ingest keeps the collection's rank fields; another set is refused.
        with pytest.raises(UsageError, match="--recreate"):
            ingest(catalog, backend, encoder, tmp_path, rank_fields=["rating"])
    finally:
        backend.close()


def test_the_service_takes_a_ranking_and_refuses_a_bad_one(ranked_catalog, encoder, tmp_path):
    from shopsearch.service.app import create_app
    from shopsearch.service.batching import BatchingEncoder
    from shopsearch.service.live import LiveCollection

    client = QdrantClient(":memory:")
    backend = ServerBackend(client, "products", ":memory:")
    ingest(ranked_catalog, backend, encoder, tmp_path, rank_fields=["popularity"])
    search = ProductSearch(backend, encoder)
    want = search.search(Query(QUERIES[0]), replace(SearchOptions(), ranking=POPULAR))
    plain = search.search(Query(QUERIES[0]), SearchOptions())
    live = LiveCollection(
        lambda: ServerBackend(client, "products", ":memory:"), BatchingEncoder(encoder), "test"
    )
    with service_thread(create_app(live)) as url:
        body = {"q": QUERIES[0], "ranking": ["popularity:2"]}
        got = httpx.post(f"{url}/search", json=body).json()
        assert [r["product_id"] for r in got["results"]] == ids(want) != ids(plain)
        got = httpx.get(f"{url}/search", params={"q": QUERIES[0], "ranking": "popularity:2"}).json()
        assert [r["product_id"] for r in got["results"]] == ids(want)
        got = httpx.post(f"{url}/search", json={"q": QUERIES[0], "in_stock_first": True}).json()
        stock = [r.get("in_stock") for r in got["results"]]
        assert stock == sorted(stock, key=lambda s: s is False)
        for bad, named in ((["popularity"], "ranking 'popularity'"), (["x:1"], "ranking 'x'")):
            answer = httpx.post(f"{url}/search", json={"q": "shoes", "ranking": bad})
            assert answer.status_code == 400 and named in answer.json()["error"], answer.text
    backend.close()


def test_fusion_fit_learns_a_weight_where_popularity_tracks_relevance(ranked, encoder):
    """Judgments that favour popular products among the relevant ones: the fit gives
    popularity a weight above 0 and scores above the search without it; a field that is
    not a rank field is refused."""
    from shopsearch.evaluation.fusion_fit import fit_business
    from shopsearch.evaluation.judgments import GradeScheme, JudgedQuery, Judgments

    search = ProductSearch(ranked["edge"], encoder)
    graded = {}
    for text in QUERIES:
        hits = search.search(Query(text), replace(OPTS, top_k=30, rules=False))
        graded[text] = JudgedQuery(
            text, text, {h.product_id: 1.0 for h in hits if h.payload.get("popularity", 0) >= 700}
        )
    judged = Judgments(graded, GradeScheme("numeric", 0.0, 1.0), "test")
    fitted = fit_business(search, judged, OPTS, ["popularity"])
    assert dict(fitted.ranking.weights)["popularity"] > 0
    assert fitted.ndcg > fitted.baseline
    with pytest.raises(UsageError, match="--business 'margin'"):
        fit_business(search, judged, OPTS, ["margin"])
