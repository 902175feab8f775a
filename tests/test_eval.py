"""`shopsearch eval`: metrics against an independent implementation (ir-measures, i.e.
trec_eval), known answers for order accuracy, ties, strata and significance, and the CLI end
to end on a real Edge collection built with the exported model."""

import itertools
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import ir_measures
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ir_measures import RR, R, nDCG

from shopsearch.cli.app import main
from shopsearch.errors import InputFileError
from shopsearch.evaluation.calibration import assess
from shopsearch.evaluation.evaluate import ALL, System, evaluate
from shopsearch.evaluation.judgments import (
    GradeScheme,
    JudgedQuery,
    Judgments,
    load_judgments,
    whole_grades_of,
)
from shopsearch.evaluation.metrics import (
    MetricConfig,
    ndcg,
    order_accuracy,
    query_metrics,
    reciprocal_rank,
)
from shopsearch.evaluation.runs import Ranking, read_run, write_run
from shopsearch.evaluation.significance import compare
from shopsearch.evaluation.strata import by_category, by_frequency, length_label
from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE

DEMO = Path(__file__).resolve().parents[1] / "examples" / "catalog.parquet"

# -- metrics vs ir-measures (pytrec_eval / trec_eval) ------------------------------------


def _fixture(seed: int, labels: list, n_queries: int = 40):
    """Random judgments and a run with distinct, descending scores; every query has at
    least one relevant product so nDCG/Recall/RR are defined for both implementations."""
    rng = np.random.default_rng(seed)
    grades: dict[str, dict[str, object]] = {}
    run: dict[str, Ranking] = {}
    for q in range(n_queries):
        qid = f"q{q}"
        judged = rng.choice(60, size=int(rng.integers(3, 15)), replace=False)
        g = {f"d{d}": labels[int(rng.integers(0, len(labels)))] for d in judged}
        g[f"d{judged[0]}"] = labels[-1]  # the best grade, at least once
        grades[qid] = g
        retrieved = rng.choice(60, size=int(rng.integers(5, 40)), replace=False)
        scores = np.sort(rng.random(retrieved.size))[::-1] + np.arange(retrieved.size)[::-1]
        run[qid] = Ranking(qid, tuple(f"d{d}" for d in retrieved), tuple(float(s) for s in scores))
    return grades, run


def _ours(grades, run, scheme, config, metric):
    out = {}
    for qid, g in grades.items():
        jq = JudgedQuery(qid, "x", dict(g))
        r = run[qid]
        out[qid] = query_metrics(jq, r.product_ids, r.scores, scheme, config, "full")[metric]
    return out


def _theirs(qrels, run, measure):
    ir_run = [
        ir_measures.ScoredDoc(q, d, s)
        for q, r in run.items()
        for d, s in zip(r.product_ids, r.scores, strict=True)
    ]
    return {m.query_id: m.value for m in ir_measures.iter_calc([measure], qrels, ir_run)}


def test_numeric_metrics_agree_with_trec_eval():
    """Ratings 0..3: our gain (r-0)/3 is trec_eval's gain r scaled, and nDCG is scale-free."""
    grades, run = _fixture(1, [0, 1, 2, 3])
    scheme = GradeScheme("numeric", lo=0, hi=3, relevant=2)
    config = MetricConfig(ndcg_ks=(5, 10), recall_ks=(20,))
    qrels = [ir_measures.Qrel(q, d, int(r)) for q, g in grades.items() for d, r in g.items()]
    pairs = [
        ("nDCG@10", nDCG @ 10),
        ("nDCG@5", nDCG @ 5),
        ("Recall@20", R(rel=2) @ 20),
        ("MRR", RR(rel=2)),
    ]
    for ours_name, measure in pairs:
        ours = _ours(grades, run, scheme, config, ours_name)
        theirs = _theirs(qrels, run, measure)
        assert set(ours) == set(theirs)
        for qid in ours:
            assert ours[qid] == pytest.approx(theirs[qid], abs=1e-9), (ours_name, qid)


