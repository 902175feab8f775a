"""One result per product family.

A shop lists each size or colour of an item as a product of its own, sharing a `parent_id`.
A shopper expects one result per item, not a page of one shirt in ten sizes. Qdrant scores
variants as separate points (Edge has no grouped query), so the fused list is collapsed here,
and searched deeper when it held too few families to fill the page.

Which variant shows the family (its representative): among the family's variants that the
search returned, all of which passed the filters, the best-ranked one in stock; where none
is, the best-ranked one. A variant is in stock unless its `in_stock` is false: a catalog
without stock data shows each family by its best variant, whatever the stock. A shopper
who clicks an out-of-stock blue shirt while the same blue shirt in another size is in stock
leaves; the in-stock variant matched the query and the filters as well, only less closely.

The family keeps its best variant's place and score: families are ranked, and a result's
score is its family's. A representative moved down to its own rank would make the ranking,
and so the pages cut from it, depend on stock as well as on relevance, and would give a
page whose scores do not descend, which readers of a ranking (ties in `shopsearch eval`,
pages) assume they do. Pages stay stable: the representative is chosen after the ranking,
so page 1 + page 2 are the top 20 families, no family on two pages; a deeper search may find
an in-stock variant a shallower one did not, and show it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from shopsearch.store.backend import Hit

# Fused hits one query may look through for families: a page of 10 from families of up to
# ~60 near-identical variants.
MAX_DEPTH = 1000
# The first search reads this many pages of fused hits. On a large catalog of big families,
# a first search of four pages costs about what one page does, while a single page leaves
# nearly every query short of a page of families, each then paying a second search
# (benchmarks/RESULTS.md section 5). A collection whose metadata records no families
# (`CollectionMeta.variants`) reads one page and collapses nothing: it has nothing to
# collapse, and the extra pages and payloads are a measurable share of its query time
# (section 4).
FIRST_DEPTH = 4
# Payload fields collapsing reads (added to a search that asks for fewer): the family, and
# the stock that picks its representative.
FAMILY_FIELDS = ("product_id", "parent_id", "in_stock")


def family(hit: Hit) -> str:
    """The variant group a hit belongs to: its parent_id, or else its own product id, so that
    a catalog listing the parent as a product of its own keeps it with its variants."""
    payload = hit.payload
    return str(payload.get("parent_id") or payload.get("product_id") or hit.point_id)


def in_stock(hit: Hit) -> bool:
    """Whether a variant may represent its family ahead of better-ranked ones: not marked out
    of stock (a catalog that says nothing of stock is taken at its word that it sells it)."""
    return hit.payload.get("in_stock") is not False


def collapse(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """One hit per family, in the rank order of each family's best hit: its representative
    (the best-ranked variant in stock, else the best-ranked; see the module docstring), with
    the family's score and the product ids of the family's other variants among `hits`
    (best first)."""
    members: dict[str, list[Hit]] = {}
    for hit in hits:
        members.setdefault(family(hit), []).append(hit)
    return [represent(variants) for variants in list(members.values())[:top_k]]


def represent(variants: Sequence[Hit]) -> Hit:
    """The hit that shows a family, given its variants best first."""
    best = variants[0]
    shown = next((hit for hit in variants if in_stock(hit)), best)
    others = tuple(hit.product_id for hit in variants if hit is not shown)
    return replace(shown, score=best.score, other_variants=others)


def first_limit(top_k: int) -> int:
    """Fused hits the first search asks for, to fill a page of `top_k` families."""
    return max(top_k, min(MAX_DEPTH, FIRST_DEPTH * top_k))


def deeper_limit(limit: int, hits: Sequence[Hit], top_k: int) -> int | None:
    """How many fused hits to search next, or None when `hits` (a search limited to `limit`)
    settle the page: they fill it, the catalog had no more, or the depth is spent.

    The next depth overshoots: at least 4x, and 3x the variants per family seen so far times
    the page. Each search repeats the prefetches, while a hit more costs only its payload, so
    fewer, deeper searches beat more, shallower ones (benchmarks/RESULTS.md section 5)."""
    families = len({family(hit) for hit in hits})
    if families >= top_k or len(hits) < limit or limit >= MAX_DEPTH:
        return None
    per_family = len(hits) / max(families, 1)
    return min(MAX_DEPTH, max(4 * limit, math.ceil(3 * per_family * top_k)))
