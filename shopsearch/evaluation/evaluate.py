"""Score systems on judgments: per-query metrics in both modes, strata, paired comparisons.

A "system" is a pair of runs: `full` (each judged query retrieved from the whole catalog)
and optionally `rerank` (scores for each query's judged products). Without a rerank run the
full run's scores are used for the judged products it retrieved, the rest form a tied tail.
The first system is the baseline every other one is compared with.

Strata that need a collection (lexical match, typo correction) and what is known of the
collection's coverage of the judged products come in from the caller (`systems`), so this
module stays free of search and storage.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopsearch.evaluation import strata as st
from shopsearch.evaluation.calibration import Calibration
from shopsearch.evaluation.judgments import GradeScheme, Judgments
from shopsearch.evaluation.metrics import MODES, MetricConfig, query_metrics
from shopsearch.evaluation.runs import Run
from shopsearch.evaluation.significance import (
    DEFAULT_RESAMPLES,
    DEFAULT_SEED,
    Comparison,
    compare,
)

ALL = ("all", "all queries")  # the stratum every query is in


@dataclass
class System:
    name: str
    full: Run
    rerank: Run | None = None
    source: str = ""


@dataclass
class SystemResult:
    name: str
    source: str
    # mode -> metric -> per-query values aligned with Evaluation.query_ids (NaN: undefined)
    per_query: dict[str, dict[str, np.ndarray]]
    # grade bin -> scores the system gave judged products of that grade
    judged_scores: dict[str, list[float]]
    missing_queries: int  # judged queries the full run has no line for
    rerank_coverage: float  # share of judged products with a score in rerank mode


@dataclass
class Evaluation:
    query_ids: list[str]
    scheme: GradeScheme
    metrics: list[str]
    systems: list[SystemResult]
    strata: dict[str, dict[str, str]]  # kind -> query_id -> label
    strata_order: dict[str, list[str]]
    comparisons: dict[str, dict[str, dict[tuple[str, str], dict[str, Comparison]]]] = field(
        default_factory=dict
    )  # mode -> system -> (kind, label) -> metric -> Comparison
    resamples: int = DEFAULT_RESAMPLES
    seed: int = DEFAULT_SEED
    texts: dict[str, str] = field(default_factory=dict)  # query_id -> the query as typed
    # Judged products the searched collection holds / all judged products (None: no
    # collection searched), and what the reader must know before trusting any number.
    collection_coverage: float | None = None
    warnings: list[str] = field(default_factory=list)
    # The relevance floor's reliability on a searched system (None: no collection searched
    # with an encoder).
    calibration: Calibration | None = None

    @property
    def baseline(self) -> SystemResult:
        return self.systems[0]

    def groups(self) -> list[tuple[str, str]]:
        """(kind, label) of every stratum, `ALL` first."""
        out = [ALL]
        for kind, labels in self.strata_order.items():
            out += [(kind, label) for label in labels]
        return out

    def mask(self, group: tuple[str, str]) -> np.ndarray:
        if group == ALL:
            return np.ones(len(self.query_ids), dtype=bool)
        labels = self.strata[group[0]]
        return np.array([labels.get(q) == group[1] for q in self.query_ids])

    def mean(self, system: SystemResult, mode: str, metric: str, group=ALL) -> tuple[float, int]:
        values = system.per_query[mode][metric][self.mask(group)]
        values = values[~np.isnan(values)]
        return (float(values.mean()) if values.size else math.nan), int(values.size)

    def deltas(self, system: SystemResult, mode: str, metric: str) -> list[QueryDelta]:
        """Per query: the baseline's and `system`'s value of `metric`, both defined."""
        base = self.baseline.per_query[mode][metric]
        other = system.per_query[mode][metric]
        return [
            QueryDelta(q, self.texts.get(q, q), float(base[i]), float(other[i]))
            for i, q in enumerate(self.query_ids)
            if not (math.isnan(base[i]) or math.isnan(other[i]))
        ]

    def wins_losses(
        self, system: SystemResult, mode: str, metric: str, n: int = 10
    ) -> tuple[list[QueryDelta], list[QueryDelta]]:
        """The `n` queries `system` gains most on over the baseline, and the `n` it loses
        most on (only real differences; ties broken by query id, so a report is stable)."""
        moved = [d for d in self.deltas(system, mode, metric) if abs(d.delta) > 1e-12]
        wins = sorted((d for d in moved if d.delta > 0), key=lambda d: (-d.delta, d.query_id))
        losses = sorted((d for d in moved if d.delta < 0), key=lambda d: (d.delta, d.query_id))
        return wins[:n], losses[:n]

    def labels_of(self, query_id: str) -> list[str]:
        """The query's strata, as "kind: label"."""
        return [
            f"{kind}: {labels[query_id]}"
            for kind, labels in self.strata.items()
            if query_id in labels
        ]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "queries": len(self.query_ids),
            "grades": self.scheme.describe(),
            "metrics": self.metrics,
            "significance": {
                "test": "paired randomisation (sign-flip), two-sided",
                "ci": "95%, the randomisation test inverted: excludes 0 exactly when p < 0.05",
                "resamples": self.resamples,
                "seed": self.seed,
                "baseline": self.baseline.name,
            },
            "collection_coverage": self.collection_coverage,
            "warnings": list(self.warnings),
            "systems": [
                {
                    "name": s.name,
                    "source": s.source,
                    "missing_queries": s.missing_queries,
                    "rerank_coverage": s.rerank_coverage,
                }
                for s in self.systems
            ],
            "results": {},
        }
        for mode in MODES:
            rows = []
            for group in self.groups():
                for s in self.systems:
                    row: dict[str, Any] = {
                        "stratum": group[0],
                        "label": group[1],
                        "system": s.name,
                        "metrics": {},
                    }
                    for metric in self.metrics:
                        value, n = self.mean(s, mode, metric, group)
                        entry: dict[str, Any] = {"mean": _num(value), "n": n}
                        cmp = self.comparisons.get(mode, {}).get(s.name, {}).get(group, {})
                        if metric in cmp:
                            entry.update(
                                {k: _num(v) for k, v in cmp[metric].to_dict().items() if k != "n"}
                            )
                        row["metrics"][metric] = entry
                    rows.append(row)
            doc["results"][mode] = rows
        key = self.metrics[0]
        doc["wins_losses"] = {
            s.name: {
                "mode": "full",
                "metric": key,
                **{
                    side: [
                        {
                            "query_id": d.query_id,
                            "query": d.text,
                            "baseline": d.baseline,
                            "system": d.system,
                            "delta": d.delta,
                        }
                        for d in found
                    ]
                    for side, found in zip(
                        ("wins", "losses"), self.wins_losses(s, "full", key), strict=True
                    )
                },
            }
            for s in self.systems[1:]
        }
        if self.calibration is not None:
            doc["calibration"] = self.calibration.to_dict()
        return doc