def test_esci_gains_agree_with_trec_eval():
    """ESCI gains 1/0.1/0.01/0 are trec_eval integer gains 100/10/1/0 scaled by 1/100."""
    grades, run = _fixture(2, ["I", "C", "S", "E"])
    scheme = GradeScheme("esci", relevant="E")
    as_int = {"E": 100, "S": 10, "C": 1, "I": 0}
    qrels = [ir_measures.Qrel(q, d, as_int[r]) for q, g in grades.items() for d, r in g.items()]
    config = MetricConfig(ndcg_ks=(10,), recall_ks=(10,))
    for ours_name, measure in [
        ("nDCG@10", nDCG @ 10),
        ("Recall@10", R(rel=100) @ 10),
        ("MRR", RR(rel=100)),
    ]:
        ours = _ours(grades, run, scheme, config, ours_name)
        theirs = _theirs(qrels, run, measure)
        for qid in ours:
            assert ours[qid] == pytest.approx(theirs[qid], abs=1e-9), (ours_name, qid)


def test_undefined_metrics_are_nan_not_zero():
    scheme = GradeScheme("numeric", lo=1, hi=3)
    jq = JudgedQuery("q", "x", {"a": 1.0, "b": 1.0})
    m = query_metrics(jq, ["a", "b"], [2.0, 1.0], scheme, MetricConfig(), "full")
    assert math.isnan(m["nDCG@10"]) and math.isnan(m["Recall@100"]) and math.isnan(m["MRR"])
    assert math.isnan(m["OrderAcc"])  # no pair with a rating gap


# -- order accuracy, re-rank ties: known answers ------------------------------------------


def test_order_accuracy_known_answers():
    levels = np.array([3.0, 2.0, 1.0])
    assert order_accuracy(levels, np.array([0.9, 0.5, 0.7]), 0.5) == (pytest.approx(2 / 3), 3)
    assert order_accuracy(levels, np.array([0.9, 0.5, 0.5]), 0.5) == (pytest.approx(5 / 6), 3)
    assert order_accuracy(levels, np.array([0.1, 0.5, 0.9]), 0.5) == (0.0, 3)
    # gap 1.5: only the (3, 1) pair counts
    assert order_accuracy(levels, np.array([0.1, 0.5, 0.9]), 1.5) == (0.0, 1)


def test_order_accuracy_modes_and_esci_pairs():
    scheme = GradeScheme("esci")
    jq = JudgedQuery("q", "x", {"e": "E", "s": "S", "c": "C", "i": "I"})
    config = MetricConfig()
    # full corpus: only e and c retrieved (c above e); s and i not retrieved.
    full = query_metrics(jq, ["c", "x", "e"], [3.0, 2.0, 1.0], scheme, config, "full")
    # pairs with one side retrieved: e>s ok, e>c wrong, e>i ok, s>c wrong, c>i ok; s>i skipped
    assert full["OrderAcc"] == pytest.approx(3 / 5)
    assert full["OrderAcc[E>S]"] == 1.0 and full["OrderAcc[S>C]"] == 0.0
    assert full["OrderAcc[C>I]"] == 1.0 and math.isnan(full["OrderAcc[S>I]"])
    # re-rank: the unscored s and i tie at the bottom: s>i counts 1/2
    rr = query_metrics(jq, ["c", "x", "e"], [3.0, 2.0, 1.0], scheme, config, "rerank")
    assert rr["OrderAcc"] == pytest.approx(3.5 / 6)
    assert rr["OrderAcc[S>I]"] == 0.5


