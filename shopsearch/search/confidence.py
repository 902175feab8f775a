"""The relevance floor: a calibrated probability that a result is relevant to its query.

A fused score orders one query's results but says nothing across queries: RRF's scores are
ranks, and DBSF normalises each list by the query's own mean and spread, so the first result
of a query nothing in the catalog matches scores as high as that of a query many products
match. The floor needs evidence that is absolute, so it reads, for the products of the page
alone, after the ranking decided them:

- `cosine`: the product's dense cosine with the query vector (as Qdrant computes it);
- `coverage`: the share of the query's BM25 terms the product holds (after Qdrant's
  tokenizer; a synonym's terms count for the words it stands for), as the default fusion
  computes it (shopsearch.search.adaptive_fusion);
- `bm25`: the product's raw BM25 score (`log1p` of it enters the model).

and turns them into a probability with a logistic model over those its JSON names,

    confidence = 1 / (1 + exp(-(b + w_cos * cosine + w_cov * coverage)))

whose coefficients ship beside this module (`confidence_prior.json`, with a model card: what
it was fit on, when, and its held-out figures) and are fit by `benchmarks/fit_confidence.py`
on Home Depot's train judgments: the judged results among the top 10 of the default search,
relevant at rating >= 2.5. Judged results alone, because an unjudged one has no label: the
confidence is the probability that a person judging the result calls it relevant (counting
every unjudged result irrelevant would calibrate it to how sparse a shop's judgments are,
about 0.4 at most on Home Depot, and transfer to no other shop). The prior leaves the raw
BM25 score out: its scale follows the catalog's size and text lengths (IDF), which a prior
shipped for every shop cannot know, while a cosine and a share of words mean the same in
any catalog. A cosine's scale is still the encoder's, so the prior holds for the encoder its
card names; under another encoder the confidences still order results but are not
calibrated.

The evidence costs one batch of two requests per query, both restricted to the page's point
ids (`HasId`): a dense search (exact: a few points' cosines) and a BM25 search that returns
each product's term ids. The second is left out where the default fusion's re-rank has
already worked out the page's coverage (`Hit.coverage`) and the model weighs no BM25 score.
`DEFAULT_MIN_CONFIDENCE` is the documented cut: a page none of whose results reaches it is
answered as `no_confident_match`.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from importlib import resources
from typing import TYPE_CHECKING, Any

import numpy as np

from shopsearch.errors import CollectionError, UsageError
from shopsearch.search.rules import Arranged
from shopsearch.search.sorting import relevant
from shopsearch.search.synonyms import Applied, coverage_terms
from shopsearch.store.backend import Hit, SearchMode, SearchRequest, SparseVec
from shopsearch.store.conditions import HasId
from shopsearch.store.documents import read_confidence

if TYPE_CHECKING:
    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
    from shopsearch.store.backend import Backend

PRIOR_FILE = "confidence_prior.json"
PRIOR_FORMAT = 1
# The evidence a model may weigh; its JSON names those it does, in its weights' order.
FEATURES = ("cosine", "coverage", "log1p_bm25")
# The cut `no_confident_match` is decided by, and the one whose precision and recall
# benchmarks/fit_confidence.py and the eval report show: the best F1 on Home Depot train.
DEFAULT_MIN_CONFIDENCE = 0.41


@dataclass(frozen=True)
class Evidence:
    """What the floor knows of one product for one query."""

    cosine: float
    coverage: float
    bm25: float

    def features(self, names: Sequence[str] = FEATURES) -> list[float]:
        """The named inputs (of `FEATURES`), in that order."""
        values = {
            "cosine": self.cosine,
            "coverage": self.coverage,
            "log1p_bm25": math.log1p(max(self.bm25, 0.0)),
        }
        return [values[n] for n in names]


@dataclass(frozen=True)
class ConfidenceModel:
    """A logistic model over `FEATURES`."""

    intercept: float
    weights: tuple[float, ...]
    card: dict[str, Any]
    features: tuple[str, ...] = FEATURES

    def probability(self, evidence: Sequence[Evidence]) -> list[float]:
        if not evidence:
            return []
        x = np.array([e.features(self.features) for e in evidence], dtype=np.float64)
        z = self.intercept + x @ np.asarray(self.weights, dtype=np.float64)
        return [float(p) for p in 1.0 / (1.0 + np.exp(-z))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PRIOR_FORMAT,
            "features": list(self.features),
            "intercept": self.intercept,
            "weights": list(self.weights),
            "default_min_confidence": DEFAULT_MIN_CONFIDENCE,
            "model_card": self.card,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfidenceModel:
        features = tuple(data.get("features", ()))
        if data.get("format") != PRIOR_FORMAT or not set(features) <= set(FEATURES):
            raise ValueError(
                f"{PRIOR_FILE}: expected format {PRIOR_FORMAT} over some of {list(FEATURES)}"
            )
        weights = tuple(float(w) for w in data["weights"])
        if len(weights) != len(features):
            raise ValueError(f"{PRIOR_FILE}: {len(weights)} weights for {len(features)} features")
        card = dict(data.get("model_card", {}))
        return cls(float(data["intercept"]), weights, card, features)


@functools.cache
def prior() -> ConfidenceModel:
    """The model shipped with the package."""
    text = resources.files("shopsearch.search").joinpath(PRIOR_FILE).read_text(encoding="utf-8")
    return ConfidenceModel.from_dict(json.loads(text))


def collection_model(backend: Backend) -> ConfidenceModel:
    """The model fit on the shop's judgments and stored with the collection (`shopsearch
    fusion fit --confidence`), else the package's prior."""
    return _stored_model(backend, read_confidence(backend))


def _stored_model(backend: Backend, stored: dict[str, Any] | None) -> ConfidenceModel:
    if stored is None:
        return prior()
    try:
        return ConfidenceModel.from_dict(stored)
    except (KeyError, TypeError, ValueError) as exc:
        raise CollectionError(
            f"the confidence model stored with {backend.location} is unreadable ({exc}); "
            "fit it again with `shopsearch fusion fit --confidence`"
        ) from exc


def model_info(backend: Backend) -> dict[str, Any]:
    """Which confidence model the collection's searches use, as `shopsearch info` shows it:
    the package's prior, or the collection's own with what it was fit on (and a problem, where
    it cannot be read)."""
    stored = read_confidence(backend)
    if stored is None:
        return {"source": "package prior", "fit_on": "Home Depot train"}
    try:
        card = _stored_model(backend, stored).card
    except CollectionError as exc:
        return {"source": "collection", "problem": str(exc)}
    return {"source": "collection", "fit_on": card.get("fit_on"), "fit_at": card.get("fit_at")}


def check_min_confidence(value: float | None, where: str = "--min-confidence") -> None:
    """A cut is a probability: 0 keeps everything, 1 nothing but certainties. `where` names
    the flag or request field in the message."""
    if value is None:
        return
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise UsageError(f"{where} must be a number from 0 to 1 (got {value})")


def evidence_requests(
    dense: np.ndarray, sparse: SparseVec, ids: Sequence[str], lexical: bool = True
) -> list[SearchRequest]:
    """The requests that read the evidence of the products `ids` for one query: their
    cosines (a dense search among them, exact) and, where `lexical`, their BM25 scores with
    their term ids."""
    among = (HasId(tuple(ids)),)
    cosines = SearchRequest(
        dense=dense,
        sparse=None,
        conditions=among,
        mode=SearchMode.DENSE,
        limit=len(ids),
        exact=True,
        with_payload=False,
    )
    if not lexical:
        return [cosines]
    terms = SearchRequest(
        dense=None,
        sparse=sparse,
        conditions=among,
        mode=SearchMode.BM25,
        limit=len(ids),
        with_payload=False,
        with_terms=True,
    )
    return [cosines, terms]


def page_evidence(
    ids: Sequence[str],
    sparse: SparseVec,
    synonyms: Sequence[Applied] | None,
    dense_hits: Sequence[Hit],
    bm25_hits: Sequence[Hit] | None,
    known: Mapping[str, float] | None = None,
) -> list[Evidence]:
    """Each of `ids`' evidence from the searches `evidence_requests` built. A product
    missing from the BM25 search holds none of the query's terms. Without a BM25 search,
    each product's coverage is `known`'s and its BM25 score is not known (NaN)."""
    cosines = {h.point_id: h.score for h in dense_hits}
    if bm25_hits is None:
        assert known is not None
        return [Evidence(cosines.get(p, 0.0), known[p], math.nan) for p in ids]
    own, mapped = coverage_terms(sparse, synonyms, bm25_hits)
    wanted = frozenset(own)
    lexical = {
        h.point_id: (len(wanted.intersection(h.terms)) / len(wanted) if wanted else 0.0, h.score)
        for h in mapped
    }
    out = []
    for point in ids:
        coverage, bm25 = lexical.get(point, (0.0, 0.0))
        out.append(Evidence(cosines.get(point, 0.0), coverage, bm25))
    return out


def confident(hits: Sequence[Hit], floor: float = DEFAULT_MIN_CONFIDENCE) -> bool:
    """Whether any of `hits` reaches `floor`: a page with none is no confident match."""
    return any(h.confidence is not None and h.confidence >= floor for h in hits)


def read_evidence(
    search: ProductSearch,
    queries: Sequence[Query],
    ids: Sequence[Sequence[str]],
    known: Sequence[Mapping[str, float]] | None = None,
) -> list[list[Evidence]]:
    """Each prepared query's evidence for its products `ids` (point ids), in one batch of
    id-restricted searches (`evidence_requests`); the search needs an encoder.
    `benchmarks/fit_confidence.py` fits the model on what this reads. `known`: each query's
    coverage of some of its products, worked out already; a query whose every product it
    covers is not searched by BM25, and its evidence holds no BM25 score (NaN)."""
    if not queries:
        return []
    texts = [q.searched or q.text for q in queries]
    dense = search._encode(texts)
    sparse = [search._sparse(t, q) for t, q in zip(texts, queries, strict=True)]
    requests = []
    lexical = [known is None or not all(p in known[j] for p in w) for j, w in enumerate(ids)]
    for j, wanted in enumerate(ids):
        requests += evidence_requests(dense[j], sparse[j], wanted, lexical[j]) if wanted else []
    results = iter(search.backend.search_batch(requests))
    out = []
    for j, wanted in enumerate(ids):
        if not wanted:
            out.append([])
            continue
        dense_hits = next(results)
        bm25_hits = next(results) if lexical[j] else None
        found = known[j] if known is not None else None
        out.append(
            page_evidence(wanted, sparse[j], queries[j].synonyms, dense_hits, bm25_hits, found)
        )
    return out


def with_confidence(
    search: ProductSearch,
    queries: Sequence[Query],
    options: SearchOptions,
    pages: Sequence[list[Hit]],
) -> list[list[Hit]]:
    """Each page's hits with their `confidence` (those that have none yet), and, where
    `options.min_confidence` is set, without the hits under it. `queries` are prepared (their
    searched text and synonyms decided). A page the merchandising rules arranged was cut
    before its pins were placed (search/rules.py): a pin stays whatever its confidence.

    Without an encoder there is no cosine, and so no confidence: the hits are left without
    one, and a floor is refused."""
    if search.encoder is None:
        if options.min_confidence is not None:
            raise UsageError(
                "--min-confidence needs the encoder (the dense cosine is part of the evidence)"
            )
        return [list(p) for p in pages]
    model = search.confidence.get()
    todo = [
        (i, list(dict.fromkeys(h.point_id for h in page if h.confidence is None)))
        for i, page in enumerate(pages)
    ]
    todo = [(i, ids) for i, ids in todo if ids]
    # The coverage the ranking worked out, where the model needs no BM25 score.
    known = None
    if "log1p_bm25" not in model.features:
        known = [
            {h.point_id: h.coverage for h in pages[i] if h.coverage is not None} for i, _ in todo
        ]
    read = read_evidence(search, [queries[i] for i, _ in todo], [ids for _, ids in todo], known)
    found = {
        i: dict(zip(ids, model.probability(evidence), strict=True))
        for (i, ids), evidence in zip(todo, read, strict=True)
    }
    out: list[list[Hit]] = []
    for i, page in enumerate(pages):
        scored = found.get(i, {})
        hits = [
            h if h.confidence is not None else replace(h, confidence=scored.get(h.point_id))
            for h in page
        ]
        if isinstance(page, Arranged):
            out.append(Arranged(hits, page.fired))
        else:
            out.append(relevant(hits, len(hits), options.min_confidence))
    return out
