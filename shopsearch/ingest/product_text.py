"""The text a product is encoded (and BM25-indexed) as.

Default: title, then brand, category path, colour, size and the first few attributes,
each as a short labelled part, e.g.
    "Alisha Solid Women's Cycling Shorts. Brand: alisha. Category: clothing > women's
     clothing > shorts. Color: Black. Fabric: Cotton Lycra; Type: Cycling Shorts"
A template is parts separated by "|"; a part is rendered only when every field it names
has a value, so missing fields leave no dangling labels. The template a collection was
built with is stored with it, so re-ingesting never mixes two kinds of text.
"""

from __future__ import annotations

import string
from dataclasses import dataclass

from shopsearch.errors import UsageError
from shopsearch.ingest.fields import CATALOG_FIELDS
from shopsearch.ingest.validate import Product

DEFAULT_TEMPLATE = (
    "{title}|Brand: {brand}|Category: {category}|Color: {color}|Size: {size}|{attributes}"
)
MAX_ATTRIBUTES_IN_TEXT = 8
MAX_ATTRIBUTE_VALUE_CHARS = 80


@dataclass(frozen=True)
class ProductTextTemplate:
    template: str = DEFAULT_TEMPLATE

    def __post_init__(self) -> None:
        fields = [f for part in self._parts() for f in part[1]]
        unknown = sorted(set(fields) - set(CATALOG_FIELDS))
        if unknown:
            raise UsageError(
                f"bad --template: unknown field(s) {', '.join(unknown)} "
                f"(fields: {', '.join(CATALOG_FIELDS)})"
            )
        if "title" not in fields:
            raise UsageError("bad --template: it must include {title}")

    def render(self, product: Product) -> str:
        values = _field_values(product)
        rendered = []
        for part, names in self._parts():
            if all(values.get(n) for n in names):
                rendered.append(part.format(**{n: values[n] for n in names}))
        return ". ".join(rendered)

    def _parts(self) -> list[tuple[str, list[str]]]:
        parts = []
        for part in self.template.split("|"):
            try:
                fields = [
                    (f, s, c) for _, f, s, c in string.Formatter().parse(part) if f is not None
                ]
            except ValueError as exc:
                raise UsageError(f"bad --template {self.template!r}: {exc}") from None
            names = [name for name, _, _ in fields]
            if any(not n.isidentifier() for n in names):
                raise UsageError(f"bad --template {self.template!r}: use plain {{field}} names")
            for name, spec, conversion in fields:
                # Every value is rendered as text, so '{price:.2f}' or '{brand!x}' would
                # only fail later, product by product, mid-ingest.
                if spec or conversion:
                    raise UsageError(
                        f"bad --template part {part.strip()!r}: no format specs or "
                        f"conversions ('!', ':'); write {{{name}}}"
                    )
            parts.append((part.strip(), names))
        return parts


def _field_values(product: Product) -> dict[str, str]:
    values = {
        name: str(getattr(product, name))
        for name in CATALOG_FIELDS
        if getattr(product, name) is not None and name not in ("category", "attributes")
    }
    if product.category:
        values["category"] = " > ".join(product.category)
    if product.attributes:
        items = list(product.attributes.items())[:MAX_ATTRIBUTES_IN_TEXT]
        values["attributes"] = "; ".join(f"{k}: {v[:MAX_ATTRIBUTE_VALUE_CHARS]}" for k, v in items)
    return values
