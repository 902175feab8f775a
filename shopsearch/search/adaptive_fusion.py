"""The default hybrid fusion: Qdrant's DBSF, its first results re-ranked by how completely and
in what order they hold the query's words.

It needs no judgments of the shop it serves. One Qdrant query fuses the dense and BM25 lists
(`--candidates` each) by DBSF: each list's scores are normalised by their own mean and
spread in this query (mean - 3 sd -> 0, mean + 3 sd -> 1) and summed, an equal-weight convex
combination that makes a cosine and a BM25 score comparable without assuming either's
scale (each shop, query and product text gives both other ranges). Its first `WINDOW`
results come back with their BM25 term ids and their title's word pairs, and are re-ranked by

    2 * coverage + 0.5 * DBSF + 0.75 * pairs

where coverage is the share of the query's BM25 terms (after Qdrant's tokenizer:
lower-cased, stemmed, stop words dropped) the product holds. It says how *completely* a
product matches, which neither list does: BM25 weighs terms by rarity and saturates (k
0.3), so a title sharing one rare query word can outrank one holding every query word, and
a dense match may hold none of them. 0.5 * DBSF spans about 1, so a product missing one
word of a two-word query cannot outrank one holding both; missing one word of three, it can
when both retrievers rank it well above the other. `pairs` is the share of the query's
adjacent word pairs the product's title holds as adjacent words (shopsearch.store.word_pairs):
word order, which neither retriever sees, so a "bathroom vanity" outranks a title holding
both words apart. A collection without the pairs vector (its metadata says so) is re-ranked
without them over the first `WINDOW` results; with them the window is
`PAIRS_WINDOW`: the pairs are one more sparse vector read per hit, and the narrower window
pays for that read at a small cost in ranking. Results past the window follow it,
re-ranked the same way among themselves (their scores shifted below the window's), so a
page within the window does not change with how far past it the search read. A business
ranking (shopsearch.search.business_ranking) is added to the DBSF score inside Qdrant, in
its units, before the re-rank: the window holds the products it moved up, and the re-rank
adds its terms to the re-rank's score as they are.

The constants are chosen on Home Depot: coverage's weight and the even split are the optimum
of a grid on its train queries over a convex combination of both lists; the pairs' weight and
their window from a grid on its train and dev queries. One Qdrant DBSF request read to the
window keeps the query near RRF's cost, where bringing both lists' candidates into Python
would not (Edge builds a Python object per point).
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
# The weight of the share of the query's word pairs the title holds, where the collection
# has the pairs (store/word_pairs.py).
PAIRS_WEIGHT = 0.75
# The fused results re-ranked: five pages of ten; four where the pairs re-rank them too.
WINDOW = 50
PAIRS_WINDOW = 40


def rerank(
    query_terms: Sequence[int],
    fused: Sequence[Hit],
    limit: int | None = None,
    query_pairs: Sequence[int] = (),
    window: int = WINDOW,
) -> list[Hit]:
    """`fused` (a DBSF search's hits, best first, with each hit's BM25 term ids in
    `Hit.terms` and its title pairs in `Hit.pairs`) re-ranked: its first `window` hits by
    COVERAGE_WEIGHT * coverage + DBSF_WEIGHT * score + PAIRS_WEIGHT * the share of
    `query_pairs` the hit holds, equal scores by point id, then the others the same way;
    the first `limit` of them (all by default), each with its new score and its coverage
    (`Hit.coverage`) in place of its terms and pairs."""
    wanted = frozenset(query_terms)
    per_term = COVERAGE_WEIGHT / len(wanted) if wanted else 0.0
    pairs = frozenset(query_pairs)
    per_pair = PAIRS_WEIGHT / len(pairs) if pairs else 0.0
    blocks = []
    for block in (fused[:window], fused[window:]):
        held = [len(wanted.intersection(h.terms)) for h in block]
        # Without query pairs the last term adds 0.0, which leaves every score as it was.
        scored = [
            (per_term * n + DBSF_WEIGHT * h.score + per_pair * len(pairs.intersection(h.pairs)),
             n, h)
            for n, h in zip(held, block, strict=True)
        ]  # fmt: skip
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
