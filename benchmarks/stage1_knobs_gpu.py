"""Can any stage-1 setting reach issue 4's 0.40 dense nDCG@10? Dozens of settings, on a GPU.

On the 2-core CPU a stage-1 arm of `train_homedepot.py` takes 5-16 min, so the ablation can
afford a handful of settings; on one H100 an arm takes 10-60 s. This script trains stage 1
with many settings (positive threshold, hard negatives, epochs, batch, learning rate, max
length, temperature, masks, second-round mining, seeds, pseudo-queries cut from titles,
distillation of a BM25 or BM25 + base-model teacher, E5-style query and product prefixes)
and scores each on Home Depot dev.
Without a GPU it runs on the CPU (bf16 autocast where the hardware has it): 12-19 min an arm
on 2 cores, and 5 min of mining.

It is a direction finder, not the ablation: a plain torch loop (AdamW, 10% linear warm-up
then linear decay, bf16 autocast, batches with no repeated query or product) with MNRL's
loss or stage 1's `masked_info_nce`, and dense retrieval scored in fp32 by exact search over
the 54,667 titles with the protocol's metrics (full-corpus nDCG@10 and Recall@100). No ONNX,
int8 or Qdrant, so figures sit within ~0.005 of the ablation's. Settings worth adopting go
through `train_homedepot.py`, whose figures are the ones reported.

    python benchmarks/stage1_knobs_gpu.py --set knobs|combos|mask|synthetic|distill|prefix
        [--data DIR] [--model DIR] [--bm25 FILE] [--out FILE] [--only NAME ...] [--quick]

--bm25 takes the lists `benchmarks/bm25_lists.py` writes (the GPU image has no Qdrant): the
set `distill` needs them, and with them every setting is also scored fused with BM25 (DBSF,
offline, queries as typed).

Needs torch and sentence-transformers (the train extra), not datasets, onnxruntime or Qdrant,
so it runs on the device tool's stock image: copy the three Home Depot files and the base
model (fp16 weights keep it under the transfer limit) into an ignored folder, carry it, point
--data and --model there, and run from the repository root with `PYTHONPATH=.` (the package
is not installed there). --quick trains on 300 queries over a 2,000-product catalog (a smoke
run whose numbers mean nothing). Results: one line per setting, and --out (JSON).
Measured on 2026-11-22 and 11-23 (thirteenth, fifteenth and twenty-second sessions):
benchmarks/RESULTS.md section 6.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from bench_catalog import HOMEDEPOT

from shopsearch.evaluation.judgments import GradeScheme
from shopsearch.evaluation.metrics import ndcg, recall
from shopsearch.training.data import (
    load_judgments,
    load_product_texts,
    model_top_k,
    parse_grade_map,
)
from shopsearch.training.losses.false_negative_masked_contrastive import masked_info_nce
from shopsearch.training.pipeline import TrainConfig, use_bf16

PROTOCOL = GradeScheme("numeric", lo=1.0, hi=3.0)  # gain (r - 1) / 2, relevant r >= 2.5
UNMASKED = "unmasked"  # Knobs.margin for MNRL's loss: no identity or margin mask


@dataclass(frozen=True)
class Knobs:
    """One setting. Defaults are the ablation's MNRL arm with the base model's negatives."""

    threshold: float = 2.5  # positives: relevance >= threshold
    exclude_from: float | None = None  # never a negative: judged >= this (None: threshold)
    negatives: int = 1  # mined negatives per pair (0: in-batch only)
    mined_by: str = "base"  # "base", "none", or the name of an earlier kept setting
    top_k: int = 50
    skip_top: int = 0
    judged_negatives_below: float | None = None  # judged products below: negatives first
    weighted: bool = False  # weight each pair's loss by its gain
    epochs: float = 1.0
    batch_size: int = 64
    learning_rate: float = 5e-5
    max_length: int = 32
    temperature: float = 0.05
    symmetric: float = 0.0  # weight of the product-to-query term
    margin: float | str | None = UNMASKED  # stage 1: m, or None for the identity mask only
    keep: bool = False  # keep the trained model to mine with (mined_by)
    seed: int = 42
    synthetic: int = 0  # extra pairs: a pseudo-query cut from a random product's title
    distill: float = 0.0  # weight of a listwise KL term towards a lexical teacher (--bm25)
    teacher: str = "bm25"  # "bm25", or "fused": BM25 + the base model, z-scores summed
    distill_k: int = 30  # the teacher's list per query: its top k (fused: both retrievers')
    distill_n: int = 16  # candidates drawn from that list per query and step
    teacher_temperature: float = 0.5  # on the teacher's z-scores
    bm25_miss_weight: float = 1.0  # weight of a pair whose positive is not in BM25's top 10
    bm25_negatives: int = 0  # more negatives a pair, from BM25's top 50 (--bm25)
    query_prefix: str = ""  # E5-style prompts: trained with them and searched with them
    document_prefix: str = ""


EXCLUDE_2 = {"exclude_from": 2.0}
THRESHOLD_2 = {"threshold": 2.0, "exclude_from": 2.0}
SETS: dict[str, dict[str, dict[str, Any]]] = {
    "knobs": {
        "base": {},
        "base_s7": {"seed": 7},
        "noneg": {"mined_by": "none", "negatives": 0},
        "excl2": EXCLUDE_2,
        "excl_all": {"exclude_from": 0.0},
        "thr2": THRESHOLD_2,
        "thr2w": {**THRESHOLD_2, "weighted": True},
        "thr233": {"threshold": 2.33, "exclude_from": 2.0},
        "jneg": {**EXCLUDE_2, "judged_negatives_below": 2.0},
        "negs2": {**EXCLUDE_2, "negatives": 2},
        "negs4": {**EXCLUDE_2, "negatives": 4},
        "ep2": {**EXCLUDE_2, "epochs": 2},
        "ep3": {**EXCLUDE_2, "epochs": 3},
        "bs128": {**EXCLUDE_2, "batch_size": 128},
        "bs256": {**EXCLUDE_2, "batch_size": 256},
        "bs256_lr1e4": {**EXCLUDE_2, "batch_size": 256, "learning_rate": 1e-4},
        "lr1e4": {**EXCLUDE_2, "learning_rate": 1e-4},
        "lr2e5": {**EXCLUDE_2, "learning_rate": 2e-5},
        "ml64": {**EXCLUDE_2, "max_length": 64},
        "sym": {**EXCLUDE_2, "symmetric": 1.0},
    },
    "combos": {
        "base_s13": {"seed": 13},
        "thr2_s7": {**THRESHOLD_2, "seed": 7},
        "thr2_s13": {**THRESHOLD_2, "seed": 13},
        "thr2_eqsteps": {**THRESHOLD_2, "epochs": 0.6},
        "thr2_ml64": {**THRESHOLD_2, "max_length": 64},
        "thr2_negs4": {**THRESHOLD_2, "negatives": 4},
        "thr2_ml64_negs4": {**THRESHOLD_2, "max_length": 64, "negatives": 4},
        "thr2_bs256_lr1e4": {**THRESHOLD_2, "batch_size": 256, "learning_rate": 1e-4},
        "thr2_ep2": {**THRESHOLD_2, "epochs": 2},
        "thr2_exclall": {"threshold": 2.0, "exclude_from": 0.0},
        "t03": {**EXCLUDE_2, "temperature": 0.03},
        "skip5": {**EXCLUDE_2, "skip_top": 5},
        "r1": {**THRESHOLD_2, "keep": True},
        "r2": {**THRESHOLD_2, "mined_by": "r1"},
    },
    "synthetic": {
        "base": {},
        "syn16k": {"synthetic": 16_000},
    },
    "distill": {
        "base": {},
        "bm25_l1": {"distill": 1.0},
        "bm25_l3": {"distill": 3.0},
        "bm25_l1_t025": {"distill": 1.0, "teacher_temperature": 0.25},
        "fused_l1": {"distill": 1.0, "teacher": "fused"},
        "fused_l3": {"distill": 3.0, "teacher": "fused"},
        "base_s7": {"seed": 7},
        "bm25_l1_s7": {"distill": 1.0, "seed": 7},
        "base_s13": {"seed": 13},
        "bm25_l1_s13": {"distill": 1.0, "seed": 13},
        "miss2": {"bm25_miss_weight": 2.0},
        "miss2_s7": {"bm25_miss_weight": 2.0, "seed": 7},
        "miss2_s13": {"bm25_miss_weight": 2.0, "seed": 13},
        "lexneg": {"bm25_negatives": 1},
        "lexneg_s7": {"bm25_negatives": 1, "seed": 7},
        "lexneg_s13": {"bm25_negatives": 1, "seed": 13},
        "lexonly": {"bm25_negatives": 1, "negatives": 0},
        "lexonly_s7": {"bm25_negatives": 1, "negatives": 0, "seed": 7},
        "lexonly_s13": {"bm25_negatives": 1, "negatives": 0, "seed": 13},
    },
    "prefix": {
        "base": {},
        "e5": {"query_prefix": "query: ", "document_prefix": "passage: "},
        "query_only": {"query_prefix": "query: "},
    },
    "mask": {
        "fn_s42": {"margin": -0.1},
        "fn_s7": {"margin": -0.1, "seed": 7},
        "fn_s13": {"margin": -0.1, "seed": 13},
        "ident_s42": {"margin": None},
        "fn05_s42": {"margin": 0.05},
    },
}


@dataclass
class Pair:
    qid: str
    query: str
    product: int
    negatives: list[int]
    weight: float
    query_positives: frozenset[int]


class HomeDepot:
    """Titles, train and dev judgments as query -> {product index: relevance}."""

    def __init__(self, data: Path, quick: bool, bm25: Path | None = None) -> None:
        texts = load_product_texts(data / "products.parquet", {"id": "product_uid"})
        self.ids = list(texts)
        self.titles = [texts[i] for i in self.ids]
        self.train = self._queries(data / "judgments-train.parquet")
        self.dev = self._queries(data / "judgments-dev.parquet")
        self.bm25: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        if bm25 is not None:
            self._load_bm25(bm25)
        if quick:
            self._shrink(300, 50, 2000)

    def _load_bm25(self, path: Path) -> None:
        """BM25's top 100 (indices into the titles, scores) per train and dev query."""
        lists = np.load(path)
        index = {pid: i for i, pid in enumerate(self.ids)}
        local = np.array([index.get(str(u), -1) for u in lists["product_uid"]] + [-1])
        for split in ("train", "dev"):
            self.bm25[split] = {
                str(q): (local[i][i >= 0], s[i >= 0])
                for q, i, s in zip(
                    lists[f"{split}_qid"],
                    lists[f"{split}_idx"],
                    lists[f"{split}_score"],
                    strict=True,
                )
            }

    def _queries(self, path: Path) -> dict[str, tuple[str, dict[int, float]]]:
        index = {pid: i for i, pid in enumerate(self.ids)}
        judgments = load_judgments(path, parse_grade_map(None))
        out: dict[str, tuple[str, dict[int, float]]] = {}
        for qid, rows in judgments.by_query().items():
            ids, rels = judgments.product_ids, judgments.relevance
            judged = {index[ids[i]]: rels[i] for i in rows if ids[i] in index}
            if judged:
                out[qid] = (judgments.queries[rows[0]], judged)
        return out

    def _shrink(self, n_train: int, n_dev: int, n_products: int) -> None:
        self.train = dict(list(self.train.items())[:n_train])
        self.dev = dict(list(self.dev.items())[:n_dev])
        judged = {p for _, j in (*self.train.values(), *self.dev.values()) for p in j}
        keep = sorted(judged | set(range(min(n_products, len(self.ids)))))
        new = {old: new for new, old in enumerate(keep)}
        self.ids = [self.ids[i] for i in keep]
        self.titles = [self.titles[i] for i in keep]
        for split in (self.train, self.dev):
            for qid, (query, judged_rels) in split.items():
                split[qid] = (query, {new[p]: r for p, r in judged_rels.items()})
        remap = np.array([new.get(i, -1) for i in range(max(new) + 1)] + [-1])
        for lists in self.bm25.values():
            for qid, (idx, scores) in lists.items():
                kept = remap[np.minimum(idx, len(remap) - 1)]
                lists[qid] = (kept[kept >= 0], scores[kept >= 0])


