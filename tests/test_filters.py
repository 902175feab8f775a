import pytest

from shopsearch.errors import FilterError
from shopsearch.qdrant.filters import Match, Range, parse_filter


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("brand=DeWalt", Match("brand", ("DeWalt",))),
        ("brand = 'Black & Decker'", Match("brand", ("Black & Decker",))),
        ("brand!=Generic", Match("brand", ("Generic",), negate=True)),
        ("price<=150", Range("price", lte=150.0)),
        ("price>=10", Range("price", gte=10.0)),
        ("price<9.5", Range("price", lt=9.5)),
        ("price>0", Range("price", gt=0.0)),
        ("price=19.99", Range("price", gte=19.99, lte=19.99)),
        ("color in (red,blue)", Match("color", ("red", "blue"))),
        ("color IN ( red , 'navy, dark' )", Match("color", ("red", "navy, dark"))),
        ("brand not in (Acme,Generic)", Match("brand", ("Acme", "Generic"), negate=True)),
        ("in_stock=true", Match("in_stock", (True,))),
        ("in_stock=no", Match("in_stock", (False,))),
        ("category=footwear", Match("category", ("footwear",))),
        ("attributes.Material=Cotton", Match("attributes.Material", ("Cotton",))),
    ],
)
def test_parses_supported_expressions(expr, expected):
    assert parse_filter(expr) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("pricee<=150", "unknown field 'pricee'"),
        ("price<=cheap", "'cheap' is not a number"),
        ("price<=nan", "not a finite number"),
        ("brand<=5", "'brand' is not numeric"),
        ("in_stock=maybe", "takes true or false"),
        ("brand", "expected FIELD=VALUE"),
        ("brand=", "expected FIELD=VALUE"),
        ("color in ()", "empty list"),
        ("price in (1,2)", "use <, <=, >, >="),
        ("price!=3", "'!=' is not supported"),
        ("attributes.=x", "unknown field"),
    ],
)
def test_bad_expressions_name_themselves(expr, message):
    with pytest.raises(FilterError) as info:
        parse_filter(expr)
    assert message in str(info.value)
    assert repr(expr) in str(info.value)