def test_whole_grade_ratings_get_order_accuracy_per_grade_pair():
    # CrowdFlower's shape: medians of 1..4, nearly all whole; averaged ratings get no pairs.
    assert whole_grades_of([1.0, 2.0, 3.0, 4.0] * 5 + [3.5], 1, 4) == (4.0, 3.0, 2.0, 1.0)
    assert whole_grades_of([1.0, 1.33, 2.67, 3.0], 1, 3) == ()
    scheme = GradeScheme("numeric", lo=1, hi=4, whole_grades=(4.0, 3.0, 2.0, 1.0))
    names = MetricConfig().names(scheme)
    assert names[-4:] == ["OrderAcc[4>3]", "OrderAcc[3>2]", "OrderAcc[2>1]", "OrderAcc[4>1]"]
    assert scheme.distant_pairs() == {"OrderAcc[4>1]"}
    jq = JudgedQuery("q", "x", {"a": 4.0, "b": 3.0, "c": 2.0, "d": 1.0, "h": 3.5})
    # ranked c, a, d, b, h: 4>3 right, 3>2 wrong, 2>1 right, 4>1 right; 3.5 joins OrderAcc only
    got = query_metrics(jq, ["c", "a", "d", "b", "h"], [5, 4, 3, 2, 1], scheme, MetricConfig())
    assert got["OrderAcc[4>3]"] == 1.0 and got["OrderAcc[3>2]"] == 0.0
    assert got["OrderAcc[2>1]"] == 1.0 and got["OrderAcc[4>1]"] == 1.0
    # the overall OrderAcc counts every pair 0.5 apart, the 3.5 among them
    levels = np.array([2.0, 4.0, 1.0, 3.0, 3.5])
    assert got["OrderAcc"] == order_accuracy(levels, np.array([5.0, 4, 3, 2, 1]), 0.5)[0]


def test_rerank_tied_tail_is_the_expectation_over_its_orders():
    scheme = GradeScheme("numeric", lo=0, hi=3, relevant=2)
    grades = {"a": 3.0, "b": 0.0, "c": 2.0, "d": 0.0, "e": 1.0}
    jq = JudgedQuery("q", "x", grades)
    config = MetricConfig(ndcg_ks=(2, 4), recall_ks=(2,))
    got = query_metrics(jq, ["b", "zz"], [1.0, 0.5], scheme, config, "rerank")
    tail = ["a", "c", "d", "e"]
    perms = list(itertools.permutations(tail))
    all_gains = np.array([g / 3 for g in grades.values()])
    for k in (2, 4):
        want = np.mean(
            [ndcg(np.array([grades[p] / 3 for p in ["b", *o]]), all_gains, k) for o in perms]
        )
        assert got[f"nDCG@{k}"] == pytest.approx(want, abs=1e-12)
    rel = {p: float(grades[p] >= 2) for p in grades}
    want_rr = np.mean([reciprocal_rank(np.array([rel[p] for p in ["b", *o]]), 2) for o in perms])
    assert got["MRR"] == pytest.approx(want_rr, abs=1e-12)
    want_recall = np.mean([sum(rel[p] for p in ["b", *o][:2]) / 2 for o in perms])
    assert got["Recall@2"] == pytest.approx(want_recall, abs=1e-12)


# -- strata --------------------------------------------------------------------------------


def test_length_strata():
    assert [
        length_label(t)
        for t in ("drill", "cordless drill", "18v cordless drill kit", "a b c d", "a b c d e", "  ")
    ] == ["1 word", "2 words", "3-4 words", "3-4 words", "5+ words", "1 word"]


def _judgments(queries: dict[str, tuple[str, dict, float | None]], kind="numeric"):
    scheme = GradeScheme(kind, lo=0, hi=3) if kind == "numeric" else GradeScheme("esci")
    return Judgments({q: JudgedQuery(q, t, g, c) for q, (t, g, c) in queries.items()}, scheme)


def test_frequency_and_category_strata():
    counts = [1, 1, 2, 3, 5, 8, 13, 100, 100]
    j = _judgments({f"q{i}": ("x", {"p": 1.0}, float(c)) for i, c in enumerate(counts)})
    freq = by_frequency(j)
    assert [freq[f"q{i}"] for i in range(9)] == ["freq 1-2"] * 3 + ["freq 3-8"] * 3 + [
        "freq 13-100"
    ] * 3
    j = _judgments(
        {
            "a": ("x", {"p1": "E", "p2": "E", "p3": "S", "p4": "S", "p5": "S"}, None),
            "b": ("y", {"p3": "E", "p1": "E"}, None),  # a tie: alphabetically first wins
            "c": ("z", {"p9": "E"}, None),  # no category known
        },
        kind="esci",
    )
    cats = {
        "p1": ["tools", "drills"],
        "p2": ["tools"],
        "p3": ["paint"],
        "p4": ["paint"],
        "p5": ["paint"],
    }
    assert by_category(j, cats) == {"a": "tools", "b": "paint"}
    assert by_category(j, cats, max_strata=1) == {"a": "other", "b": "other"}


