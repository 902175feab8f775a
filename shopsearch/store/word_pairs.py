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

# A word as the BM25 tokenizer splits them: letters and digits.
WORD = re.compile(r"[^\W_]+")
# Words whose terms are kept; past it the cache starts again (a catalog's vocabulary fits).
CACHED_WORDS = 200_000


class WordPairs:
    """The pair ids of texts under one BM25 model (`Bm25Settings.model()`), each word's terms
    cached."""

    def __init__(self, bm25: Any) -> None:
        self._bm25 = bm25
        self._terms: dict[str, tuple[int, ...]] = {}

    def of(self, text: str) -> list[int]:
        """The ids of `text`'s adjacent term pairs, sorted, each once."""
        terms = [t for word in WORD.findall(text.lower()) for t in self._word(word)]
        return sorted({pair_id(a, b) for a, b in pairwise(terms)})

    def _word(self, word: str) -> tuple[int, ...]:
        terms = self._terms.get(word)
        if terms is None:
            if len(self._terms) >= CACHED_WORDS:
                self._terms.clear()
            terms = self._terms[word] = tuple(self._bm25.embed_query(word).indices)
        return terms


def pair_id(first: int, second: int) -> int:
    """The sparse-vector index of the ordered term pair (first, second)."""
    return zlib.crc32(struct.pack("<II", first, second))