def load_model(path: str, max_length: int, device: str) -> Any:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(path, device=device).float()  # fp16 copies load as fp32
    model.max_seq_length = max_length
    return model


def evaluate(model: Any, data: HomeDepot, knobs: Knobs) -> dict[str, float]:
    """Dense full-corpus nDCG@10 and Recall@100 over the dev queries, exact search; with
    --bm25, the same fused with BM25's top 100 (DBSF, offline)."""
    queries = list(data.dev.values())
    docs = model.encode(
        [knobs.document_prefix + t for t in data.titles], batch_size=512, normalize_embeddings=True
    )
    qs = model.encode(
        [knobs.query_prefix + q for q, _ in queries], batch_size=512, normalize_embeddings=True
    )
    sims = qs @ docs.T
    dense = [np.argsort(-row)[:100] for row in sims]
    out = {f"dense_{k}": v for k, v in score(dense, queries).items()}
    if data.bm25:
        fused = []
        for row, top, qid in zip(sims, dense, data.dev, strict=True):
            idx, bm = data.bm25["dev"].get(qid, (np.zeros(0, int), np.zeros(0)))
            total: dict[int, float] = {}
            for ids, values in ((top, row[top]), (idx, bm)):
                for i, v in zip(ids, dbsf(values), strict=True):
                    total[int(i)] = total.get(int(i), 0.0) + v
            fused.append(np.array(sorted(total, key=total.__getitem__, reverse=True)[:100]))
        out |= {f"fused_{k}": v for k, v in score(fused, queries).items()}
    return out


