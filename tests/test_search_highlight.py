"""Highlighting: the words a search matched, marked in each result's title and description
as offsets and as escaped HTML, by the collection's own BM25 tokenizer."""

import html
import re

import pytest

from shopsearch.search.highlight import Highlighter, marked
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.search.responses import search_document


@pytest.fixture(scope="module")
def marker():
    return Highlighter()


def words(marker, query, text):
    """The marked words of `text` for a search of `query`."""
    return [text[a:b] for a, b in marker.spans(text, marker.query(query))]


def test_words_match_by_bm25_terms_stems_and_case_included(marker):
    assert words(marker, "boots", "Black Boot, booted, BOOTS and bootcut jeans") == [
        "Boot",
        "booted",
        "BOOTS",
    ]  # "bootcut" is another term: BM25 would not match it
    assert words(marker, "running shoe", "Run fast: running shoes for runners") == [
        "Run",
        "running",
        "shoes",
    ]
    assert words(marker, "shirt", "Overshirt and shirts") == ["shirts"]  # whole words only
    assert words(marker, "women's", "Women's shoes for women") == ["Women", "women"]
    assert words(marker, "18v drill", "Cordless Drill 18V, 18 V battery") == ["Drill", "18V"]


def test_stopwords_and_empty_queries_mark_nothing(marker):
    assert words(marker, "the", "The best of the best") == []
    assert words(marker, "of the boots", "The best of boots") == ["boots"]
    searched = marker.query("the a of")
    assert searched.candidates is None
    assert marker.field("The shirt", searched) == {"spans": [], "marked": "The shirt"}


def test_hyphenated_words(marker):
    # The "t" of "t-shirt" is a stopword: it joins the marked "shirt", for either query.
    for query in ("shirt", "red t-shirt", "T-Shirts"):
        assert "T-Shirt" in words(marker, query, "Red cotton T-Shirt"), query
    # A part with terms of its own stays as it is, unless the query has them too.
    assert words(marker, "friendly", "Eco-friendly bag") == ["friendly"]
    assert words(marker, "eco-friendly", "Eco-friendly bag") == ["Eco-friendly"]
    assert words(marker, "mail", "e-mail and mail") == ["mail", "mail"]
    assert words(marker, "zip", "a zip-up hoodie") == ["zip-up"]  # "up": a stopword
    assert words(marker, "up", "zip-up") == []  # a stopword, even inside a hyphenated word
    assert words(marker, "boot", "boot_cut and a_boot") == ["boot", "boot"]  # _ separates


def test_markup_in_a_title_is_escaped(marker):
    title = '<script>alert("boots")</script> Boots & <b>laces</b>'
    field = marker.field(title, marker.query("boots laces script"))
    assert [title[a:b] for a, b in field["spans"]] == [
        "script",
        "boots",
        "script",
        "Boots",
        "laces",
    ]
    assert field["marked"] == (
        "&lt;<em>script</em>&gt;alert(&quot;<em>boots</em>&quot;)&lt;/<em>script</em>&gt; "
        "<em>Boots</em> &amp; &lt;b&gt;<em>laces</em>&lt;/b&gt;"
    )
    # Only the <em> tags are markup: removing them leaves the escaped title.
    assert re.sub("</?em>", "", field["marked"]) == html.escape(title)
    assert marked("a < b", []) == "a &lt; b"


def test_unicode_offsets_are_code_points(marker):
    assert words(marker, "café über", "ÜBER Café, über cafe") == ["ÜBER", "Café", "über"]
    assert words(marker, "日本語", "日本語 の本") == ["日本語"]
    # An emoji before the word: offsets count code points (JavaScript's Array.from).
    text = "😀😀 boots"
    assert marker.spans(text, marker.query("boots")) == [(3, 8)]
    # Lowercasing "İ" makes two characters: the offsets stay the original text's.
    text = "İstanbul İSTANBUL rug with boots"
    assert words(marker, "boots", text) == ["boots"]
    assert marker.spans(text, marker.query("boots"))[0][0] == text.index("boots")


def test_fields_are_the_title_and_description_held_as_text(marker):
    searched = marker.query("red shirt")
    payload = {"title": "Red shirt", "description": None, "color": "Red", "brand": "shirt co"}
    assert marker.fields(payload, searched) == {
        "title": {"spans": [[0, 3], [4, 9]], "marked": "<em>Red</em> <em>shirt</em>"}
    }
    both = marker.fields({"title": "Blue shirt", "description": "A red one"}, searched)
    assert both["description"] == {"spans": [[2, 5]], "marked": "A <em>red</em> one"}
    assert marker.fields({"product_id": "x"}, searched) == {}


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_search_answers_carry_the_highlight_of_the_text_searched(request, encoder, backend_name):
    """End to end on a real collection: each result's title and description are marked by
    the words the search matched (the corrected text, not the typed one), and the markup
    agrees with the offsets."""
    search = ProductSearch(request.getfixturevalue(backend_name), encoder)
    query = Query("blak leather boots", searched="black leather boots")
    options = SearchOptions(top_k=10)
    doc = search_document(query, [], options, search.search(query, options))
    assert doc["results"]
    marker = Highlighter()
    terms = marker.query("black leather boots").terms
    titles = 0
    for result in doc["results"]:
        highlight = result["highlight"]
        assert set(highlight) == {f for f in ("title", "description") if result.get(f)}
        for name, field in highlight.items():
            text = result[name]
            for start, end in field["spans"]:
                word = text[start:end]
                parts = re.findall(r"[^\W_]+", word)
                assert any(terms & set(marker.word_terms(p)) for p in parts), word
            assert field["marked"] == marked(text, [tuple(s) for s in field["spans"]])
            assert "blak" not in field["marked"].lower()
        titles += bool(highlight["title"]["spans"])
    assert titles >= 5, titles  # boots, leather or black in most titles
