"""Typo tolerance: a query word no product uses is replaced by a catalog word one edit away.

Shoppers misspell ("riobi drill", "toliet seat"), and many queries hold a word that no
product title contains. BM25 cannot match such a word at all, and the dense encoder's word
pieces match it poorly. So ingest stores the catalog's vocabulary (each word
with the number of products using it) beside the collection, and a query word that is not
in it, has at least `MIN_WORD_LEN` characters and no digit, and is not a common English word
(`common_words`), becomes:
0. a compound the catalog writes with a hyphen, where the word is it without the hyphen
   ("tshirt" where titles say "t-shirt", "slidein" where they say "slide-in"), so the query
   searches the catalog's own spelling on both sides: the compounds
   (`store.vocabulary.catalog_compounds`) come before any edit, which would find a
   neighbour ("shirt") instead; a common word too becomes the compound, which keeps its
   meaning;
1. the most-used vocabulary word one edit away (Damerau: insert, delete, substitute, or
   swap two adjacent characters) that keeps the word's first letter, or failing that the
   most-used one that does not (a first letter is mistyped less often than a later one, and
   a candidate keeping it is likelier meant: "router" is "routers", not the more-used
   "outer"; "kyobi" still becomes "ryobi"), unless that changes the first letter while
   another common word is one edit away too: then the word is kept as typed;
2. failing that, two vocabulary words of at least `MIN_PART_LEN` characters that it splits
   into ("snowblower" -> "snow blower"), the pair whose rarer word is most used;
3. failing both, itself.

A common word is meant as typed even where the catalog lacks it: "sneakers" in a shop that
sells no sneakers must not become "speakers", nor "drill" "grill". A word one edit from a
common word other than the candidate may be meant as typed too, or be a form of a word the
list lacks ("heater": header, heated, theater), and a changed first letter is weak evidence
against that: so "heater" does not become "seater", nor "sandles" "candles" (one edit from
"handles") in a shop without heaters, while "kyobi" (no common word near) becomes "ryobi".
These guards cost little ranking quality against correcting every unknown word to the
most-used one, and spare a shop corrections that change what the shopper asked for. The last
rule keeps a word as typed where its candidate is wrong ("saw zall" is a Sawzall, not a
wall; "fome core" foam, not home), and as often where it is right ("ciding" is siding,
"akita" Makita).
Words with digits are left alone: a model number or size one edit away ("2x12" -> "2x22")
is another product. Only one edit is tried: two (as Norvig's corrector does) multiply the
candidates for no material gain. benchmarks/RESULTS.md section 8 has the measurements
(`benchmarks/typo_tolerance.py`).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from shopsearch.store.documents import read_words_and_compounds
from shopsearch.store.vocabulary import DIGIT_FREE_WORD, joined_compounds

if TYPE_CHECKING:
    from shopsearch.store.backend import Backend

MIN_WORD_LEN = 4
MIN_PART_LEN = 3
# Substitutions and inserts draw from the vocabulary's most-used characters, which bounds the
# candidates of a word of n characters at ~2 * ALPHABET_SIZE * n whatever the script.
ALPHABET_SIZE = 48

# Generated from the base encoder's tokenizer (see `common_words`).
COMMON_WORDS_FILE = Path(__file__).with_name("common_words.txt")

_WORD = re.compile(r"\w+")


@cache
def common_words() -> frozenset[str]:
    """Lowercase English words of 4+ letters: the whole-word entries of BERT's uncased
    WordPiece vocabulary (all-MiniLM-L6-v2's tokenizer, Apache-2.0), names included. Read at
    the first word the catalog lacks, not at every query: most queries never need it."""
    return frozenset(COMMON_WORDS_FILE.read_text(encoding="ascii").split())


class TypoCorrector:
    def __init__(
        self, vocabulary: Mapping[str, int], compounds: Mapping[str, int] | None = None
    ) -> None:
        self.vocabulary = vocabulary
        self.compounds = compounds or {}

    @classmethod
    def stored(cls, backend: Backend) -> TypoCorrector:
        """The collection's; a collection stored without a vocabulary gets a corrector that
        leaves every query as typed."""
        words, compounds = read_words_and_compounds(backend) or ({}, {})
        return cls(words, compounds)

    def correct(self, text: str) -> str:
        """`text` with each unknown word replaced; everything else as typed."""
        if not self.vocabulary:
            return text
        return _WORD.sub(lambda m: self._word(m.group(0)), text)

    def _word(self, typed: str) -> str:
        word = typed.casefold()
        if len(word) < MIN_WORD_LEN or word in self.vocabulary:
            return typed
        compound = self._compounds.get(word)
        if compound is not None:
            return compound
        if not DIGIT_FREE_WORD.fullmatch(word) or word in common_words():
            return typed
        one_edit = [w for w in _edits(word, self._alphabet) if w in self.vocabulary]
        if one_edit:
            best = max(one_edit, key=lambda w: (w[0] == word[0], self.vocabulary[w], w))
            if best[0] == word[0] or not _near_another_common_word(word, best):
                return best
            return typed
        splits = [
            (word[:i], word[i:])
            for i in range(MIN_PART_LEN, len(word) - MIN_PART_LEN + 1)
            if word[:i] in self.vocabulary and word[i:] in self.vocabulary
        ]
        if splits:
            left, right = max(
                splits, key=lambda s: (min(self.vocabulary[s[0]], self.vocabulary[s[1]]), s)
            )
            return f"{left} {right}"
        return typed

    @cached_property
    def _compounds(self) -> dict[str, str]:
        """Joined compound -> its words, made at the first word the catalog lacks."""
        return joined_compounds(self.compounds)

    @cached_property
    def _alphabet(self) -> str:
        counts = Counter("".join(self.vocabulary))
        return "".join(ch for ch, _ in counts.most_common(ALPHABET_SIZE))


def _near_another_common_word(word: str, candidate: str) -> bool:
    # Only for a first-letter change, which is rare, so the edits are made again; over a-z,
    # the common words' letters, whatever the catalog's alphabet.
    common = common_words()
    return any(w in common and w != candidate for w in _edits(word, string.ascii_lowercase))


def _edits(word: str, alphabet: str) -> Iterable[str]:
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    for left, right in splits:
        if right:
            yield left + right[1:]
            if len(right) > 1:
                yield left + right[1] + right[0] + right[2:]
            for ch in alphabet:
                yield left + ch + right[1:]
        for ch in alphabet:
            yield left + ch + right