def dbsf(values: np.ndarray) -> np.ndarray:
    """Qdrant's distribution-based score fusion: mean +- 3 sigma mapped to [0, 1]."""
    if len(values) == 0:
        return values
    lo, hi = values.mean() - 3 * values.std(), values.mean() + 3 * values.std()
    return np.clip((values - lo) / max(hi - lo, 1e-9), 0.0, 1.0)


def score(ranked: list[np.ndarray], queries: list) -> dict[str, float]:
    ndcgs, recalls = [], []
    for (_, judged), top in zip(queries, ranked, strict=True):
        gains = {p: PROTOCOL.gain(r) for p, r in judged.items()}
        relevant = {p for p, r in judged.items() if PROTOCOL.is_relevant(r)}
        value = ndcg(
            np.array([gains.get(int(p), 0.0) for p in top]), np.array(list(gains.values())), 10
        )
        if not math.isnan(value):
            ndcgs.append(value)
        if relevant:
            recalls.append(recall(np.array([int(p) in relevant for p in top]), len(relevant), 100))
    return {"ndcg10": float(np.mean(ndcgs)), "r100": float(np.mean(recalls))}


def teacher_lists(
    knobs: Knobs, data: HomeDepot, base: tuple[np.ndarray, dict[str, np.ndarray]] | None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Train query id -> (candidate indices, teacher logits): BM25's top k, or for "fused"
    the union of BM25's and the base model's top k scored by the sum of both z-scores."""
    out = {}
    for qid, (idx, scores) in data.bm25["train"].items():
        if qid not in data.train or len(idx) < 2:
            continue
        idx, scores = idx[: knobs.distill_k], scores[: knobs.distill_k].astype(np.float32)
        if knobs.teacher == "fused":
            assert base is not None
            docs, queries = base
            sims = docs @ queries[qid]
            dense_top = np.argsort(-sims)[: knobs.distill_k]
            bm = dict(zip(idx.tolist(), scores.tolist(), strict=True))
            idx = np.array(sorted(set(idx.tolist()) | set(dense_top.tolist())))
            scores = zscore(np.array([bm.get(i, 0.0) for i in idx])) + zscore(sims[idx])
        out[qid] = (idx, zscore(scores) / knobs.teacher_temperature)
    return out


def zscore(values: np.ndarray) -> np.ndarray:
    return (values - values.mean()) / max(float(values.std()), 1e-6)


def mine(model: Any, data: HomeDepot) -> dict[str, list[int]]:
    """Query id -> the model's top 110 products (settings filter and cut them)."""
    qids = list(data.train)
    ranked = model_top_k(model, [data.train[q][0] for q in qids], data.titles, 110, 512)
    return {q: [int(i) for i in top] for q, top in zip(qids, ranked, strict=True)}


def pairs(knobs: Knobs, data: HomeDepot, mined: dict[str, list[int]] | None) -> list[Pair]:
    rng = random.Random(knobs.seed)
    exclude_from = knobs.threshold if knobs.exclude_from is None else knobs.exclude_from
    lexical_top10 = {
        q: set(idx[:10].tolist()) for q, (idx, _) in data.bm25.get("train", {}).items()
    }
    out = []
    for qid, (query, judged) in data.train.items():
        positives = [p for p, r in judged.items() if r >= knobs.threshold]
        excluded = {p for p, r in judged.items() if r >= exclude_from}
        excluded_titles = {data.titles[p] for p in excluded}
        pool = [
            i
            for i in (mined or {}).get(qid, [])
            if i not in excluded and data.titles[i] not in excluded_titles
        ][knobs.skip_top : knobs.skip_top + knobs.top_k]
        lexical = [
            int(i)
            for i in data.bm25.get("train", {}).get(qid, ([], []))[0]
            if i not in excluded and data.titles[i] not in excluded_titles
        ][:50]
        below = knobs.judged_negatives_below
        judged_bad = [p for p, r in judged.items() if below is not None and r < below]
        for p in positives:
            negatives = rng.sample(judged_bad, min(knobs.negatives, len(judged_bad)))
            negatives += rng.sample(pool, min(knobs.negatives - len(negatives), len(pool)))
            while len(negatives) < knobs.negatives:
                negatives.append(rng.randrange(len(data.titles)))
            negatives += rng.sample(lexical, min(knobs.bm25_negatives, len(lexical)))
            weight = PROTOCOL.gain(judged[p]) if knobs.weighted else 1.0
            if knobs.bm25_miss_weight != 1.0 and p not in lexical_top10.get(qid, ()):
                weight *= knobs.bm25_miss_weight
            out.append(Pair(qid, query, p, negatives, weight, frozenset(positives)))
    for p in rng.sample(range(len(data.titles)), min(knobs.synthetic, len(data.titles))):
        negatives = [rng.randrange(len(data.titles)) for _ in range(knobs.negatives)]
        query = pseudo_query(data.titles[p], rng)
        out.append(Pair("", query, p, negatives, 1.0, frozenset([p])))
    return out


# Words per train query: 1 (5%), 2 (25%), 3 (33%), 4 (21%), 5 (10%), 6+ (6%).
QUERY_WORDS = (1, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 6)


def pseudo_query(title: str, rng: random.Random) -> str:
    """A shopper-like query from a title (Contriever's cropping, at query length): a
    contiguous span, or words kept in order (brand + product type), lower-cased."""
    words = [w.strip(".,()").lower() for w in title.split()]
    words = [w for w in words if w]
    n = min(rng.choice(QUERY_WORDS), len(words))
    if rng.random() < 0.5:
        start = rng.randrange(len(words) - n + 1)
        return " ".join(words[start : start + n])
    return " ".join(words[i] for i in sorted(rng.sample(range(len(words)), n)))


def batches(rows: list[Pair], size: int, rng: random.Random, steps: int) -> list[list[Pair]]:
    """`steps` batches with no query or product twice in one (sentence-transformers'
    NoDuplicatesBatchSampler's rule: a repeat would be an unmasked false negative)."""
    out: list[list[Pair]] = []
    order: list[int] = []
    while len(out) < steps:
        if not order:
            order = list(range(len(rows)))
            rng.shuffle(order)
        batch: list[Pair] = []
        deferred: list[int] = []
        queries: set[str] = set()
        products: set[int] = set()
        while order and len(batch) < size:
            i = order.pop()
            row = rows[i]
            if row.query in queries or row.product in products:
                deferred.append(i)
                continue
            queries.add(row.query)
            products.add(row.product)
            batch.append(row)
        order.extend(deferred)
        if len(batch) == size:
            out.append(batch)
        else:
            order = []  # the epoch's tail: start a new shuffle
    return out


def train(
    knobs: Knobs,
    data: HomeDepot,
    model_path: str,
    mined: dict | None,
    device: str,
    teacher: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[Any, float]:
    """The trained model and the mean fraction of the score matrix the margin mask hid."""
    torch.manual_seed(knobs.seed)
    draw = random.Random(knobs.seed + 1)
    model = load_model(model_path, knobs.max_length, device)
    rows = pairs(knobs, data, mined)
    total = int(len(rows) // knobs.batch_size * knobs.epochs)
    warm = int(0.1 * total)
    optimizer = torch.optim.AdamW(model.parameters(), lr=knobs.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / max(1, warm) if s < warm else max(0.0, (total - s) / max(1, total - warm))
        ),
    )
    model.train()
    masked = 0.0
    bf16 = use_bf16(TrainConfig())  # as `shopsearch train` decides: the hardware's bf16
    for batch in batches(rows, knobs.batch_size, random.Random(knobs.seed), total):
        docs = [b.product for b in batch] + [n for b in batch for n in b.negatives]
        with torch.autocast(device, dtype=torch.bfloat16, enabled=bf16):
            q = embed(model, [knobs.query_prefix + b.query for b in batch], device)
            d = embed(model, [knobs.document_prefix + data.titles[i] for i in docs], device)
        scores = q @ d.T
        labels = torch.arange(len(batch), device=device)
        if knobs.margin == UNMASKED:
            weights = torch.tensor([b.weight for b in batch], device=device)
            per_pair = F.cross_entropy(scores / knobs.temperature, labels, reduction="none")
            loss = (per_pair * weights).sum() / weights.sum()
        else:
            identity = torch.tensor(
                [[c in b.query_positives for c in docs] for b in batch], device=device
            )
            margin = None if knobs.margin is None else float(knobs.margin)
            loss, _, margin_mask = masked_info_nce(
                scores, labels, identity, knobs.temperature, margin
            )
            masked += margin_mask.float().mean().item() / max(1, total)
        if knobs.distill and teacher:
            loss = loss + knobs.distill * distillation(knobs, batch, q, teacher, data, model, draw)
        if knobs.symmetric:
            back = d[: len(batch)] @ q.T / knobs.temperature
            loss = loss + knobs.symmetric * F.cross_entropy(back, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return model, masked


def distillation(
    knobs: Knobs,
    batch: list[Pair],
    q: torch.Tensor,
    teacher: dict[str, tuple[np.ndarray, np.ndarray]],
    data: HomeDepot,
    model: Any,
    draw: random.Random,
) -> torch.Tensor:
    """KL(teacher || student) over `distill_n` of each query's teacher candidates."""
    rows = [i for i, b in enumerate(batch) if b.qid in teacher]
    picks, targets = [], []
    for i in rows:
        idx, logits = teacher[batch[i].qid]
        chosen = sorted(draw.sample(range(len(idx)), min(knobs.distill_n, len(idx))))
        picks.append(idx[chosen])
        targets.append(torch.tensor(logits[chosen], dtype=torch.float32))
    if not rows:
        return q.sum() * 0.0
    device = q.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(TrainConfig())):
        d = embed(model, [data.titles[int(j)] for p in picks for j in p], device.type)
    loss = q.new_zeros(())
    start = 0
    for i, p, target in zip(rows, picks, targets, strict=True):
        student = d[start : start + len(p)] @ q[i] / knobs.temperature
        start += len(p)
        loss = loss + F.kl_div(
            F.log_softmax(student, 0), F.softmax(target.to(device), 0), reduction="sum"
        )
    return loss / len(rows)


def embed(model: Any, texts: list[str], device: str) -> torch.Tensor:
    features = model.tokenize(texts)
    features = {k: v.to(device) if torch.is_tensor(v) else v for k, v in features.items()}
    return model(features)["sentence_embedding"].float()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=sorted(SETS), required=True)
    parser.add_argument("--only", nargs="+", help="these settings of the set only")
    parser.add_argument("--data", type=Path, default=HOMEDEPOT)
    parser.add_argument("--model", default=None, help="base model dir (default: resolved)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--bm25",
        type=Path,
        default=None,
        help="BM25 top 100 per train and dev query (benchmarks/bm25_lists.py): the set "
        "distill's teacher, and fused figures",
    )
    args = parser.parse_args()
    if args.model is None:
        from shopsearch.encoders import resolve_base_model

        args.model = str(resolve_base_model(None))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    data = HomeDepot(args.data, args.quick, args.bm25)
    settings = {
        name: Knobs(**values)
        for name, values in SETS[args.set].items()
        if not args.only or name in args.only
    }
    start = time.perf_counter()
    base_model = load_model(args.model, 32, device)
    mined = {"base": mine(base_model, data)}
    base = None
    if any(k.distill and k.teacher == "fused" for k in settings.values()):
        base = (
            base_model.encode(data.titles, batch_size=512, normalize_embeddings=True),
            dict(
                zip(
                    data.train,
                    base_model.encode(
                        [q for q, _ in data.train.values()],
                        batch_size=512,
                        normalize_embeddings=True,
                    ),
                    strict=True,
                )
            ),
        )
    print(
        f"{len(data.train)} train queries mined in {time.perf_counter() - start:.0f} s", flush=True
    )
    kept: dict[str, Any] = {}
    results: dict[str, Any] = {}
    for name, knobs in settings.items():
        if knobs.mined_by not in mined and knobs.mined_by != "none":
            mined[knobs.mined_by] = mine(kept[knobs.mined_by], data)
        start = time.perf_counter()
        teacher = teacher_lists(knobs, data, base) if knobs.distill else None
        model, masked = train(knobs, data, args.model, mined.get(knobs.mined_by), device, teacher)
        seconds = time.perf_counter() - start
        results[name] = {
            **evaluate(model, data, knobs),
            "train_s": round(seconds, 1),
            "margin_masked": round(masked, 4),
            "knobs": asdict(knobs),
        }
        if knobs.keep:
            kept[name] = model
        figures = {k: v for k, v in results[name].items() if k != "knobs"}
        print(name, json.dumps(figures), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
