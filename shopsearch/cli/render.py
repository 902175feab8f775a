"""Human-readable result tables.

Every query and catalog value reaches rich escaped (or as a `Text`, which reads no markup):
rich reads `[...]` in a plain string as markup, so a catalog value like `hdmi [pack of 2]`
would vanish and `Acme [/b]` would crash the table (MarkupError).

`--all-variants` lists the sizes and colours of one item as rows of their own, often under
one title: the color and size columns tell them apart, and where two rows would still read
the same (variants differing in an attribute the table leaves out), the product id does.
"""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from shopsearch.search.confidence import DEFAULT_MIN_CONFIDENCE, confident
from shopsearch.search.facets import Facets
from shopsearch.store.backend import Hit, SearchMode

# Attribute columns: (header, rich column options). One that no shown product fills is left
# out, so that a catalog without brands (or prices, or variants) gives its titles the room.
# Folded rather than cut: a colour or size cut short no longer tells two variants apart.
ATTRIBUTE_COLUMNS: dict[str, dict] = {
    "brand": {"ratio": 1},
    "color": {"overflow": "fold"},
    "size": {"overflow": "fold"},
    "price": {"justify": "right"},
    "category": {"overflow": "fold", "ratio": 2, "style": "dim"},
}


def _attribute_cells(payload: dict) -> dict[str, str]:
    price = payload.get("price")
    category = payload.get("category") or []
    return {
        "brand": escape(str(payload.get("brand") or "")),
        "color": escape(str(payload.get("color") or "")),
        "size": escape(str(payload.get("size") or "")),
        "price": escape(
            "" if price is None else f"{price:,.2f} {payload.get('currency') or ''}".strip()
        ),
        "category": escape(
            " > ".join(category[-2:]) if isinstance(category, list) else str(category)
        ),
    }


def _title(hit: Hit) -> Text:
    title = Text(str(hit.payload.get("title", hit.product_id)))
    if hit.other_variants:
        more = len(hit.other_variants)
        title.append(f" (+{more} variant{'s' if more > 1 else ''})", style="dim")
    return title


def results_table(
    query: str,
    searched: str,
    hits: list[Hit],
    mode: SearchMode,
    offset: int = 0,
    min_confidence: float | None = None,
) -> Table:
    """`searched`: the query as searched, typos corrected; `offset`: results before the page;
    `min_confidence`: the floor the page was cut at, if any."""
    count = f"{len(hits)} results"
    if offset and hits:
        count = f"results {offset + 1}-{offset + len(hits)}"
    table = Table(
        title=f"{escape(repr(searched))} ({mode.value}) — {count}",
        title_justify="left",
        caption_justify="left",
    )
    cells = [_attribute_cells(hit.payload) for hit in hits]
    titles = [_title(hit) for hit in hits]
    shown = [name for name in ATTRIBUTE_COLUMNS if not hits or any(c[name] for c in cells)]
    distinct = {(t.plain, *c.values()) for t, c in zip(titles, cells, strict=True)}
    show_id = len(distinct) < len(hits)
    table.add_column("#", justify="right", style="dim")
    table.add_column("title", overflow="fold", ratio=5)
    if show_id:
        table.add_column("id", overflow="fold", style="dim")
    for name in shown:
        table.add_column(name, **ATTRIBUTE_COLUMNS[name])
    table.add_column("score", justify="right")
    # The calibrated probability of relevance (search/confidence.py); the score only orders.
    rated = any(hit.confidence is not None for hit in hits)
    if rated:
        table.add_column("confidence", justify="right")
    ranked = zip(hits, titles, cells, strict=True)
    for rank, (hit, title, row) in enumerate(ranked, start=offset + 1):
        product = [Text(hit.product_id)] if show_id else []
        sure = [] if not rated else ["–" if hit.confidence is None else f"{hit.confidence:.2f}"]
        table.add_row(
            str(rank), title, *product, *(row[name] for name in shown), f"{hit.score:.4f}", *sure
        )
    captions = []
    if rated and not confident(hits):
        captions.append(
            f"no confident match: no result reaches confidence {DEFAULT_MIN_CONFIDENCE}"
        )
    if searched != query:
        captions.append(
            f"showing results for {escape(repr(searched))}: "
            f"--no-fix-typos searches {escape(repr(query))}"
        )
    if not hits and offset:
        captions.append(f"no results past the first {offset}")
    elif not hits and min_confidence is not None:
        captions.append(f"no confident match: no result reaches --min-confidence {min_confidence}")
    elif not hits:
        captions.append("no products matched (filters are exact, case-sensitive matches)")
    table.caption = "\n".join(captions) or None
    return table


def facet_tables(heading: str, counted: Facets) -> list[Text | Table]:
    """`heading` (what was counted), then a table per field: its values and their counts (a
    boolean printed as --filter reads it, true/false), or a number's lowest and highest."""
    out: list[Text | Table] = [Text(heading)]
    for name, hits in counted.counts.items():
        table = Table(title=Text(name), title_justify="left", caption_justify="left")
        table.add_column("value", overflow="fold")
        table.add_column("products", justify="right")
        for hit in hits:
            value = str(hit.value).lower() if isinstance(hit.value, bool) else str(hit.value)
            table.add_row(Text(value), f"{hit.count:,}")
        if not hits:
            table.caption = f"no product here has a {name}"
        out.append(table)
    for name, span in counted.ranges.items():
        table = Table(title=Text(name), title_justify="left", caption_justify="left")
        table.add_column("lowest", justify="right")
        table.add_column("highest", justify="right")
        if span is None:
            table.caption = f"no product here has a {name}"
        else:
            table.add_row(f"{span.low:,.2f}", f"{span.high:,.2f}")
        out.append(table)
    return out
