import pytest

from shopsearch.errors import UsageError
from shopsearch.ingest.product_text import ProductTextTemplate
from shopsearch.ingest.validate import Product


@pytest.mark.parametrize(
    ("template", "part"),
    [
        ("{title}|Price: {price:.2f}", "'Price: {price:.2f}'"),
        ("{title}|{brand!x}", "'{brand!x}'"),
        ("{title!r}", "'{title!r}'"),
    ],
)
def test_format_specs_and_conversions_are_refused_when_the_template_is_parsed(template, part):
    with pytest.raises(UsageError, match=rf"bad --template part {part}:.*write \{{"):
        ProductTextTemplate(template)


def test_plain_template_renders_only_parts_with_values():
    template = ProductTextTemplate("{title}|Price: {price} {currency}|Brand: {brand}")
    product = Product(id="1", title="Drill", price=19.99, currency="USD")
    assert template.render(product) == "Drill. Price: 19.99 USD"
