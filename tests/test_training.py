"""Training data and the `shopsearch train` pipeline on a tiny Home Depot slice.

The smoke run uses the real all-MiniLM-L6-v2 for a few steps per stage and checks that each
stage lowers its own loss on its training data, measured before and after with the loss module.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")
pytest.importorskip("accelerate")

from shopsearch.encoders.resolve import resolve_base_model  # noqa: E402
from shopsearch.errors import UsageError  # noqa: E402
from shopsearch.training.data import (  # noqa: E402
    Bm25Index,
    build_stage1,
    build_stage2,
    esci_grade_map,
    load_judgments,
    load_product_texts,
    mine_hard_negatives,
    model_top_k,
    parse_grade_map,
)
from shopsearch.training.pipeline import (  # noqa: E402
    KNOWN_POSITIVES_FILE,
    TrainConfig,
    load_model,
    stage1_rows,
    train_with_loss,
)

HOMEDEPOT = Path("/work/shared/data/homedepot")
ESCI = Path("/work/shared/data/esci-sample/esci.csv")
needs_homedepot = pytest.mark.skipif(
    not (HOMEDEPOT / "judgments-train.parquet").is_file(), reason="Home Depot data not here"
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """16 Home Depot queries with >= 6 judgments, their products and 200 others."""
    if not (HOMEDEPOT / "judgments-train.parquet").is_file():
        pytest.skip("Home Depot data not here")
    root = tmp_path_factory.mktemp("tiny")
    judged = pq.read_table(HOMEDEPOT / "judgments-train.parquet").to_pylist()
    counts: dict[str, int] = {}
    for row in judged:
        counts[row["query_id"]] = counts.get(row["query_id"], 0) + 1
    queries = sorted(q for q, n in counts.items() if n >= 6)[:16]
    rows = [r for r in judged if r["query_id"] in set(queries)]
    pq.write_table(pa.Table.from_pylist(rows), root / "judgments.parquet")
    wanted = {r["product_uid"] for r in rows}
    products = pq.read_table(HOMEDEPOT / "products.parquet").to_pylist()
    keep = [p for i, p in enumerate(products) if p["product_uid"] in wanted or i < 200]
    pq.write_table(pa.Table.from_pylist(keep), root / "products.parquet")
    return {"judgments": root / "judgments.parquet", "products": root / "products.parquet"}


# -- grades ------------------------------------------------------------------------------
def test_grade_maps() -> None:
    bins = parse_grade_map(None)
    values = (1.0, 1.33, 1.5, 1.67, 2.0, 2.33, 2.5, 2.67, 3.0)
    assert [bins.level(v) for v in values] == [0, 0, 1, 1, 2, 2, 3, 3, 4]
    assert bins.positive_threshold == 2.5 and bins.relevance(2.33) == 2.33
    esci = parse_grade_map("esci")
    assert [esci.level(x) for x in ("Exact", "substitute", "C", "I")] == [3, 2, 1, 0]
    # ROAR's anchor positive: a level all of whose grades are stage-1 positives.
    assert bins.positive_level == 3 and esci.positive_level == 2
    assert parse_grade_map(None, positive_threshold=2.4).positive_level == 3
    assert esci.positive_threshold == 2.0
    custom = parse_grade_map("good=2,ok=1,bad=0", positive_threshold=1)
    assert custom.level("OK") == 1 and custom.positive_threshold == 1.0
    assert parse_grade_map("bins:2,3").level(2.5) == 1
    with pytest.raises(UsageError):
        parse_grade_map("bins:3,2")
    with pytest.raises(UsageError):
        esci.level("Perfect")


# -- data ----------------------------------------------------------------------------------
@needs_homedepot
def test_stage1_pairs_and_known_positives(tiny: dict[str, Path]) -> None:
    judgments = load_judgments(tiny["judgments"], parse_grade_map(None))
    texts = load_product_texts(tiny["products"], {"id": "product_uid"})
    expected_pairs = sum(1 for r in judgments.relevance if r >= 2.5)
    data = build_stage1(judgments, texts, num_negatives=2, negatives={}, seed=1)
    ds = data.dataset
    assert len(ds) == expected_pairs
    assert ds.column_names == ["anchor", "positive", "negative_1", "negative_2", "label"]
    positives = judgments.positives()
    keys_to_pid = {k: p for p, k in data.product_keys.items()}
    keys_to_qid = {k: q for q, k in data.query_keys.items()}
    for row in ds:
        qid = keys_to_qid[row["label"][0]]
        assert keys_to_pid[row["label"][1]] in positives[qid]
        for neg in row["label"][2:]:  # random fill-ins are never a positive of the query
            assert keys_to_pid[neg] not in positives[qid]
    assert len(data.known_positives) == sum(len(v) for v in positives.values())


@needs_homedepot
@pytest.mark.parametrize("method", ["bm25", "model"])
def test_mining_excludes_judged_positives(tiny: dict[str, Path], method: str) -> None:
    judgments = load_judgments(tiny["judgments"], parse_grade_map(None))
    texts = load_product_texts(tiny["products"], {"id": "product_uid"})
    model = load_model(resolve_base_model(None), TrainConfig()) if method == "model" else None
    mined = mine_hard_negatives(judgments, texts, method, top_k=20, model=model)
    positives = judgments.positives()
    assert mined and any(mined.values())
    for qid, negs in mined.items():
        pos_texts = {texts[p] for p in positives.get(qid, ())}
        assert not set(negs) & positives.get(qid, set())
        assert not {texts[n] for n in negs} & pos_texts
        if method == "model":  # a dense top 20 is always full: only exclusions shorten it
            assert len(negs) >= 20 - sum(texts[i] in pos_texts for i in texts)
    # Each ranker puts a product's own title among its top hits.
    ids = list(texts)
    own = texts[ids[5]]
    if method == "bm25":
        assert 5 in Bm25Index([texts[i] for i in ids]).top_k(own, 3).tolist()
    else:
        assert 5 in model_top_k(model, [own], [texts[i] for i in ids], 3)[0].tolist()


def test_bm25_index_scores_rank_its_top_k() -> None:
    index = Bm25Index(["cordless drill", "drill bit set", "garden hose", "hose reel cart"])
    scores = index.scores("drill hose")
    assert scores.shape == (4,) and (scores > 0).all()
    assert index.scores("ladder").tolist() == [0.0, 0.0, 0.0, 0.0]
    # A shorter title carries more of the query's weight per word (length normalisation).
    assert scores[0] > scores[1] and scores[2] > scores[3]
    top = index.top_k("drill hose", 3).tolist()
    assert top == sorted(range(4), key=lambda i: -scores[i])[:3]


@needs_homedepot
def test_stage2_groups_variable_size(tiny: dict[str, Path]) -> None:
    judgments = load_judgments(tiny["judgments"], parse_grade_map(None))
    texts = load_product_texts(tiny["products"], {"id": "product_uid"})
    ds = build_stage2(judgments, texts, max_candidates=5, seed=3)
    sizes = {len(c) for c in ds["candidates"]}
    assert max(sizes) <= 5 and len(ds) >= 10
    for cands, grades in zip(ds["candidates"], ds["label"], strict=True):
        assert len(cands) == len(grades) and len(set(grades)) >= 2
    uncapped = build_stage2(judgments, texts, max_candidates=64)
    assert len({len(c) for c in uncapped["candidates"]}) > 1  # groups really vary


def test_esci_judgments_and_products_from_one_csv() -> None:
    if not ESCI.is_file():
        pytest.skip("ESCI sample not here")
    grade_map = esci_grade_map()
    judgments = load_judgments(ESCI, grade_map, {"grade": "esci_label"})
    texts = load_product_texts(ESCI, {"id": "product_id", "title": "product_title"})
    assert set(judgments.levels) <= {0, 1, 2, 3} and len(set(judgments.levels)) == 4
    data = build_stage1(judgments, texts)
    assert len(data.dataset) == sum(1 for lv in judgments.levels if lv >= 2)


def test_roar_collator_flattens_real_candidates_only() -> None:
    from shopsearch.training.losses.roar import ROARDataCollator

    seen: list[list[str]] = []

    def preprocess(texts: list[str], prompt: str | None = None, task: str | None = None) -> dict:
        seen.append(list(texts))
        return {"input_ids": torch.zeros(len(texts), 3, dtype=torch.long)}

    batch = ROARDataCollator(preprocess)(
        [
            {"query": "a", "candidates": ["x", "y", "z"], "label": [2, 0, 1]},
            {"query": "b", "candidates": ["w"], "label": [1]},
        ]
    )
    assert seen == [["a", "b"], ["x", "y", "z", "w"]]
    assert batch["label"].tolist() == [[2, 0, 1], [1, -1, -1]]
    assert batch["candidates_input_ids"].shape[0] == 4


# -- the pipeline --------------------------------------------------------------------------
def _stage1_loss(model_dir: str, dataset, known) -> float:
    from sentence_transformers import SentenceTransformer

    from shopsearch.training.losses.false_negative_masked_contrastive import (
        FalseNegativeMaskedContrastiveLoss,
    )

    model = SentenceTransformer(model_dir)
    model.max_seq_length = 32
    model.eval()
    loss_fn = FalseNegativeMaskedContrastiveLoss(
        model, margin=TrainConfig().margin, known_positives=known
    )
    texts = [c for c in dataset.column_names if c != "label"]  # anchor, positive, negative_*
    total = []
    with torch.no_grad():
        for start in range(0, len(dataset) - 7, 8):
            rows = dataset[start : start + 8]
            feats = [model.preprocess(rows[c]) for c in texts]
            total.append(loss_fn(feats, torch.tensor(rows["label"])).item())
    return sum(total) / len(total)


def _stage2_loss(model_dir: str, dataset) -> float:
    from sentence_transformers import SentenceTransformer

    from shopsearch.training.losses.roar import ROARDataCollator, ROARLoss

    model = SentenceTransformer(model_dir)
    model.max_seq_length = 32
    model.eval()
    collate = ROARDataCollator(model.preprocess)
    loss_fn = ROARLoss(model)
    with torch.no_grad():
        batch = collate([dataset[i] for i in range(len(dataset))])
        feats = [
            {k[len(p) :]: v for k, v in batch.items() if k.startswith(p)}
            for p in ("query_", "candidates_")
        ]
        return loss_fn(feats, batch["label"]).item()


@needs_homedepot
def test_cli_smoke_training_lowers_both_losses(tiny: dict[str, Path], tmp_path: Path) -> None:
    from datasets import load_from_disk

    from shopsearch.cli.app import main
    from shopsearch.training.pipeline import use_bf16

    out = tmp_path / "run"
    argv = [
        "train", "--stage", "both",
        "--judgments", str(tiny["judgments"]), "--products", str(tiny["products"]),
        "--map", "id=product_uid", "--out", str(out),
        "--max-length", "32", "--batch-size", "8", "--stage2-batch-size", "4",
        "--max-candidates", "6", "--max-steps", "6", "--lr", "1e-4", "--seed", "7",
        "--json",
    ]  # fmt: skip
    assert main(argv) == 0
    stage1, stage2 = out / "stage1", out / "stage2"
    assert (stage2 / "model" / "modules.json").is_file()  # a sentence-transformers model
    assert any(p.name.startswith("checkpoint-") for p in (stage1 / "checkpoints").iterdir())
    stage1_result = json.loads((stage1 / "result.json").read_text())
    assert stage1_result["steps"] == 6
    assert stage1_result["bf16"] is use_bf16(TrainConfig())  # the default: the hardware's

    s1_data = load_from_disk(str(stage1 / "data"))
    known = [tuple(k) for k in json.loads((stage1 / KNOWN_POSITIVES_FILE).read_text())]
    base = resolve_base_model(None)
    before1 = _stage1_loss(base, s1_data, known)
    after1 = _stage1_loss(str(stage1 / "model"), s1_data, known)
    assert after1 < before1

    s2_data = load_from_disk(str(stage2 / "data"))
    before2 = _stage2_loss(str(stage1 / "model"), s2_data)
    after2 = _stage2_loss(str(stage2 / "model"), s2_data)
    assert after2 < before2

    # Resume: both stages are finished, so nothing is retrained.
    assert main([*argv, "--resume"]) == 0
    assert json.loads((stage1 / "result.json").read_text())["steps"] == 6

    # A baseline's rows given as a function are not built when its run is already finished.
    def rows_must_not_be_built() -> None:
        raise AssertionError("built the rows of a finished run")

    cfg = TrainConfig(resume=True, max_length=32, batch_size=8, max_steps=6, seed=7)
    done = train_with_loss(None, lambda model: None, rows_must_not_be_built, stage1, cfg)
    assert done.skipped and done.model_dir == stage1 / "model" and done.steps == 6

    # A baseline on stage 1's pairs (the benchmark's MNRL) reads the rows stage 1 mined, and
    # where there are none yet, mines them once into the stage's directory: the same rows.
    judgments = load_judgments(tiny["judgments"], parse_grade_map(None))
    texts = load_product_texts(tiny["products"], {"id": "product_uid"})
    reused = stage1_rows(cfg, judgments, texts, stage1, rows_must_not_be_built)
    assert reused.to_list() == s1_data.to_list()
    miners: list[str] = []

    def miner() -> object:
        miners.append(base)
        return load_model(base, cfg)

    fresh = tmp_path / "fresh"
    assert stage1_rows(cfg, judgments, texts, fresh, miner).to_list() == s1_data.to_list()
    assert stage1_rows(cfg, judgments, texts, fresh, miner).to_list() == s1_data.to_list()
    assert len(miners) == 1 and (fresh / KNOWN_POSITIVES_FILE).is_file()


def test_cli_defaults_are_the_config_defaults() -> None:
    """The CLI spells its defaults as literals (importing the trainer would slow every
    command's start-up); they must stay TrainConfig's."""
    import dataclasses
    import inspect

    from shopsearch.cli.commands_train import _margins, train

    config = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    cli = {n: p.default for n, p in inspect.signature(train).parameters.items() if n in config}
    cli["roar_margins"] = _margins(cli["roar_margins"])
    assert {"margin", "hard_negatives", "max_length", "roar_margins"} <= cli.keys()
    assert cli == {name: config[name] for name in cli}


def test_bf16_autocast_is_the_config_or_the_hardware() -> None:
    from shopsearch.training.cpu_features import has_bf16_units
    from shopsearch.training.pipeline import use_bf16

    assert use_bf16(TrainConfig(bf16=True)) is True
    assert use_bf16(TrainConfig(bf16=False)) is False
    if not torch.cuda.is_available():
        assert use_bf16(TrainConfig()) is has_bf16_units()


def test_train_rejects_bad_stage(tmp_path: Path) -> None:
    from shopsearch.cli.app import main

    (tmp_path / "j.csv").write_text("query,product_id,relevance\nq,1,3\n")
    (tmp_path / "p.csv").write_text("id,title\n1,Drill\n")
    code = main(
        ["train", "--stage", "3", "--judgments", str(tmp_path / "j.csv"),
         "--products", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o")]
    )  # fmt: skip
    assert code == 2
