"""Learned fusion: rank the union of the dense and BM25 candidates with a small model fit on
a shop's own judgments.

RRF and DBSF see only each list's ranks or scores. They cannot tell a title that holds every
query word from one that shares one rare word with it, and where queries are judged on a
lexical search's results (as Home Depot's are), that is most of what decides relevance: fused
by DBSF, even a fine-tuned encoder adds little over BM25 alone. This model reads both lists'
scores and ranks plus how much of the query each product's BM25 terms cover, and scores each
candidate; fit on a shop's train judgments it ranks and recalls better than DBSF, for a
fine-tuned encoder and the zero-shot base model alike (benchmarks/RESULTS.md section 6).

The model is the mean of six one-hidden-layer perceptrons in numpy (32 units each, stored
as one layer of 192: scoring a query's ~150 candidates is one small matrix product). It is
fit listwise, by Adam: for each judged query, the softmax of its candidates' scores is
pulled towards softmax(gain / 0.1), the judged gains (unjudged candidates count as 0), by
cross-entropy (ListNet; Cao et al., "Learning to Rank: From Pairwise Approach to Listwise
Approach", ICML 2007). A query's list is what the search ranks, so the loss weighs each
query alike and only the order within a list counts. Fit pointwise (least squares on the
gains) instead, the same features rank the top as well but recall less (section 6). The
model is stored with the collection, and pinned to the encoder and BM25 settings it was fit
on: other scores would mean other features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shopsearch.errors import CollectionError
from shopsearch.store.backend import Hit

FEATURES = (
    "dense z-score",
    "dense log rank",
    "dense missing",
    "bm25 z-score",
    "bm25 log rank",
    "bm25 missing",
    "bm25 / best bm25",
    "dense cosine",
    "query terms",
    "query terms covered",
    "product terms",
)
FORMAT = "shopsearch-learned-fusion/1"
# Adam steps a fit takes at least: about what 10 epochs of Home Depot's train queries take.
MIN_STEPS = 2000
# The target's sharpness: a list's target is softmax(gain / TEMPERATURE) over its candidates.
TEMPERATURE = 0.1


def union_features(
    query_terms: Sequence[int], dense: Sequence[Hit], bm25: Sequence[Hit], depth: int
) -> tuple[list[Hit], np.ndarray]:
    """The candidates of both lists (dense order, then BM25's others) and their features.

    `depth`: the candidates asked of each list; a product missing from one list gets that
    list's worst rank and a z-score below its worst. Each hit's `terms` are its BM25 term ids.
    """
    dense_z = _z_scores([h.score for h in dense])
    bm25_z = _z_scores([h.score for h in bm25])
    by_id: dict[str, Hit] = {}
    for hit in (*dense, *bm25):
        by_id.setdefault(hit.point_id, hit)
    n = len(by_id)
    x = np.zeros((n, len(FEATURES)), dtype=np.float32)
    row = {pid: i for i, pid in enumerate(by_id)}
    missing_rank = math.log1p(depth)
    x[:, 0] = (dense_z.min() - 1.0) if len(dense) else -1.0
    x[:, 1] = missing_rank
    x[:, 2] = 1.0
    x[:, 3] = (bm25_z.min() - 1.0) if len(bm25) else -1.0
    x[:, 4] = missing_rank
    x[:, 5] = 1.0
    x[:, 7] = (dense[-1].score - 0.05) if dense else 0.0
    for rank, hit in enumerate(dense):
        i = row[hit.point_id]
        x[i, 0], x[i, 1], x[i, 2], x[i, 7] = dense_z[rank], math.log1p(rank), 0.0, hit.score
    best = bm25[0].score if bm25 else 0.0
    for rank, hit in enumerate(bm25):
        i = row[hit.point_id]
        x[i, 3], x[i, 4], x[i, 5] = bm25_z[rank], math.log1p(rank), 0.0
        x[i, 6] = hit.score / best if best > 0 else 0.0
    wanted = set(query_terms)
    x[:, 8] = len(wanted)
    for i, hit in enumerate(by_id.values()):
        terms = hit.terms
        x[i, 9] = len(wanted.intersection(terms)) / len(wanted) if wanted else 0.0
        x[i, 10] = len(terms)
    return list(by_id.values()), x


def _z_scores(scores: list[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    if len(s) == 0:
        return s
    spread = s.std()
    return (s - s.mean()) / (spread if spread > 0 else 1.0)


@dataclass(frozen=True)
class FusionModel:
    """A fitted scorer and what it was fit against (`fitted_on`: encoder, BM25, judgments)."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    depth: int
    fitted_on: dict[str, Any]

    def score(self, x: np.ndarray) -> np.ndarray:
        hidden = np.maximum((x - self.mean) / self.scale @ self.w1 + self.b1, 0.0)
        return hidden @ self.w2 + self.b2

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "features": list(FEATURES),
            "depth": self.depth,
            "fitted_on": self.fitted_on,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "w1": self.w1.tolist(),
            "b1": self.b1.tolist(),
            "w2": self.w2.tolist(),
            "b2": self.b2,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> FusionModel:
        if data.get("format") != FORMAT or data.get("features") != list(FEATURES):
            raise CollectionError(
                f"{where} holds a learned fusion of another format ({data.get('format')!r}): "
                "fit it again with `shopsearch fusion fit`"
            )
        try:
            model = cls(
                mean=np.asarray(data["mean"], dtype=np.float32),
                scale=np.asarray(data["scale"], dtype=np.float32),
                w1=np.asarray(data["w1"], dtype=np.float32),
                b1=np.asarray(data["b1"], dtype=np.float32),
                w2=np.asarray(data["w2"], dtype=np.float32),
                b2=float(data["b2"]),
                depth=int(data["depth"]),
                fitted_on=dict(data["fitted_on"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise CollectionError(
                f"{where} holds a damaged learned fusion ({exc}): fit it again with "
                "`shopsearch fusion fit`"
            ) from exc
        n, hidden = len(FEATURES), len(model.b1)
        shapes = [(model.mean, (n,)), (model.scale, (n,)), (model.w1, (n, hidden))]
        if any(a.shape != shape for a, shape in [*shapes, (model.w2, (hidden,))]):
            raise CollectionError(
                f"{where} holds a damaged learned fusion (weights of the wrong shape): fit it "
                "again with `shopsearch fusion fit`"
            )
        return model


def fit(
    lists: Sequence[np.ndarray],
    gains: Sequence[np.ndarray],
    *,
    depth: int,
    fitted_on: dict[str, Any],
    members: int = 6,
    hidden: int = 32,
    epochs: int = 10,
    batch: int = 32,
    learning_rate: float = 1e-3,
    temperature: float = TEMPERATURE,
    seed: int = 0,
) -> FusionModel:
    """The mean of `members` perceptrons, each fit by Adam over shuffled batches of `batch`
    queries from its own seed, stored as one wider layer (their units side by side).

    `lists[q]` holds query q's candidates' features, `gains[q]` their judged gains. A query
    with no gain above 0 has nothing to rank first and is left out of the loss (its rows
    still set the features' scaling)."""
    if not lists or sum(len(x) for x in lists) == 0:
        raise ValueError("no candidates to fit a fusion on")
    x = np.concatenate(lists)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    ranked = [q for q, g in enumerate(gains) if len(g) and float(np.max(g)) > 0]
    if not ranked:
        raise ValueError("no judged product with a gain above 0 among the candidates")
    width = max(len(lists[q]) for q in ranked)
    xs = np.zeros((len(ranked), width, x.shape[1]), np.float32)
    target = np.zeros((len(ranked), width), np.float32)
    present = np.zeros((len(ranked), width), bool)
    for row, q in enumerate(ranked):
        n = len(lists[q])
        xs[row, :n] = (lists[q] - mean) / scale
        present[row, :n] = True
        target[row, :n] = _softmax((np.asarray(gains[q], np.float64) / temperature)[None])[0]
    # A small judgments file still gets MIN_STEPS updates: 10 epochs of 60 queries would be 20.
    epochs = max(epochs, math.ceil(MIN_STEPS / math.ceil(len(ranked) / batch)))
    fitted = [
        _fit_member(
            xs,
            present,
            target,
            np.random.default_rng([seed, m]),
            hidden,
            epochs,
            batch,
            learning_rate,
        )
        for m in range(members)
    ]
    w1 = np.concatenate([f[0] for f in fitted], axis=1)
    b1 = np.concatenate([f[1] for f in fitted])
    w2 = np.concatenate([f[2] for f in fitted]) / members
    return FusionModel(mean, scale, w1, b1, w2, 0.0, depth, fitted_on)


def _fit_member(
    xs: np.ndarray,
    present: np.ndarray,
    target: np.ndarray,
    rng: np.random.Generator,
    hidden: int,
    epochs: int,
    batch: int,
    learning_rate: float,
) -> list[np.ndarray]:
    """One perceptron (He-initialised), by Adam on the lists' cross-entropy. Its output bias
    would add the same to every candidate of a list, which a softmax ignores: there is none."""
    features = xs.shape[2]
    params = [
        rng.normal(0.0, math.sqrt(2.0 / features), (features, hidden)).astype(np.float32),
        np.zeros(hidden, np.float32),
        rng.normal(0.0, math.sqrt(1.0 / hidden), hidden).astype(np.float32),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    for _ in range(epochs):
        order = rng.permutation(len(xs))
        for start in range(0, len(xs), batch):
            idx = order[start : start + batch]
            xb = xs[idx]
            w1, b1, w2 = params
            pre = xb @ w1 + b1
            act = np.maximum(pre, 0.0)
            logits = np.where(present[idx], act @ w2, -np.inf)
            # d(cross-entropy)/d(score) = softmax(scores) - target; 0 on the padding.
            err = (_softmax(logits) - target[idx]) / len(idx)
            d_act = err[..., None] * w2 * (pre > 0)
            grads = [
                xb.reshape(-1, features).T @ d_act.reshape(-1, hidden),
                d_act.sum(axis=(0, 1)),
                act.reshape(-1, hidden).T @ err.reshape(-1),
            ]
            step += 1
            for p, g, m, v in zip(params, grads, moments, squares, strict=True):
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                p -= (
                    learning_rate * (m / (1 - beta1**step)) / (np.sqrt(v / (1 - beta2**step)) + eps)
                )
    return params


def _softmax(logits: np.ndarray) -> np.ndarray:
    """Over the last axis; -inf entries get 0."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
