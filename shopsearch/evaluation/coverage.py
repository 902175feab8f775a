"""Do the judgments and the systems talk about the same products?

Evaluating against the wrong collection (another shop's, or one ingested with other ids)
scores every query 0 and looks like a terrible model. So before any number is shown:
- collection coverage = the judged products the searched collection holds / all distinct
  judged products. 0 is an error: nothing can be measured. Below `COVERAGE_WARNING` (90%)
  it is a warning on stderr, in --json (`warnings`) and at the top of the report: every
  missing product counts as never retrieved, so recall and nDCG are understated. A
  collection built from a sample of the catalog is the usual honest cause.
  It is counted on the collection itself, not from `rerank_coverage` (the judged products a
  system scored in re-rank mode): BM25 gives no score to a product that shares no term
  with the query, so BM25's rerank coverage is below 100% on the right collection.
- a run file that ranks none of the judged products (in either mode) is an error too: its
  product ids and the judgments' cannot be the same kind of id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from shopsearch.errors import CollectionError
from shopsearch.evaluation.judgments import Judgments
from shopsearch.evaluation.runs import Ranking

COVERAGE_WARNING = 0.9


class CoverageError(CollectionError):
    """The judgments name no product of the collection (or run) evaluated against them."""


def check_collection(
    found: int, judged: int, collection: str, judgments: str, missing: Sequence[str] = ()
) -> list[str]:
    """Raise CoverageError when the collection holds none of the `judged` products; return a
    warning when it holds fewer than COVERAGE_WARNING of them."""
    example = f" (e.g. {', '.join(repr(p) for p in missing[:3])})" if missing else ""
    if judged and found == 0:
        raise CoverageError(
            f"collection {collection} holds none of the {judged:,} products judged in "
            f"{judgments}{example}: is it the collection of this shop, ingested with the "
            "same product ids?"
        )
    share = found / judged if judged else 1.0
    if share < COVERAGE_WARNING:
        return [
            f"collection {collection} holds {found:,} of the {judged:,} products judged in "
            f"{judgments} ({share:.1%}, below {COVERAGE_WARNING:.0%}){example}: the missing "
            "ones count as never retrieved, so recall and nDCG are understated"
        ]
    return []


def check_run(name: str, source: str, coverage: float, judgments: str) -> None:
    """Raise CoverageError when a run file ranks none of the judged products."""
    if coverage == 0:
        raise CoverageError(
            f"run {name} ({source}) ranks none of the products judged in {judgments}: "
            "do the run and the judgments use the same product ids?"
        )


def run_coverage(run: Mapping[str, Ranking], judgments: Judgments) -> float:
    """The share of judged (query, product) pairs whose product the run ranks for the query."""
    total = ranked = 0
    for qid, q in judgments.queries.items():
        ranking = run.get(qid)
        ids = set(ranking.product_ids) if ranking else set()
        total += len(q.grades)
        ranked += sum(p in ids for p in q.grades)
    return ranked / total if total else 1.0
