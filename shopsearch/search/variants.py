"""One result per product family.

A shop lists each size or colour of an item as a product of its own, sharing a `parent_id`.
A shopper expects one result per item, shown by the variant that best matches the query and
the filters, not a page of one shirt in ten sizes. Qdrant scores variants as separate points
(Edge has no grouped query), so the fused list is collapsed here, and searched deeper when it
held too few families to fill the page.
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
# Payload fields collapsing reads (added to a search that asks for fewer).
FAMILY_FIELDS = ("product_id", "parent_id")


def family(hit: Hit) -> str:
    """The variant group a hit belongs to: its parent_id, or else its own product id, so that
    a catalog listing the parent as a product of its own keeps it with its variants."""
    payload = hit.payload
    return str(payload.get("parent_id") or payload.get("product_id") or hit.point_id)


def collapse(hits: Sequence[Hit], top_k: int) -> list[Hit]:
    """The best-ranked hit of each family, in rank order, carrying the product ids of the
    family's other variants among `hits` (best first)."""
    best: dict[str, Hit] = {}
    others: dict[str, list[str]] = {}
    for hit in hits:
        key = family(hit)
        if key in best:
            others[key].append(hit.product_id)
        else:
            best[key] = hit
            others[key] = []
    kept = list(best.items())[:top_k]
    return [replace(hit, other_variants=tuple(others[key])) for key, hit in kept]


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
