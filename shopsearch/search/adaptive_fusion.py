"""The default hybrid fusion: Qdrant's DBSF, its first results re-ranked by query-term coverage.

It needs no judgments of the shop it serves. One Qdrant query fuses the dense and BM25 lists
(`--candidates` each) by DBSF: each list's scores are normalised by their own mean and
spread in this query (mean - 3 sd -> 0, mean + 3 sd -> 1) and summed, an equal-weight convex
combination that makes a cosine and a BM25 score comparable without assuming either's
scale (each shop, query and product text gives both other ranges). Its first `WINDOW`
results come back with their BM25 term ids and are re-ranked by

    2 * coverage + 0.5 * DBSF

where coverage is the share of the query's BM25 terms (after Qdrant's tokenizer:
lower-cased, stemmed, stop words dropped) the product holds. It says how *completely* a
product matches, which neither list does: BM25 weighs terms by rarity and saturates (k
0.3), so a title sharing one rare query word can outrank one holding every query word, and
a dense match may hold none of them. 0.5 * DBSF spans about 1, so a product missing one
word of a two-word query cannot outrank one holding both; missing one word of three, it can
when both retrievers rank it well above the other. Results past the window follow it,
re-ranked the same way among themselves (their scores shifted below the window's), so a
page within the window does not change with how far past it the search read. A business
ranking (shopsearch.search.business_ranking) is added to the DBSF score inside Qdrant, in
its units, before the re-rank: the window holds the products it moved up, and the re-rank
adds its terms to `2 * coverage + 0.5 * DBSF` as they are.

The constants are chosen on Home Depot's train queries alone: coverage's weight and the
even split are the optimum of a grid over a convex combination of both lists. One Qdrant
DBSF request read to the window keeps the query near RRF's cost, where bringing both
lists' candidates into Python would not (Edge builds a Python object per point).
CrowdFlower, a shop that chooses nothing here, and Home Depot dev evaluate it
(`benchmarks/fusion_default.py`; figures in benchmarks/RESULTS.md section 12). RRF
(`--fusion rrf`, BM25's list weighted 3) stays one flag away.
"""

from __future__ import annotations

from collections.abc import Sequence

from shopsearch.store.backend import Hit

# Coverage's weight against the DBSF score's ~2 (0.5 * DBSF spans ~1).
COVERAGE_WEIGHT = 2.0
DBSF_WEIGHT = 0.5
# The fused results re-ranked: five pages of ten.
WINDOW = 50


def rerank(query_terms: Sequence[int], fused: Sequence[Hit], limit: int | None = None) -> list[Hit]:
    """`fused` (a DBSF search's hits, best first, with each hit's BM25 term ids in
    `Hit.terms`) re-ranked: its first `WINDOW` hits by COVERAGE_WEIGHT * coverage +
    DBSF_WEIGHT * score, equal scores by point id, then the others the same way; the first
    `limit` of them (all by default), each with its new score and its coverage (`Hit.coverage`)
    in place of its terms."""
    wanted = frozenset(query_terms)
    per_term = COVERAGE_WEIGHT / len(wanted) if wanted else 0.0
    blocks = []
    for block in (fused[:WINDOW], fused[WINDOW:]):
        held = [len(wanted.intersection(h.terms)) for h in block]
        scored = [
            (per_term * n + DBSF_WEIGHT * h.score, n, h) for n, h in zip(held, block, strict=True)
        ]
        scored.sort(key=lambda entry: (-entry[0], entry[2].point_id))
        blocks.append(scored)
    first, rest = blocks
    if first and rest and rest[0][0] >= first[-1][0]:
        # Scores read best first: the hits past the window score below the window's last.
        shift = rest[0][0] - first[-1][0] + 1.0
        rest = [(score - shift, n, h) for score, n, h in rest]
    out = first + rest
    if limit is not None:
        out = out[:limit]
    terms = len(wanted) or 1
    return [
        Hit(h.point_id, score, h.payload, h.other_variants, coverage=n / terms)
        for score, n, h in out
    ]