def test_evaluation_imports_neither_cli_nor_torch():
    code = (
        "import sys, pkgutil, importlib, shopsearch.evaluation as e\n"
        "for m in pkgutil.iter_modules(e.__path__):\n"
        "    importlib.import_module(f'{e.__name__}.{m.name}')\n"
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('shopsearch.cli')]\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- significance --------------------------------------------------------------------------


def test_a_system_against_itself_gives_p_1_and_zero_deltas():
    x = np.random.default_rng(0).random(200)
    c = compare(x, x.copy())
    assert (c.delta, c.ci_low, c.ci_high, c.p_value, c.n) == (0.0, 0.0, 0.0, 1.0, 200)


def test_a_real_difference_is_significant_and_inside_its_ci():
    rng = np.random.default_rng(1)
    a = rng.random(300)
    b = a + 0.05 + rng.normal(0, 0.1, 300)
    c = compare(a, b, resamples=2000)
    assert c.p_value < 0.01 and c.ci_low < c.delta < c.ci_high and c.ci_low > 0
    noise = compare(a, a + rng.normal(0, 0.1, 300), resamples=2000)
    assert noise.p_value > 0.01 and noise.ci_low < 0 < noise.ci_high
    assert compare(a, b, resamples=2000) == c  # seeded: reproducible


def _flip_p(d: np.ndarray, resamples: int, seed: int, shift: float = 0.0) -> float:
    """The sign-flip test of the mean of d - shift, written out plainly, with the signs
    `compare` draws for the same seed."""
    rng = np.random.default_rng(seed)
    x = d - shift
    extreme = 0
    for start in range(0, resamples, 1000):
        size = min(1000, resamples - start)
        signs = rng.integers(0, 2, size=(size, d.size), dtype=np.int8) * 2 - 1
        extreme += int(np.sum(np.abs((signs * x).mean(axis=1)) >= abs(x.mean()) - 1e-12))
    return (1 + extreme) / (1 + resamples)


def test_ci_and_p_agree_by_construction():
    """The CI is the randomisation test inverted, so "CI excludes 0" and "p < 0.05" are one
    statement. The deltas below are the case that confused readers: a paired bootstrap's
    percentile CI excludes 0 ([+0.001, +0.037]) while the randomisation p is 0.053."""
    rng = np.random.default_rng(4)  # 124 queries, 15 of them changed, one by a lot
    d = np.zeros(124)
    changed = rng.choice(124, int(rng.integers(5, 20)), replace=False)
    sign = rng.choice([-1, 1], changed.size, p=[0.3, 0.7])
    d[changed] = sign * rng.exponential(0.15, changed.size)
    rng = np.random.default_rng(0)
    boot = np.percentile(d[rng.integers(0, d.size, size=(10_000, d.size))].mean(axis=1), 2.5)
    assert boot > 0  # the bootstrap's CI would exclude 0 ...
    c = compare(np.zeros(d.size), d)
    assert c.p_value == pytest.approx(_flip_p(d, 10_000, 0))  # the plain sign-flip test
    assert c.p_value > 0.05 and c.ci_low < 0 < c.ci_high  # ... this one agrees with p
    # The ends are where the test, run on d - shift with the same signs, starts rejecting.
    eps = 1e-6
    for end, inward in ((c.ci_low, eps), (c.ci_high, -eps)):
        assert _flip_p(d, 10_000, 0, end + inward) >= 0.05 > _flip_p(d, 10_000, 0, end - inward)
    # Agreement on many samples, skewed, tied and small ones included.
    rng = np.random.default_rng(7)
    seen = set()
    for i in range(150):
        n = int(rng.integers(4, 150))
        a = rng.random(n)
        change = rng.random(n) < rng.random()
        b = a + np.where(change, rng.normal(rng.normal(0, 0.05), rng.random() * 0.3, n), 0)
        c = compare(a, b, resamples=1000, seed=i)
        assert (c.ci_low > 0 or c.ci_high < 0) == c.significant, c
        assert c.ci_low <= c.delta <= c.ci_high
        seen.add(c.significant)
    assert seen == {True, False}


