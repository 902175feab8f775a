"""Human-readable result tables."""

from __future__ import annotations

from rich.table import Table

from shopsearch.qdrant.backend import Hit, SearchMode


def results_table(query: str, searched: str, hits: list[Hit], mode: SearchMode) -> Table:
    """`searched`: the query as searched, typos corrected."""
    table = Table(
        title=f"{searched!r} ({mode.value}) — {len(hits)} results",
        title_justify="left",
        caption_justify="left",
    )
    table.add_column("#", justify="right", style="dim")
    table.add_column("title", overflow="fold", ratio=5)
    table.add_column("brand", ratio=1)
    table.add_column("price", justify="right")
    table.add_column("category", overflow="fold", ratio=2, style="dim")
    table.add_column("score", justify="right")
    for rank, hit in enumerate(hits, start=1):
        p = hit.payload
        price = p.get("price")
        price_text = "" if price is None else f"{price:,.2f} {p.get('currency') or ''}".strip()
        category = p.get("category") or []
        table.add_row(
            str(rank),
            str(p.get("title", p.get("product_id", hit.point_id))),
            str(p.get("brand") or ""),
            price_text,
            " > ".join(category[-2:]) if isinstance(category, list) else str(category),
            f"{hit.score:.4f}",
        )
    captions = []
    if searched != query:
        captions.append(f"showing results for {searched!r}: --no-fix-typos searches {query!r}")
    if not hits:
        captions.append("no products matched (filters are exact, case-sensitive matches)")
    table.caption = "\n".join(captions) or None
    return table
