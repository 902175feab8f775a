"""The catalog vocabulary a collection keeps beside its points: each digit-free word of the
product texts with the number of products using it. Ingest writes it; typo correction reads
it (`shopsearch.search.spelling`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

DIGIT_FREE_WORD = re.compile(r"\b[^\W\d]+\b")


def catalog_words(text: str) -> set[str]:
    """The words of a product text that a query word can be corrected to (digit-free)."""
    return set(DIGIT_FREE_WORD.findall(text.casefold()))


def merge_vocabularies(old: Mapping[str, int], new: Mapping[str, int]) -> dict[str, int]:
    """Re-ingesting a catalog overwrites its products, so a count is the larger of the two,
    not their sum; only the words and their rough order of use matter for correction."""
    merged = dict(old)
    for word, count in new.items():
        merged[word] = max(count, merged.get(word, 0))
    return merged
