"""Highlighting: where a result's title and description hold the words the query searched.

A shopper scans a page for the words they typed; marking them says why each result is
there. The words marked are those BM25 matched: the text searched (typos corrected) and each
word of the field are put through the collection's own BM25 tokenizer (`qdrant_edge.Bm25`:
lowercase, stopwords dropped, Snowball stems), and a field's word is marked when one of its
term ids is one of the query's. So "boots" marks "Boot" and "booted", "running" marks "Run",
and a stopword ("the", the "t" of "t-shirt") marks nothing; a word BM25 would not match is
never marked. Qdrant hashes its terms and keeps its stems to itself, so none are written
out here: the tokenizer is asked about the field's words that begin with the first two
letters of a query word (lowercased), and its answers are cached. Two words of one Snowball
stem begin alike (the stemmer changes nothing before a word's third letter), but for a
handful of the stemmer's listed exceptions ("lying" is "lie"): those alone go unmarked.

Words are split as Qdrant splits them, at every character that is neither a letter nor a
digit (any script): "women's" is "women" and "s", "18v" is one word. A hyphenated word is
one word to a shopper, so a marked part takes its hyphenated neighbours that BM25 ignores
along ("T-Shirt", whose "t" is a stopword, is marked whole for "shirt"), and marked parts
joined by a hyphen make one span ("e-mail" for "e-mail"); a neighbour with terms of its own
that the query lacks stays unmarked ("eco-" of "eco-friendly" for "friendly").

Each field comes as `spans`, `[start, end)` offsets into the field's text in Unicode code
points (Python's string indices; JavaScript's `Array.from(text)` counts the same), for a page
that builds its own markup from the plain text, and as `marked`, the text HTML-escaped with
each span wrapped in `<em>`, safe to insert as HTML: a title's own "<script>" arrives as
"&lt;script&gt;". Nothing here depends on the search's mode or fusion: a dense search's
results are marked by the words of its query too.

It is cheap enough to run on every result: one regular-expression pass over the lowercased
field for the words beginning as a query word does, and a cached look-up of each (the
tokenizer runs once per word ever seen: `store.word_pairs.WordTerms`).
"""

from __future__ import annotations

import html
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.word_pairs import WORD, WordTerms

# Characters that join the parts of one word ("t-shirt"): hyphen-minus, hyphen, non-breaking
# hyphen.
HYPHENS = frozenset("-\u2010\u2011")
# The payload fields marked, where a result has them as text.
FIELDS = ("title", "description")

# Letters of a query word that a field's word must begin with to be asked about. Words of one
# Snowball stem share their first two letters (the stemmer changes nothing before the third,
# "cry" -> "cri", but in a handful of listed exceptions: "lying" -> "lie").
PREFIX = 2

Span = tuple[int, int]


@dataclass(frozen=True)
class Searched:
    """A search's text as marking reads it: its BM25 term ids, the lowercase beginnings of
    its words, and a pattern finding the words of a lowercased field that may hold them
    (None: the text has no terms, all stopwords). A field whose lowercasing changes its
    length is searched with the case-blind pattern, made only for such a field."""

    terms: frozenset[int]
    prefixes: frozenset[str]
    candidates: re.Pattern[str] | None


