"""Typo tolerance's rules on a hand-made vocabulary (no collection needed)."""

import pytest

from shopsearch.search.spelling import TypoCorrector
from shopsearch.store.vocabulary import (
    catalog_compounds,
    catalog_words,
    joined_compounds,
    kept_compounds,
    merge_vocabularies,
)

VOCABULARY = {
    "ryobi": 40,
    "robin": 3,
    "drill": 90,
    "toilet": 25,
    "seat": 30,
    "snow": 12,
    "blower": 8,
    "leaf": 9,
    "paint": 60,
    "faint": 1,
    "saint": 2,
    "café": 4,
    "speakers": 7,
    "outer": 9,
    "routers": 1,
    "seater": 3,
    "candles": 13,
}


@pytest.fixture
def typos():
    return TypoCorrector(VOCABULARY)


@pytest.mark.parametrize(
    ("typed", "searched"),
    [
        ("riobi drill", "ryobi drill"),  # substitution
        ("ryobbi drill", "ryobi drill"),  # insertion
        ("toilt seat", "toilet seat"),  # deletion
        ("toliet seat", "toilet seat"),  # two adjacent letters swapped: one edit
        ("snowblower", "snow blower"),  # two catalog words run together
        ("caff", "café"),  # the alphabet is the catalog's, accents included
    ],
)
def test_an_unknown_word_becomes_the_catalog_word_one_edit_away(typos, typed, searched):
    assert typos.correct(typed) == searched


def test_of_several_words_one_edit_away_the_most_used_wins(typos):
    assert typos.correct("robi") == "ryobi"  # ryobi 40, robin 3: both one edit
    assert typos.correct("saint") == "saint"  # a catalog word is never changed


def test_a_word_keeping_its_first_letter_wins_over_a_more_used_one(typos):
    assert typos.correct("router") == "routers"  # outer (9) is one edit away too
    assert typos.correct("kyobi drill") == "ryobi drill"  # if nothing else


def test_a_first_letter_change_is_not_made_when_another_common_word_is_as_close(typos):
    # heated, header, theater; handles: the shopper may mean a word the catalog lacks.
    assert typos.correct("heater") == "heater"  # not "seater"
    assert typos.correct("sandles") == "sandles"  # not "candles"
    # Keeping the first letter, a correction is made whatever common words are near.
    assert typos.correct("drilk") == "drill"  # drink is one edit away too


def test_a_common_word_the_catalog_lacks_is_meant_as_typed(typos):
    assert typos.correct("sneakers") == "sneakers"  # not "speakers", one edit away
    assert typos.correct("speakrs") == "speakers"  # not a word: still corrected


@pytest.mark.parametrize(
    "typed",
    [
        "drl",  # under four characters: too little to go on
        "2x4x8 drll18v",  # digits: model numbers and sizes stay exact
        "xylophone",  # nothing one edit away, and no split
        "Drill",  # known, whatever its case
    ],
)
def test_words_it_must_not_touch_are_kept_as_typed(typos, typed):
    assert typos.correct(typed) == typed


def test_only_the_misspelled_word_changes(typos):
    assert typos.correct('Riobi  "cordless" DRILL, 18V!') == 'ryobi  "cordless" DRILL, 18V!'


def test_without_a_vocabulary_nothing_changes():
    assert TypoCorrector({}).correct("riobi drill") == "riobi drill"


def test_catalog_words_are_casefolded_and_digit_free():
    assert catalog_words("RYOBI 18-Volt ONE+ Drill/Driver 2x4") == {
        "ryobi",
        "volt",
        "one",
        "drill",
        "driver",
    }


def test_merging_keeps_every_word_and_the_larger_count():
    old, new = {"drill": 5, "saw": 2}, {"drill": 3, "hammer": 1}
    assert merge_vocabularies(old, new) == {"drill": 5, "saw": 2, "hammer": 1}


def test_a_compound_the_catalog_hyphenates_is_split_before_any_edit():
    """ "tshirt" is one edit from "shirt", but the catalog writes "t-shirt"."""
    vocabulary = {"t": 3, "shirt": 40, "slide": 5, "range": 9, "red": 12}
    typos = TypoCorrector(vocabulary, {"t-shirt": 3, "slide-in": 2})
    assert typos.correct("red TShirt") == "red t-shirt"
    assert typos.correct("slidein range") == "slide-in range"
    assert TypoCorrector(vocabulary).correct("red tshirt") == "red shirt"  # no compounds kept


def test_catalog_compounds_are_the_hyphenated_digit_free_pairs():
    assert catalog_compounds("All-in-One T-Shirt, 18-Volt x-2 Drill/Driver") == {
        "all-in",
        "in-one",
        "t-shirt",
    }


def test_kept_compounds_are_the_most_used_and_their_joins_the_most_used_spelling():
    assert list(kept_compounds({"b-c": 1, "a-b": 5, "x-y": 5})) == ["a-b", "x-y", "b-c"]
    assert joined_compounds({"ab-c": 1, "a-bc": 4, "t-shirt": 2}) == {
        "abc": "a-bc",
        "tshirt": "t-shirt",
    }
