import datetime
import json
import math
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shopsearch.ingest.readers import CatalogReader, RawRow
from shopsearch.ingest.validate import Product, Reject, validate


def row(**data):
    return RawRow(7, {"id": "p1", "title": "Cordless Drill", **data})


def test_good_row_becomes_product_with_typed_fields():
    product = validate(
        row(
            id=123,
            brand="DeWalt",
            category="Tools > Power Tools >> Drills",
            price="1,299.50",
            in_stock="yes",
            attributes='{"Voltage": "20V", "Weight": 1.5}',
        )
    )
    assert isinstance(product, Product)
    assert product.id == "123"
    assert product.category == ("Tools", "Power Tools", "Drills")
    assert product.price == 1299.5
    assert product.in_stock is True
    assert product.attributes == {"Voltage": "20V", "Weight": "1.5"}
    payload = product.payload()
    assert payload["product_id"] == "123"
    assert payload["category"] == ["Tools", "Power Tools", "Drills"]
    assert payload["category_path"] == "Tools > Power Tools > Drills"
    assert "description" not in payload


def test_pyarrow_map_attributes_and_list_category():
    product = validate(row(attributes=[("Color", "Red")], category=["a", " b "]))
    assert isinstance(product, Product)
    assert product.attributes == {"Color": "Red"}
    assert product.category == ("a", "b")


@pytest.mark.parametrize(
    ("data", "field", "reason"),
    [
        ({"id": None}, "id", "missing id"),
        ({"id": "  "}, "id", "missing id"),
        ({"id": float("nan")}, "id", "missing id"),
        ({"title": None}, "title", "missing title"),
        ({"title": ""}, "title", "missing title"),
        ({"title": "x" * 5000}, "title", "5000 characters long"),
        ({"title": "bad \ufffd text"}, "title", "bad encoding"),
        ({"title": "surrogate \udcff"}, "title", "bad encoding"),
        ({"title": 3.5j}, "title", "must be text"),
        ({"price": float("nan")}, "price", "price is NaN"),
        ({"price": "abc"}, "price", "price 'abc' is not a number"),
        ({"price": "19,99"}, "price", "'19,99' is not a number (expected digits with a decimal"),
        ({"price": "1.299,00"}, "price", "'1.299,00' is not a number"),
        ({"price": "1,2345.00"}, "price", "'1,2345.00' is not a number"),
        ({"price": -1}, "price", "out of range"),
        ({"price": math.inf}, "price", "out of range"),
        ({"in_stock": "maybe"}, "in_stock", "must be true or false"),
        ({"attributes": "{not json"}, "attributes", "not valid JSON"),
        ({"attributes": 5}, "attributes", "must be a map"),
    ],
)
def test_bad_rows_are_rejected_with_field_and_reason(data, field, reason):
    result = validate(row(**data))
    assert isinstance(result, Reject)
    assert result.row == 7
    assert result.field == field
    assert reason in result.reason


@pytest.mark.parametrize(
    ("text", "levels"),
    [
        ("Music > Band T-Shirts/Tops", ("Music", "Band T-Shirts/Tops")),
        ("Hardware >> Bolts > 1/4 in. | zinc", ("Hardware", "Bolts", "1/4 in. | zinc")),
        ("Men/Tops", ("Men", "Tops")),
        ("Home | Garden", ("Home", "Garden")),
        ("Garden", ("Garden",)),
    ],
)
def test_category_splits_on_gt_and_on_slash_or_bar_only_without_one(text, levels):
    assert validate(row(category=text)).category == levels


@pytest.mark.parametrize(
    ("text", "price"),
    [("19.99", 19.99), ("1,299.00", 1299.0), ("1,000,000", 1e6), (" 12,345.5 ", 12345.5)],
)
def test_price_commas_are_read_only_as_thousands_separators(text, price):
    assert validate(row(price=text)).price == price


def test_unreadable_row_keeps_reader_error():
    result = validate(RawRow(3, None, "invalid JSON (Expecting value at column 1)"))
    assert result == Reject(3, None, None, "invalid JSON (Expecting value at column 1)")


def test_pandas_nan_and_integral_floats_from_a_jsonl_export(tmp_path):
    """json.dumps of pandas records writes a gap as NaN, an int column with a gap as floats."""
    path = tmp_path / "c.jsonl"
    lines = [
        {"id": 1.0, "title": "A", "category": math.nan, "in_stock": 1.0, "parent_id": 100.0,
         "size": 42.0, "brand": math.nan, "attributes": {"Width": 2.0, "Depth": math.nan}},
        {"id": "b", "title": "B", "in_stock": math.nan, "size": 10.5, "attributes": math.nan},
        {"id": "c", "title": "C", "in_stock": 0.0, "price": math.nan},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    first, second, third = (validate(r) for b in CatalogReader(path).batches(10) for r in b)
    assert (first.id, first.category, first.in_stock, first.parent_id, first.size) == (
        "1",
        None,
        True,
        "100",
        "42",
    )
    assert first.brand is None and first.attributes == {"Width": "2"}
    assert (second.in_stock, second.size, second.attributes) == (None, "10.5", None)
    assert isinstance(third, Reject) and third.reason == "price is NaN"  # a NaN price stays bad


def test_spark_decimals_and_dates_from_parquet(tmp_path):
    path = tmp_path / "c.parquet"
    table = pa.table(
        {
            "id": ["a", "b"],
            "title": ["A", "B"],
            "price": pa.array([Decimal("19.99"), None], pa.decimal128(10, 2)),
            "attributes": [
                {"launched": datetime.date(2024, 5, 1), "sizes": [Decimal("1.5")]},
                None,
            ],
        }
    )
    pq.write_table(table, path)
    first, second = (validate(r) for b in CatalogReader(path).batches(10) for r in b)
    assert first.price == 19.99
    assert first.attributes == {"launched": "2024-05-01", "sizes": '["1.5"]'}
    assert (second.price, second.attributes) == (None, None)