class Highlighter:
    """Marks the words a query searched, by one BM25 tokenizer (a collection's language);
    shared by the threads of a service: its cache is a dict, whose single operations the GIL
    keeps whole."""

    def __init__(self, language: str = Bm25Settings.language) -> None:
        self._bm25 = Bm25Settings(language=language).model()
        self.word_terms = WordTerms(self._bm25)  # a word's term ids, cached

    def query(self, text: str) -> Searched:
        """What marking a search of `text` looks for: its BM25 term ids, and the words that
        may hold them."""
        terms = frozenset(self._bm25.embed_query(text).indices)
        prefixes = frozenset(w.lower()[:PREFIX] for w in WORD.findall(text) if self.word_terms(w))
        if not terms or not prefixes:
            return Searched(terms, prefixes, None)
        return Searched(terms, prefixes, _candidates(prefixes, False))

    def spans(self, text: str, searched: Searched) -> list[Span]:
        """The `[start, end)` code-point offsets of the words of `text` that match the search,
        hyphenated words joined (module docstring), in order and disjoint."""
        if searched.candidates is None or not text:
            return []
        # Found in the lowercased text, the regular expression's fastest case; where
        # lowercasing changes the length ("İ"), offsets would shift, and case is ignored.
        lowered = text.lower()
        same_length = len(lowered) == len(text)
        within = lowered if same_length else text
        pattern = searched.candidates if same_length else _candidates(searched.prefixes, True)
        spans: list[Span] = []
        for found in pattern.finditer(within):
            start = found.start()
            if start and within[start - 1].isalnum():
                continue  # inside a word, not at its start
            if searched.terms.isdisjoint(self.word_terms(found.group())):
                continue
            start, end = self._joined(text, start, found.end())
            if spans and (start <= spans[-1][1] or _hyphen_between(text, spans[-1][1], start)):
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        return spans

    def _joined(self, text: str, start: int, end: int) -> Span:
        """The span of a matched word grown over the hyphenated neighbours that hold no terms
        (stopwords such as the "t" of "t-shirt")."""
        while start > 1 and text[start - 1] in HYPHENS:
            first = start - 1
            while first > 0 and text[first - 1].isalnum():
                first -= 1
            if first == start - 1 or self.word_terms(text[first : start - 1]):
                break
            start = first
        while end < len(text) - 1 and text[end] in HYPHENS:
            last = end + 1
            while last < len(text) and text[last].isalnum():
                last += 1
            if last == end + 1 or self.word_terms(text[end + 1 : last]):
                break
            end = last
        return start, end

    def field(self, text: str, searched: Searched) -> dict[str, Any]:
        """One field's highlight: its spans, and its text escaped and marked."""
        spans = self.spans(text, searched)
        return {"spans": [list(span) for span in spans], "marked": marked(text, spans)}

    def fields(self, payload: Mapping[str, Any], searched: Searched) -> dict[str, Any]:
        """The highlight of each of `FIELDS` that `payload` holds as non-empty text."""
        return {
            name: self.field(payload[name], searched)
            for name in FIELDS
            if isinstance(payload.get(name), str) and payload[name]
        }


def marked(text: str, spans: list[Span]) -> str:
    """`text` HTML-escaped (quotes too), each span wrapped in `<em>`."""
    parts, done = [], 0
    for start, end in spans:
        parts += [html.escape(text[done:start]), "<em>", html.escape(text[start:end]), "</em>"]
        done = end
    parts.append(html.escape(text[done:]))
    return "".join(parts)


_highlighters: dict[str, Highlighter] = {}
_lock = threading.Lock()


def highlighter(language: str = Bm25Settings.language) -> Highlighter:
    """The process's highlighter for a BM25 language, made once: its cache serves every
    search."""
    found = _highlighters.get(language)
    if found is None:
        with _lock:
            found = _highlighters.setdefault(language, Highlighter(language))
    return found


@lru_cache(maxsize=1024)
def _candidates(prefixes: frozenset[str], any_case: bool) -> re.Pattern[str]:
    """A pattern finding the words, and the tails of words, that begin with one of the
    lowercase `prefixes`: a word's start is checked by its caller, which is cheaper than a
    look-behind at every character."""
    alternatives = "|".join(re.escape(p) for p in sorted(prefixes, key=len, reverse=True))
    return re.compile(f"(?:{alternatives})[^\\W_]*", re.IGNORECASE if any_case else 0)


def _hyphen_between(text: str, end: int, start: int) -> bool:
    """Whether one span ends and the next starts across a single hyphen."""
    return start == end + 1 and text[end] in HYPHENS
