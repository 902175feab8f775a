"""Judgments + catalog -> the training sets of both stages, as HF `datasets.Dataset`s.

Product texts are rendered exactly as ingest renders them (same reader, validation and text
template), so the encoder is trained on the text it will later be asked to embed. Grades are
mapped once, by a `GradeMap`: categorical labels (ESCI) or numeric ratings binned into ordinal
levels; stage 1 takes pairs at or above a relevance threshold, stage 2 keeps every judged
candidate of a query, grouped by level. Needs the `train` extra (`datasets`); BM25 mining uses
Qdrant's own BM25 tokenizer so "hard for BM25" means hard for the `bm25` vector we serve.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from shopsearch.errors import CatalogError, UsageError

logger = logging.getLogger(__name__)

JUDGMENT_FIELDS = ("query_id", "query", "product_id", "grade")
_JUDGMENT_ALIASES: dict[str, tuple[str, ...]] = {
    "query_id": ("query_id", "qid"),
    "query": ("query", "query_text", "search_term"),
    "product_id": ("product_id", "product_uid", "doc_id", "id"),
    "grade": ("grade", "relevance", "esci_label", "label", "rating", "score"),
}
ESCI_LEVELS = {"irrelevant": 0, "complement": 1, "substitute": 2, "exact": 3}
DEFAULT_BINS = (1.5, 2.0, 2.5, 3.0)


# -- grades ------------------------------------------------------------------------
@dataclass(frozen=True)
class GradeMap:
    """Raw judgment value -> (relevance, ordinal level); level 0 is the worst.

    Categorical (`labels`, e.g. ESCI): relevance = level. Numeric (`bins`): relevance = the raw
    value, level = number of bin edges <= value (edges (1.5, 2, 2.5, 3) give Home Depot's
    1-3 mean ratings 5 levels: <1.5, [1.5, 2), [2, 2.5), [2.5, 3), 3). `positive_threshold`
    applies to relevance: stage-1 positives and dev "relevant" products are those at or above it.
    """

    labels: Mapping[str, int] | None = None
    bins: tuple[float, ...] | None = None
    positive_threshold: float = 2.5

    def __post_init__(self) -> None:
        if (self.labels is None) == (self.bins is None):
            raise UsageError("a grade map needs either labels or bins")
        if self.bins is not None and list(self.bins) != sorted(self.bins):
            raise UsageError(f"grade bins must increase: {self.bins}")

    @property
    def n_levels(self) -> int:
        if self.labels is not None:
            return max(self.labels.values()) + 1
        return len(self.bins or ()) + 1

    def relevance(self, value: Any) -> float:
        if self.labels is not None:
            return float(self.level(value))
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise UsageError(f"grade {value!r} is not a number (use a label map)") from None
        if math.isnan(number):
            raise UsageError("grade is NaN")
        return number

    @property
    def positive_level(self) -> int:
        """The lowest level all of whose judgments are positives (relevance >= the threshold):
        what ROAR's retrieval anchor may take as a query's positive, as stage 1 would."""
        if self.labels is not None:
            return math.ceil(self.positive_threshold)
        return int(np.searchsorted(np.asarray(self.bins), self.positive_threshold)) + 1

    def level(self, value: Any) -> int:
        if self.labels is not None:
            key = str(value).strip().lower()
            if key not in self.labels:
                raise UsageError(
                    f"unknown grade label {value!r} (known: {', '.join(sorted(self.labels))})"
                )
            return int(self.labels[key])
        return int(np.searchsorted(np.asarray(self.bins), self.relevance(value), side="right"))


def esci_grade_map() -> GradeMap:
    """Exact 3 > Substitute 2 > Complement 1 > Irrelevant 0 (also E/S/C/I); positives: E and S."""
    labels = dict(ESCI_LEVELS)
    labels.update({name[0]: level for name, level in ESCI_LEVELS.items()})
    return GradeMap(labels=labels, positive_threshold=2.0)


def parse_grade_map(spec: str | None, positive_threshold: float | None = None) -> GradeMap:
    """`esci`, `bins:1.5,2,2.5,3` or `Exact=3,Substitute=2,...`; None/`auto` = default bins."""
    text = (spec or "auto").strip()
    if text.lower() == "esci":
        grade_map = esci_grade_map()
    elif text.lower() in ("auto", "bins", "numeric"):
        grade_map = GradeMap(bins=DEFAULT_BINS)
    elif text.lower().startswith("bins:"):
        try:
            edges = tuple(float(x) for x in text[5:].split(",") if x.strip())
        except ValueError:
            raise UsageError(f"bad grade map {spec!r}: bins must be numbers") from None
        grade_map = GradeMap(bins=edges)
    else:
        labels: dict[str, int] = {}
        for item in text.split(","):
            name, sep, level = item.partition("=")
            if not sep or not name.strip():
                raise UsageError(f"bad grade map {spec!r}: expected LABEL=LEVEL,...")
            try:
                labels[name.strip().lower()] = int(level)
            except ValueError:
                raise UsageError(f"bad grade map {spec!r}: level {level!r} is no integer") from None
        if min(labels.values()) < 0:
            raise UsageError(f"bad grade map {spec!r}: levels must be >= 0")
        grade_map = GradeMap(labels=labels, positive_threshold=float(max(labels.values())))
    if positive_threshold is not None:
        grade_map = GradeMap(grade_map.labels, grade_map.bins, float(positive_threshold))
    return grade_map


# -- judgments and products ----------------------------------------------------------
@dataclass
class Judgments:
    """One row per (query, product) judgment; ids as strings, grades mapped."""

    query_ids: list[str]
    queries: list[str]
    product_ids: list[str]
    relevance: list[float]
    levels: list[int]
    grade_map: GradeMap

    def __len__(self) -> int:
        return len(self.query_ids)

    def by_query(self) -> dict[str, list[int]]:
        rows: dict[str, list[int]] = defaultdict(list)
        for i, qid in enumerate(self.query_ids):
            rows[qid].append(i)
        return dict(rows)

    def query_texts(self) -> dict[str, str]:
        return dict(zip(self.query_ids, self.queries, strict=True))

    def positives(self) -> dict[str, set[str]]:
        """Query id -> ids of products at or above the positive threshold."""
        out: dict[str, set[str]] = defaultdict(set)
        threshold = self.grade_map.positive_threshold
        for qid, pid, rel in zip(self.query_ids, self.product_ids, self.relevance, strict=True):
            if rel >= threshold:
                out[qid].add(pid)
        return dict(out)


def load_judgments(
    path: Path, grade_map: GradeMap, column_map: Mapping[str, str] | None = None
) -> Judgments:
    """Read judgments (parquet, CSV, JSONL); columns found by name or `column_map`.

    Fields: query_id (optional: the query text stands in), query, product_id, grade.
    """
    table = _read_table(Path(path))
    columns = _resolve_judgment_columns(table.column_names, dict(column_map or {}), Path(path))
    table = table.filter(pc.is_valid(table[columns["grade"]]))

    def strings(name: str) -> list[str]:
        return [str(v).strip() for v in table[columns[name]].to_pylist()]

    queries = strings("query")
    query_ids = strings("query_id") if "query_id" in columns else list(queries)
    product_ids = [_id_string(v) for v in table[columns["product_id"]].to_pylist()]
    raw = table[columns["grade"]].to_pylist()
    return Judgments(
        query_ids=query_ids,
        queries=queries,
        product_ids=product_ids,
        relevance=[grade_map.relevance(v) for v in raw],
        levels=[grade_map.level(v) for v in raw],
        grade_map=grade_map,
    )


def load_product_texts(
    path: Path,
    column_map: Mapping[str, str] | None = None,
    template: str | None = None,
) -> dict[str, str]:
    """Product id -> the text ingest would encode (same reader, validation and template).

    Rows ingest would reject are skipped (and counted in the log); a repeated id keeps its first
    row, as the judgments of a CSV like ESCI's repeat the product on every judgment.
    """
    from shopsearch.ingest.product_text import DEFAULT_TEMPLATE, ProductTextTemplate
    from shopsearch.ingest.readers import CatalogReader
    from shopsearch.ingest.validate import Product, validate

    reader = CatalogReader(Path(path), column_map)
    renderer = ProductTextTemplate(template or DEFAULT_TEMPLATE)
    texts: dict[str, str] = {}
    rejected = 0
    for batch in reader.batches(4096):
        for raw in batch:
            product = validate(raw)
            if not isinstance(product, Product):
                rejected += 1
                continue
            texts.setdefault(product.id, renderer.render(product))
    if not texts:
        raise CatalogError(f"no valid products in {path}")
    logger.info("product texts: %d (%d rows rejected)", len(texts), rejected)
    return texts


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise UsageError(f"judgments file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix in (".csv", ".tsv"):
            import pyarrow.csv as pcsv

            return pcsv.read_csv(
                path,
                parse_options=pcsv.ParseOptions(
                    delimiter="\t" if suffix == ".tsv" else ",", newlines_in_values=True
                ),
            )
        if suffix in (".jsonl", ".json"):
            import pyarrow.json as pjson

            return pjson.read_json(path)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"cannot read judgments {path}: {exc}") from exc
    raise UsageError(f"unknown judgments format {path.name} (use parquet, csv, tsv or jsonl)")


def _resolve_judgment_columns(
    available: Sequence[str], column_map: dict[str, str], path: Path
) -> dict[str, str]:
    unknown = set(column_map) - set(JUDGMENT_FIELDS)
    if unknown:
        raise UsageError(
            f"unknown judgment field(s) {', '.join(sorted(unknown))} "
            f"(fields: {', '.join(JUDGMENT_FIELDS)})"
        )
    columns: dict[str, str] = {}
    for name in JUDGMENT_FIELDS:
        if name in column_map:
            if column_map[name] not in available:
                raise UsageError(f"{path.name} has no column '{column_map[name]}'")
            columns[name] = column_map[name]
            continue
        found = next((c for c in _JUDGMENT_ALIASES[name] if c in available), None)
        if found is not None:
            columns[name] = found
        elif name != "query_id":
            raise UsageError(
                f"{path.name} has no {name} column (columns: {', '.join(available)}); "
                f"map one with {name}=COLUMN"
            )
    return columns


def _id_string(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


# -- hard-negative mining -------------------------------------------------------------
class Bm25Index:
    """Exact BM25 over product texts with Qdrant's tokenizer (IDF as the `bm25` vector's modifier).

    Documents are embedded once with `qdrant_edge.Bm25` (term-frequency weights with k, b,
    avg_len); a query scores sum over its tokens of idf(t) * weight(t, d) through an inverted
    index of numpy arrays. Exact, no server, fast enough for mining (short queries).
    """

    def __init__(self, texts: Sequence[str]) -> None:
        from shopsearch.store.bm25 import Bm25Settings

        settings = Bm25Settings().fitted(texts[:2000])
        self._model = settings.model()
        postings: dict[int, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
        for doc, text in enumerate(texts):
            vec = self._model.embed_document(text)
            for token, weight in zip(vec.indices, vec.values, strict=True):
                docs, weights = postings[token]
                docs.append(doc)
                weights.append(weight)
        n = len(texts)
        self._n = n
        self._postings = {
            t: (np.asarray(d, dtype=np.int32), np.asarray(w, dtype=np.float32))
            for t, (d, w) in postings.items()
        }
        self._idf = {
            t: math.log(1.0 + (n - len(d) + 0.5) / (len(d) + 0.5))
            for t, (d, _) in self._postings.items()
        }

    def scores(self, query: str) -> np.ndarray:
        """The query's BM25 score for every document (0 where no token matches)."""
        scores = np.zeros(self._n, dtype=np.float32)
        for token in set(self._model.embed_query(query).indices):
            if token in self._postings:
                docs, weights = self._postings[token]
                scores[docs] += self._idf[token] * weights
        return scores

    def top_k(self, query: str, k: int) -> np.ndarray:
        """Indices of the k best documents (fewer when fewer match), best first."""
        return self.best(self.scores(query), k)

    @staticmethod
    def best(scores: np.ndarray, k: int) -> np.ndarray:
        """Indices of the k highest of `scores` above 0, best first (ties in index order)."""
        matched = np.flatnonzero(scores > 0)
        if matched.size > k:
            matched = matched[np.argpartition(-scores[matched], k - 1)[:k]]
        return matched[np.argsort(-scores[matched], kind="stable")]


