"""The catalog vocabulary a collection keeps beside its points: each digit-free word of the
product texts with the number of products using it, and each compound the texts write with a
hyphen ("t-shirt", "slide-in"; a chain as its pairs) with the same count. Ingest writes
them; typo correction reads them (`shopsearch.search.spelling`): a shopper types "tshirt"
where the catalog writes "t-shirt"."""

from __future__ import annotations

import re
from collections.abc import Mapping

DIGIT_FREE_WORD = re.compile(r"\b[^\W\d]+\b")
# Two digit-free words joined by a hyphen; chains ("all-in-one") give each adjacent pair.
_HYPHENATED = re.compile(r"\b([^\W\d]+)-(?=([^\W\d]+)\b)")
# The most compounds a collection keeps, the most used first: they are read with the
# vocabulary (the 54,667 Home Depot titles write 3,047).
MAX_COMPOUNDS = 20_000


def catalog_words(text: str) -> set[str]:
    """The words of a product text that a query word can be corrected to (digit-free)."""
    return set(DIGIT_FREE_WORD.findall(text.casefold()))


def catalog_compounds(text: str) -> set[str]:
    """The hyphenated compounds of a product text ("t-shirt"): a query word equal to one
    without its hyphen ("tshirt") means it. Only hyphenated ones: two words a space apart
    are a compound as often as not ("drill with")."""
    return {f"{left}-{right}" for left, right in _HYPHENATED.findall(text.casefold())}


def kept_compounds(compounds: Mapping[str, int]) -> dict[str, int]:
    """The `MAX_COMPOUNDS` most used (ties by the words, so the choice does not depend on
    the order they came in)."""
    ranked = sorted(compounds.items(), key=lambda item: (-item[1], item[0]))
    return dict(ranked[:MAX_COMPOUNDS])


def joined_compounds(compounds: Mapping[str, int]) -> dict[str, str]:
    """Compound without its hyphen -> the compound ("tshirt" -> "t-shirt"); where two join
    alike, the more used."""
    joined: dict[str, tuple[int, str]] = {}
    for words, count in compounds.items():
        key = words.replace("-", "")
        if key not in joined or (count, words) > joined[key]:
            joined[key] = (count, words)
    return {key: words for key, (_, words) in joined.items()}


def merge_vocabularies(old: Mapping[str, int], new: Mapping[str, int]) -> dict[str, int]:
    """Re-ingesting a catalog overwrites its products, so a count is the larger of the two,
    not their sum; only the words and their rough order of use matter for correction."""
    merged = dict(old)
    for word, count in new.items():
        merged[word] = max(count, merged.get(word, 0))
    return merged