# -- files: runs, judgments -----------------------------------------------------------------


def test_run_round_trip_and_bad_lines(tmp_path):
    run = [Ranking("q1", ("a", "b"), (2.0, 1.0)), Ranking("7", (), ())]
    write_run(tmp_path / "r.jsonl", run)
    assert read_run(tmp_path / "r.jsonl") == {"q1": run[0], "7": run[1]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"query_id": "q1", "results": []}\n'
        '{"query_id": "q2", "results": [{"product_id": "a", "score": "high"}]}\n'
    )
    with pytest.raises(InputFileError, match=r"bad\.jsonl line 2: result 1 has no numeric score"):
        read_run(bad)


def test_judgments_errors_name_file_row_and_column(tmp_path):
    path = tmp_path / "j.csv"
    path.write_text("qid,query,product_id,esci_label\nq1,drill,p1,E\nq1,drill,p2,X\n")
    with pytest.raises(InputFileError, match=r"j.csv row 2, column 'esci_label': unknown grade"):
        load_judgments(path)
    path.write_text("qid,query,sku,relevance\nq1,drill,p1,3\n")
    with pytest.raises(InputFileError, match=r"j\.csv: no product_id column"):
        load_judgments(path)
    j = load_judgments(path, {"product_id": "sku"})
    assert j.queries["q1"].grades == {"p1": 3.0} and j.scheme.kind == "numeric"


# -- the CLI end to end on a real collection -----------------------------------------------


@pytest.fixture(scope="module")
def eval_env(exported_model, tmp_path_factory):
    """200 demo products in an Edge collection and ESCI judgments for six queries."""
    tmp = tmp_path_factory.mktemp("eval")
    catalog = tmp / "demo.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 200), catalog, row_group_size=64)
    env = ["--model", str(exported_model), "--path", str(tmp / "data"), "-c", "demo"]
    assert (
        main(
            [
                "ingest",
                str(catalog),
                "--rejects",
                str(tmp / "rej.jsonl"),
                "--json",
                "--model",
                str(exported_model),
                "--path",
                str(tmp / "data"),
                "-c",
                "demo",
            ]
        )
        == 0
    )
    rows = pq.read_table(catalog).to_pylist()

    def grade(r, words, cat):
        title, cats = r["title"].lower(), r["category"] or []
        if cat in cats and any(w in title for w in words):
            return "E"
        return "S" if cat in cats else ("C" if any(w in title for w in words) else "I")

    queries = [
        ("q1", "women's casual shoes", ["shoes"], "womens footwear", 40),
        ("q2", "analog watch for men", ["analog"], "wrist watches", 12),
        ("q3", "boots", ["boots"], "womens footwear", 30),
        ("q4", "sports watch", ["sport"], "wrist watches", 3),
        ("q5", "women's sandals and wedges", ["sandal", "wedge"], "womens footwear", 1),
        ("q6", "shirt", ["shirt"], "mens clothing", 2),
    ]
    judged = []
    for qid, text, words, cat, count in queries:
        for r in rows[::7][:22]:
            judged.append(
                {
                    "qid": qid,
                    "query": text,
                    "product_id": r["id"],
                    "esci_label": grade(r, words, cat),
                    "count": count,
                }
            )
    path = tmp / "judgments.parquet"
    pq.write_table(pa.Table.from_pylist(judged), path)
    return env, tmp, path