def model_top_k(
    model: Any, queries: Sequence[str], texts: Sequence[str], k: int, batch_size: int = 128
) -> list[np.ndarray]:
    """Dense top-k product indices per query with a sentence-transformers model (exact)."""
    docs = model.encode(
        list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    qs = model.encode(
        list(queries), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True
    )
    out: list[np.ndarray] = []
    for start in range(0, len(qs), 1024):
        sims = qs[start : start + 1024] @ docs.T
        kk = min(k, sims.shape[1])
        top = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
        out.extend(np.take_along_axis(top, order, axis=1))
    return out


def mine_hard_negatives(
    judgments: Judgments,
    product_texts: Mapping[str, str],
    method: str,
    top_k: int = 50,
    skip_top: int = 0,
    model: Any | None = None,
) -> dict[str, list[str]]:
    """Query id -> candidate hard negatives (best first) from BM25 or a dense model.

    Excluded: every judged positive of the query and any product whose text equals a
    positive's text (a duplicate listing is not a negative). `skip_top` drops the first ranks,
    where unjudged false negatives concentrate.
    """
    ids = list(product_texts)
    texts = [product_texts[i] for i in ids]
    query_texts = judgments.query_texts()
    qids = list(query_texts)
    if method == "bm25":
        index = Bm25Index(texts)
        ranked = [index.top_k(query_texts[q], top_k + skip_top) for q in qids]
    elif method == "model":
        if model is None:
            raise UsageError("mining hard negatives with a model needs the model")
        ranked = model_top_k(model, [query_texts[q] for q in qids], texts, top_k + skip_top)
    else:
        raise UsageError(f"unknown hard-negative method {method!r} (use bm25 or model)")
    positives = judgments.positives()
    out: dict[str, list[str]] = {}
    for qid, order in zip(qids, ranked, strict=True):
        excluded = positives.get(qid, set())
        excluded_texts = {product_texts[p] for p in excluded if p in product_texts}
        out[qid] = [
            ids[i]
            for i in order[skip_top:]
            if ids[i] not in excluded and texts[i] not in excluded_texts
        ]
    return out


# -- stage 1 --------------------------------------------------------------------------
@dataclass
class Stage1Data:
    """Stage-1 pairs and what the identity mask needs.

    `dataset` columns: anchor, positive, negative_1..H (texts) and label = [query key,
    positive product key, negative product keys...] (ints); `known_positives` holds every
    (query key, product key) judged positive, for `FalseNegativeMaskedContrastiveLoss`.
    """

    dataset: Any
    known_positives: list[tuple[int, int]]
    query_keys: dict[str, int] = field(default_factory=dict)
    product_keys: dict[str, int] = field(default_factory=dict)
    dropped_missing_products: int = 0


def build_stage1(
    judgments: Judgments,
    product_texts: Mapping[str, str],
    num_negatives: int = 0,
    negatives: Mapping[str, list[str]] | None = None,
    seed: int = 42,
) -> Stage1Data:
    """(query, positive) pairs at or above the grade map's threshold, with H mined negatives.

    Each pair draws `num_negatives` from its query's mined list (random among them, seeded);
    where the list runs short, random catalog products that are not positives of the query fill
    in, so every row has the same columns.
    """
    from datasets import Dataset

    rng = random.Random(seed)
    product_keys = {pid: i for i, pid in enumerate(product_texts)}
    all_ids = list(product_texts)
    positives = judgments.positives()
    query_keys: dict[str, int] = {}
    for qid in judgments.query_ids:
        query_keys.setdefault(qid, len(query_keys))
    known = sorted(
        {
            (query_keys[q], product_keys[p])
            for q, ps in positives.items()
            for p in ps
            if p in product_keys
        }
    )
    columns: dict[str, list[Any]] = {"anchor": [], "positive": []}
    for h in range(num_negatives):
        columns[f"negative_{h + 1}"] = []
    columns["label"] = []
    dropped = 0
    threshold = judgments.grade_map.positive_threshold
    for qid, query, pid, rel in zip(
        judgments.query_ids,
        judgments.queries,
        judgments.product_ids,
        judgments.relevance,
        strict=True,
    ):
        if rel < threshold:
            continue
        if pid not in product_keys:
            dropped += 1
            continue
        label = [query_keys[qid], product_keys[pid]]
        columns["anchor"].append(query)
        columns["positive"].append(product_texts[pid])
        if num_negatives:
            pool = list((negatives or {}).get(qid, []))
            chosen = rng.sample(pool, min(num_negatives, len(pool)))
            excluded = positives.get(qid, set())
            while len(chosen) < num_negatives:
                candidate = rng.choice(all_ids)
                if candidate not in excluded and candidate not in chosen:
                    chosen.append(candidate)
            for h, neg in enumerate(chosen):
                columns[f"negative_{h + 1}"].append(product_texts[neg])
                label.append(product_keys[neg])
        columns["label"].append(label)
    if dropped:
        logger.warning("stage 1: %d positive pairs skipped (product not in catalog)", dropped)
    if not columns["anchor"]:
        raise UsageError(f"no stage-1 pairs: no judgment reaches relevance {threshold}")
    return Stage1Data(
        dataset=Dataset.from_dict(columns),
        known_positives=known,
        query_keys=query_keys,
        product_keys=product_keys,
        dropped_missing_products=dropped,
    )


# -- stage 2 --------------------------------------------------------------------------
def build_stage2(
    judgments: Judgments,
    product_texts: Mapping[str, str],
    max_candidates: int = 16,
    min_levels: int = 2,
    seed: int = 42,
) -> Any:
    """One row per query: query, candidates (texts), label (their grade levels).

    Queries with fewer than `min_levels` non-empty levels are left out (ROAR gives them no
    loss). Above `max_candidates`, candidates are taken round-robin over the levels in a seeded
    random order, so every level stays represented.
    """
    from datasets import Dataset

    rng = random.Random(seed)
    rows: dict[str, list[Any]] = {"query": [], "candidates": [], "label": []}
    texts = judgments.query_texts()
    for qid, idx in judgments.by_query().items():
        by_level: dict[int, list[str]] = defaultdict(list)
        seen: set[str] = set()
        for i in idx:
            pid = judgments.product_ids[i]
            if pid in product_texts and pid not in seen:
                seen.add(pid)
                by_level[judgments.levels[i]].append(pid)
        if len(by_level) < min_levels:
            continue
        for members in by_level.values():
            rng.shuffle(members)
        picked: list[tuple[str, int]] = []
        queues = {level: list(m) for level, m in sorted(by_level.items(), reverse=True)}
        while len(picked) < max_candidates and any(queues.values()):
            for level, queue in queues.items():
                if queue and len(picked) < max_candidates:
                    picked.append((queue.pop(), level))
        rows["query"].append(texts[qid])
        rows["candidates"].append([product_texts[p] for p, _ in picked])
        rows["label"].append([level for _, level in picked])
    if not rows["query"]:
        raise UsageError(f"no stage-2 groups: no query has {min_levels} judged grade levels")
    return Dataset.from_dict(rows)


# -- dev evaluation -------------------------------------------------------------------
def build_dev_evaluator(
    judgments: Judgments,
    product_texts: Mapping[str, str],
    max_queries: int = 200,
    corpus_size: int = 5000,
    seed: int = 42,
    name: str = "dev",
    batch_size: int = 64,
) -> Any:
    """InformationRetrievalEvaluator on a dev subset: `max_queries` queries with a positive,
    over a corpus of their judged products plus random catalog products up to `corpus_size`
    (the full catalog is too slow to re-encode every epoch on a CPU)."""
    from sentence_transformers.sentence_transformer.evaluation import (
        InformationRetrievalEvaluator,
    )

    rng = random.Random(seed)
    positives = {
        q: {p for p in ps if p in product_texts} for q, ps in judgments.positives().items()
    }
    qids = sorted(q for q, ps in positives.items() if ps)
    rng.shuffle(qids)
    qids = qids[:max_queries]
    chosen = set(qids)
    texts = judgments.query_texts()
    judged = {
        judgments.product_ids[i]
        for q, rows in judgments.by_query().items()
        if q in chosen
        for i in rows
    }
    corpus_ids = {p for p in judged if p in product_texts}
    others = [p for p in product_texts if p not in corpus_ids]
    extra = max(corpus_size - len(corpus_ids), 0)
    corpus_ids.update(rng.sample(others, min(extra, len(others))))
    return InformationRetrievalEvaluator(
        queries={q: texts[q] for q in qids},
        corpus={p: product_texts[p] for p in sorted(corpus_ids)},
        relevant_docs={q: positives[q] for q in qids},
        name=name,
        batch_size=batch_size,
        ndcg_at_k=[10],
        mrr_at_k=[10],
        accuracy_at_k=[1, 10],
        precision_recall_at_k=[10, 100],
        map_at_k=[100],
        write_csv=False,
    )


ProgressFn = Callable[[str], None]
