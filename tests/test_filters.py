import pytest

from shopsearch.errors import FilterError
from shopsearch.search.filters import parse_filter
from shopsearch.store.conditions import Match, Range


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
        # Keys with spaces, dots or slashes, quoted or not, reach Qdrant quoted.
        ("attributes.Ideal For=Women", Match('attributes."Ideal For"', ("Women",))),
        ("attributes.'Ideal For' = Women", Match('attributes."Ideal For"', ("Women",))),
        ('attributes."Ideal For"!=Men', Match('attributes."Ideal For"', ("Men",), negate=True)),
        ("attributes.Ideal For in (Women, Men)", Match('attributes."Ideal For"', ("Women", "Men"))),
        ("attributes.Model No.=X1", Match('attributes."Model No."', ("X1",))),
        ("attributes.'Made in'=India", Match('attributes."Made in"', ("India",))),
        ("attributes.Men's Size=9", Match('attributes."Men\'s Size"', ("9",))),
        (
            "attributes.Precious/Artificial Jewellery=Artificial",
            Match('attributes."Precious/Artificial Jewellery"', ("Artificial",)),
        ),
        # A category value with ` > ` is a path: every level must hold.
        (
            "category=womens footwear > casual shoes",
            Match("category", (("womens footwear", "casual shoes"),)),
        ),
        ("category in (a > b, c)", Match("category", (("a", "b"), "c"))),
        ("brand=a > b", Match("brand", ("a > b",))),  # only categories are paths
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
        ("attributes.''=x", "unknown field"),
        ("""attributes.'say "hi"'=x""", "a key with '\"'"),
        ("Ideal For=Women", "expected FIELD=VALUE"),  # a key with a space is an attribute's
        ("category=a >  > b", "empty level in category"),
    ],
)
def test_bad_expressions_name_themselves(expr, message):
    with pytest.raises(FilterError) as info:
        parse_filter(expr)
    assert message in str(info.value)
    assert repr(expr) in str(info.value)