def test_eval_two_modes_report_and_json(eval_env, capsys):
    env, tmp, judgments = eval_env
    report = tmp / "report.html"
    assert (
        main(
            [
                "eval",
                "-j",
                str(judgments),
                "--mode",
                "bm25",
                "--mode",
                "dense",
                "--exact",
                "--report",
                str(report),
                "--save-runs",
                str(tmp / "runs"),
                "--resamples",
                "500",
                *env,
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "full-corpus retrieval" in out and "nDCG@10" in out and "Δ dense" in out
    assert "length: 1 word" in out and "frequency:" in out and "category:" in out
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!doctype html>") and page.count("<svg") >= 5
    # self-contained: no scripts, no external resources of any kind
    assert not re.search(r"<script|<link|<img|@import|url\(|https?://", page, re.I)
    # the saved runs are in the run format and score the same when read back
    assert (
        main(
            [
                "eval",
                "-j",
                str(judgments),
                "--run",
                f"bm25={tmp / 'runs' / 'bm25.jsonl'}",
                "--run",
                f"again={tmp / 'runs' / 'bm25.jsonl'}",
                "--json",
                "--resamples",
                "500",
            ]
        )
        == 0
    )
    doc = json.loads(capsys.readouterr().out)
    rows = {(r["label"], r["system"]): r["metrics"] for r in doc["results"]["full"]}
    for metric, entry in rows[("all queries", "again")].items():
        if entry["n"]:
            assert entry["delta"] == 0.0 and entry["p_value"] == 1.0, metric
            assert entry["ci_low"] == entry["ci_high"] == 0.0
    assert (
        rows[("all queries", "again")]["nDCG@10"]["mean"]
        == rows[("all queries", "bm25")]["nDCG@10"]["mean"]
    )


def test_eval_hybrid_reads_the_relevance_floors_calibration(eval_env, capsys):
    env, tmp, judgments = eval_env
    report = tmp / "hybrid.html"
    args = ["eval", "-j", str(judgments), "--mode", "hybrid", "--resamples", "200", *env]
    assert main([*args, "--json", "--report", str(report)]) == 0
    cal = json.loads(capsys.readouterr().out)["calibration"]
    assert cal["system"] == "hybrid-adaptive" and cal["first_k"] == 10
    # every judged result among each query's first 10, each in one bin
    assert cal["judged_results"] == sum(b["results"] for b in cal["bins"]) > 0
    assert all(0 <= b["predicted"] <= 1 and 0 <= b["observed"] <= 1 for b in cal["bins"])
    cut = cal["default_cut"]
    assert cut["cut"] == DEFAULT_MIN_CONFIDENCE and 0 <= cut["no_confident_match"] <= 6
    assert 'aria-label="reliability diagram"' in report.read_text(encoding="utf-8")
    assert main(args) == 0
    assert "relevance floor (hybrid-adaptive" in capsys.readouterr().out


def test_calibration_bins_ece_and_the_cut():
    scheme = GradeScheme("numeric", lo=1, hi=3)
    judged = Judgments(
        {
            "a": JudgedQuery("a", "x", {"p1": 3.0, "p2": 1.0}),
            "b": JudgedQuery("b", "y", {"p3": 1.0}),
        },
        scheme,
    )
    run = {
        "a": Ranking("a", ("p1", "zz", "p2"), (3.0, 2.0, 1.0)),
        "b": Ranking("b", ("p3",), (1.0,)),
    }
    cal = assess("s", judged, run, {"a": [0.95, 0.9, 0.15], "b": [0.3]}, cut=0.5)
    # the unjudged zz has no label: three judged results, one relevant
    assert list(cal.confidence) == [0.95, 0.15, 0.3] and list(cal.relevant) == [True, False, False]
    assert [(b["low"], b["results"]) for b in cal.bins()] == [(0.1, 1), (0.3, 1), (0.9, 1)]
    assert cal.ece == pytest.approx((0.05 + 0.15 + 0.3) / 3)
    at = cal.at(0.5)
    assert (at["kept"], at["precision"], at["recall"], at["no_confident_match"]) == (1, 1.0, 1.0, 1)


def test_eval_bad_inputs_exit_2_naming_the_place(eval_env, tmp_path, capsys):
    _, _, judgments = eval_env
    bad = tmp_path / "run.jsonl"
    bad.write_text('{"query_id": "q1", "results": []}\nnot json\n')
    assert main(["eval", "-j", str(judgments), "--run", str(bad)]) == 2
    assert "run.jsonl line 2: invalid JSON" in capsys.readouterr().err
    assert main(["eval", "-j", str(judgments), "--map", "grade=stars", "--run", str(bad)]) == 2
    assert "no column 'stars'" in capsys.readouterr().err


def test_evaluate_library_without_collection():
    """Two run dicts, no search: the baseline is the first system."""
    j = _judgments(
        {"a": ("one", {"p": 3.0, "q": 0.0}, None), "b": ("two words", {"p": 3.0, "r": 1.0}, None)}
    )
    good = {"a": Ranking("a", ("p", "q"), (2.0, 1.0)), "b": Ranking("b", ("p", "r"), (1.0, 0.5))}
    bad = {"a": Ranking("a", ("q", "p"), (2.0, 1.0))}
    ev = evaluate(j, [System("good", good), System("bad", bad)], resamples=200)
    assert ev.mean(ev.systems[0], "full", "nDCG@10") == (1.0, 2)
    assert ev.systems[1].missing_queries == 1
    c = ev.comparisons["full"]["bad"][ALL]["nDCG@10"]
    assert c.delta < 0 and c.n == 2


def test_tied_scores_count_as_the_expectation_over_their_orders():
    """An engine's order among equal scores is arbitrary: both orders score the same, the
    mean of the two untied rankings."""
    scheme = GradeScheme("numeric", lo=1, hi=3)
    jq = JudgedQuery("q", "x", {"a": 3.0, "b": 1.0, "c": 2.5})
    config = MetricConfig(ndcg_ks=(1, 10), recall_ks=(1,))
    ab = query_metrics(jq, ["a", "b"], [0.5, 0.5], scheme, config, "full")
    ba = query_metrics(jq, ["b", "a"], [0.5, 0.5], scheme, config, "full")
    untied = [
        query_metrics(jq, order, [0.6, 0.5], scheme, config, "full")
        for order in (["a", "b"], ["b", "a"])
    ]
    for name in ("nDCG@1", "nDCG@10", "Recall@1", "MRR"):
        want = (untied[0][name] + untied[1][name]) / 2
        assert ab[name] == pytest.approx(want) and ba[name] == pytest.approx(want), name
    assert ab["nDCG@1"] == pytest.approx(0.5)  # a (gain 1) or b (gain 0) first, equally likely


def test_a_product_listed_twice_counts_once():
    scheme = GradeScheme("numeric", lo=1, hi=3)
    jq = JudgedQuery("q", "x", {"a": 3.0, "b": 1.0})
    m = query_metrics(jq, ["a", "a", "a"], [0.9, 0.8, 0.7], scheme, MetricConfig(), "full")
    assert m["nDCG@10"] == pytest.approx(1.0) and m["Recall@100"] == pytest.approx(1.0)


def test_too_few_queries_give_an_unbounded_ci_and_a_drawable_report():
    """Four queries: the all-alike sign flips (2 of 16) are over 5% of the draws, so no shift
    is rejected; the CI is (-inf, +inf), p >= 0.05, and the report still draws it."""
    c = compare(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.2]), resamples=1000)
    assert c.p_value >= 0.05 and (c.ci_low, c.ci_high) == (-math.inf, math.inf)
    j = _judgments({f"q{i}": (f"query {i}", {"p": 3.0, "n": 0.0}, None) for i in range(4)})
    good = {q: Ranking(q, ("p", "n"), (2.0, 1.0)) for q in j.queries}
    bad = {q: Ranking(q, ("n", "p"), (2.0, 1.0)) for q in j.queries}
    ev = evaluate(j, [System("bad", bad), System("good", good)], resamples=200)
    from shopsearch.evaluation.report import render_report

    page = render_report(ev)
    assert "[-inf, +inf]" in page  # said as it is, in the cards
    numbers = re.findall(r'\s(?:x|x1|x2|y|y1|y2|cx|cy|width|height)="([^"]*)"', page)
    assert numbers and all(math.isfinite(float(v)) for v in numbers)  # every shape drawable