@dataclass(frozen=True)
class QueryDelta:
    query_id: str
    text: str
    baseline: float
    system: float

    @property
    def delta(self) -> float:
        return self.system - self.baseline


def _num(value: float | int) -> float | int | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def grade_bins(scheme: GradeScheme) -> list[str]:
    if scheme.kind == "esci":
        return ["E", "S", "C", "I"]
    edges = np.linspace(scheme.lo, scheme.hi, 5)
    return [f"{a:g}–{b:g}" for a, b in itertools.pairwise(edges)]


def grade_bin(scheme: GradeScheme, grade: float | str) -> str:
    bins = grade_bins(scheme)
    if scheme.kind == "esci":
        return str(grade)
    span = scheme.hi - scheme.lo or 1.0
    idx = min(int((float(grade) - scheme.lo) / span * 4), 3)
    return bins[max(idx, 0)]


def evaluate(
    judgments: Judgments,
    systems: Sequence[System],
    config: MetricConfig | None = None,
    categories: Mapping[str, list[str] | None] | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
    extra_strata: Mapping[str, Mapping[str, str]] | None = None,
    collection_coverage: float | None = None,
    warnings: Sequence[str] = (),
) -> Evaluation:
    """`extra_strata`: kind -> query_id -> label, e.g. `systems.collection_facts`' lexical
    and typo strata; `collection_coverage` and `warnings` are carried into the results."""
    if not systems:
        raise ValueError("no system to evaluate")
    config = config or MetricConfig()
    scheme = judgments.scheme
    names = config.names(scheme)
    qids = list(judgments.queries)
    results = [_score_system(judgments, s, config, names, qids) for s in systems]
    strata: dict[str, dict[str, str]] = {"length": st.by_length(judgments)}
    if judgments.has_counts:
        strata["frequency"] = st.by_frequency(judgments)
    if categories:
        by_cat = st.by_category(judgments, categories)
        if by_cat:
            strata["category"] = by_cat
    for kind, labels in (extra_strata or {}).items():
        if labels:
            strata[kind] = dict(labels)
    strata = {kind: strata[kind] for kind in st.order_kinds(strata)}
    order = {kind: st.order_labels(set(labels.values()), kind) for kind, labels in strata.items()}
    ev = Evaluation(
        qids,
        scheme,
        names,
        results,
        strata,
        order,
        resamples=resamples,
        seed=seed,
        texts={qid: q.text for qid, q in judgments.queries.items()},
        collection_coverage=collection_coverage,
        warnings=list(warnings),
    )
    for mode in MODES:
        ev.comparisons[mode] = {}
        for s in results[1:]:
            per_group: dict[tuple[str, str], dict[str, Comparison]] = {}
            for group in ev.groups():
                mask = ev.mask(group)
                per_group[group] = {
                    m: compare(
                        ev.baseline.per_query[mode][m][mask],
                        s.per_query[mode][m][mask],
                        resamples,
                        seed,
                    )
                    for m in names
                }
            ev.comparisons[mode][s.name] = per_group
    return ev


def _score_system(
    judgments: Judgments,
    system: System,
    config: MetricConfig,
    names: list[str],
    qids: list[str],
) -> SystemResult:
    scheme = judgments.scheme
    per_query = {mode: {m: np.full(len(qids), math.nan) for m in names} for mode in MODES}
    judged_scores: dict[str, list[float]] = {b: [] for b in grade_bins(scheme)}
    missing = 0
    covered = total = 0
    for i, qid in enumerate(qids):
        judged = judgments.queries[qid]
        full = system.full.get(qid)
        if full is None:
            missing += 1
        ids, scores = (full.product_ids, full.scores) if full else ((), ())
        for m, v in query_metrics(judged, ids, scores, scheme, config, "full").items():
            per_query["full"][m][i] = v
        rr = system.rerank.get(qid) if system.rerank is not None else full
        r_ids, r_scores = (rr.product_ids, rr.scores) if rr else ((), ())
        for m, v in query_metrics(judged, r_ids, r_scores, scheme, config, "rerank").items():
            per_query["rerank"][m][i] = v
        seen: set[str] = set()
        for p, s in zip(r_ids, r_scores, strict=True):
            if p in judged.grades and p not in seen:
                seen.add(p)
                judged_scores[grade_bin(scheme, judged.grades[p])].append(float(s))
        covered += len(seen)
        total += len(judged.grades)
    return SystemResult(
        system.name,
        system.source,
        per_query,
        judged_scores,
        missing,
        covered / total if total else 0.0,
    )
