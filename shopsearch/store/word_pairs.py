"""The ids of a text's adjacent word pairs: what the default fusion's re-rank compares
between the query and each product's title (shopsearch.search.adaptive_fusion).

Neither retriever sees word order: BM25 and coverage count words, and a dense vector blurs
them, so a title holding "bathroom" and "vanity" apart ranks with one naming a "bathroom
vanity". A pair is two consecutive BM25 terms of the text's words (Qdrant's tokenizer, as
the BM25 vector: lower-cased, stemmed, stop words dropped, so "vanity for the bathroom"
pairs "vanity" with "bathroom"), hashed to a sparse-vector index (CRC-32 of the two term
ids: the same in every process). A product's title pairs are its `pairs` sparse vector
(values 1; `schema.PAIRS_VECTOR`), written at ingest and read with the window's hits.
"""

from __future__ import annotations

import re
import struct
import zlib
from itertools import pairwise
from typing import Any

# A word as Qdrant's tokenizer splits it: letters and digits; `_` separates, as in Qdrant.
WORD = re.compile(r"[^\W_]+")
# Distinct words whose term ids are kept; past it the cache starts afresh, so that a service
# answering for months holds no more than this (about 20 MB).
CACHED_WORDS = 100_000


class WordTerms:
    """Each word's BM25 term ids under one model (`Bm25Settings.model()`): none for a stop
    word, one for most, two for a word the tokenizer splits. Cached, since the tokenizer is
    the costly part and a catalog's words repeat (a tuple: a quarter of a small set's size)."""

    def __init__(self, bm25: Any) -> None:
        self._bm25 = bm25
        self._ids: dict[str, tuple[int, ...]] = {}

    def __call__(self, word: str) -> tuple[int, ...]:
        ids = self._ids.get(word)
        if ids is None:
            if len(self._ids) >= CACHED_WORDS:
                self._ids.clear()
            ids = self._ids[word] = tuple(self._bm25.embed_query(word).indices)
        return ids


class WordPairs:
    """The pair ids of texts under one BM25 model."""

    def __init__(self, bm25: Any) -> None:
        self._terms = WordTerms(bm25)

    def of(self, text: str) -> list[int]:
        """The ids of `text`'s adjacent term pairs, sorted, each once."""
        terms = [t for word in WORD.findall(text.lower()) for t in self._terms(word)]
        return sorted({pair_id(a, b) for a, b in pairwise(terms)})


def pair_id(first: int, second: int) -> int:
    """The sparse-vector index of the ordered term pair (first, second)."""
    return zlib.crc32(struct.pack("<II", first, second))
