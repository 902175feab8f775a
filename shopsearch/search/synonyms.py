"""Synonyms: a shop's word list, stored with the collection, that widens the BM25 side of a query.

A synonyms file (JSON) is `{"synonyms": [ENTRY, ...]}` (or the bare list). An ENTRY is
either

    {"words": ["sofa", "couch", "settee"]}   two-way: each phrase stands for the others
    {"from": "tv", "to": ["television"]}     one-way: "tv" also searches "television",
                                             "television" does not search "tv"

`from` and `to` take a phrase or a list of them; a phrase is one word or several
("flat screen"). An empty list removes every synonym.

How a query uses them (`Synonyms.apply`, at `ProductSearch.prepare`, after typo correction):
the searched text and each phrase are compared word by word by their BM25 terms (Qdrant's
tokenizer with the collection's settings: case-folded, stemmed, stop words skipped), so
"Couches" matches the phrase "couch". Left to right, the longest phrase matching at a word
wins and its words match nothing else. Each matched phrase adds the BM25 terms of the phrases
it stands for to the query's sparse vector, each with weight `SYNONYM_WEIGHT` (0.5; a word
the shopper typed weighs 1): a product saying what the shopper typed ranks above one saying
only a synonym of it (of similar rarity), and one saying only the synonym is still found. A
term the query already holds, or another synonym already added, is not added again. The
dense side and the displayed `searched` text are left as they are; the answer lists what was
applied (`Applied.to_dict`). For the default fusion's query-term coverage
(search/adaptive_fusion.py), a product holding a synonym's term covers the query words it
stands for (`coverage_terms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shopsearch.errors import CollectionError, InputFileError
from shopsearch.search.json_files import read_json_file
from shopsearch.store.backend import Hit, SparseVec
from shopsearch.store.documents import read_synonyms

if TYPE_CHECKING:
    import qdrant_edge

    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
    from shopsearch.store.backend import Backend

# A synonym's term weighs half a typed word's (module docstring).
SYNONYM_WEIGHT = 0.5
# How old the synonyms a search applies may be: read again at most this often, so that
# `shopsearch synonyms set` reaches a running service within it (as its rules do).
CHECK_SECONDS = 1.0
MAX_ENTRIES = 10_000
_ENTRY_KEYS = ("words", "from", "to")
_AGAIN = "(store them again with `shopsearch synonyms set`)"

_Key = tuple[tuple[int, ...], ...]  # a phrase as compared: each word's BM25 terms


@dataclass(frozen=True)
class Entry:
    """One entry of the file: `sources` each stand for the `targets` (a two-way entry's
    phrases are both; a phrase never stands for itself)."""

    index: int
    sources: tuple[str, ...]
    targets: tuple[str, ...]
    two_way: bool

    def to_dict(self) -> dict[str, Any]:
        if self.two_way:
            return {"words": list(self.sources)}
        source: Any = self.sources[0] if len(self.sources) == 1 else list(self.sources)
        return {"from": source, "to": list(self.targets)}


@dataclass(frozen=True)
class Applied:
    """What one matched phrase of the query added: `matched` (the query's words), the phrases
    `added` for it, the entries they came from, and (for the search, not the answer) the BM25
    terms it added and the query's own terms of the matched words."""

    matched: str
    added: tuple[str, ...]
    entries: tuple[int, ...]
    terms: tuple[int, ...] = field(default=(), repr=False)
    own: tuple[int, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"matched": self.matched, "added": list(self.added), "entries": list(self.entries)}


@dataclass(frozen=True)
class SynonymSet:
    entries: tuple[Entry, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"synonyms": [e.to_dict() for e in self.entries]}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> SynonymSet:
        """Checked entries; InputFileError naming the entry's index and field otherwise."""
        items = data.get("synonyms") if isinstance(data, dict) else data
        if isinstance(data, dict) and set(data) != {"synonyms"}:
            raise InputFileError(f'{where}: expected {{"synonyms": [ENTRY, ...]}}')
        if not isinstance(items, list):
            raise InputFileError(f"{where}: the synonyms are not a list")
        if len(items) > MAX_ENTRIES:
            raise InputFileError(f"{where}: {len(items)} entries, more than {MAX_ENTRIES}")
        entries = []
        for index, item in enumerate(items):
            try:
                entries.append(_entry(index, item))
            except _Bad as bad:
                raise InputFileError(
                    f"{where}: synonym {index} field {bad.field}: {bad.problem}"
                ) from None
        return cls(tuple(entries))

    @classmethod
    def from_file(cls, path: Path) -> SynonymSet:
        return cls.from_dict(read_json_file(path), path.name)

    @classmethod
    def stored(cls, backend: Backend) -> SynonymSet:
        """The collection's synonyms (none when it has no synonyms document)."""
        data = read_synonyms(backend)
        if data is None:
            return cls()
        where = f"the synonyms of the collection at {backend.location}"
        try:
            return cls.from_dict(data, where)
        except InputFileError as exc:
            raise CollectionError(f"{exc} {_AGAIN}") from None

    def compiled(self, bm25: qdrant_edge.Bm25, where: str) -> Synonyms:
        """The entries keyed by BM25 terms; InputFileError for a phrase with no searchable
        word (stop words only), which could never match nor add anything."""
        table: dict[_Key, list[tuple[str, int]]] = {}
        keys: dict[str, _Key] = {}
        for entry in self.entries:
            for role, phrases in (("words" if entry.two_way else "from", entry.sources),
                                  ("words" if entry.two_way else "to", entry.targets)):  # fmt: skip
                for n, phrase in enumerate(phrases):
                    key = _key(bm25, phrase)
                    if not key:
                        raise InputFileError(
                            f"{where}: synonym {entry.index} field {role}[{n}]: {phrase!r} has "
                            "no searchable word (only stop words or punctuation)"
                        )
                    keys[phrase] = key
            for source in entry.sources:
                targets = table.setdefault(keys[source], [])
                for target in entry.targets:
                    if keys[target] != keys[source] and (target, entry.index) not in targets:
                        targets.append((target, entry.index))
        terms = {p: tuple(sorted({t for word in k for t in word})) for p, k in keys.items()}
        return Synonyms(self, bm25, table, terms)


class Synonyms:
    """A synonym set compiled for one collection's BM25 tokenizer: what `apply` matches."""

    def __init__(
        self,
        source: SynonymSet,
        bm25: qdrant_edge.Bm25,
        table: dict[_Key, list[tuple[str, int]]],
        terms: dict[str, tuple[int, ...]],
    ) -> None:
        self.source = source
        self._bm25 = bm25
        self._table = table
        self._terms = terms
        self._longest = max((len(k) for k in table), default=0)

    def __bool__(self) -> bool:
        return bool(self._table)

    def apply(self, text: str) -> tuple[Applied, ...]:
        """The synonyms `text` (the searched text) matches, each with the terms it adds
        (module docstring): none where nothing matched or every synonym's terms are in it."""
        if not self._table:
            return ()
        words = [(w, _word_terms(self._bm25, w)) for w in text.split()]
        words = [(w, k) for w, k in words if k]  # stop words match as they search: not at all
        present = {t for _, k in words for t in k}
        applied = []
        i = 0
        while i < len(words):
            for length in range(min(self._longest, len(words) - i), 0, -1):
                found = self._table.get(tuple(k for _, k in words[i : i + length]))
                if found is not None:
                    break
            else:
                i += 1
                continue
            span = words[i : i + length]
            own = tuple(sorted({t for _, k in span for t in k}))
            added, entries, new = [], [], []
            for target, entry in found:
                fresh = [t for t in self._terms[target] if t not in present]
                if fresh:
                    present.update(fresh)
                    new += fresh
                    added.append(target)
                    entries.append(entry)
            if added:
                matched = " ".join(w for w, _ in span)
                unique = tuple(dict.fromkeys(entries))
                applied.append(Applied(matched, tuple(added), unique, tuple(new), own))
            i += length
        return tuple(applied)


class _Bad(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _entry(index: int, item: Any) -> Entry:
    if not isinstance(item, dict):
        raise _Bad("(the entry)", f"expected an object, not {type(item).__name__}")
    unknown = sorted(set(item) - set(_ENTRY_KEYS))
    if unknown:
        raise _Bad(unknown[0], "unknown field (an entry has words, or from and to)")
    if "words" in item:
        if "from" in item or "to" in item:
            raise _Bad("words", "give words (two-way) or from and to (one-way), not both")
        words = _phrases("words", item["words"])
        if len(words) < 2:
            raise _Bad("words", "expected at least two phrases that stand for each other")
        return Entry(index, words, words, two_way=True)
    if "from" not in item or "to" not in item:
        missing = "from" if "from" not in item else "to"
        raise _Bad(missing, "missing (an entry has words, or from and to)")
    return Entry(index, _phrases("from", item["from"]), _phrases("to", item["to"]), False)


def _phrases(name: str, value: Any) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values:
        raise _Bad(name, "expected a phrase or a non-empty list of phrases")
    out = []
    for n, phrase in enumerate(values):
        where = name if isinstance(value, str) else f"{name}[{n}]"
        if not isinstance(phrase, str) or not phrase.strip():
            raise _Bad(where, f"expected a non-empty string, not {phrase!r}")
        if len(phrase) > 200:
            raise _Bad(where, "longer than 200 characters")
        out.append(" ".join(phrase.split()))
    return tuple(dict.fromkeys(out))


def _word_terms(bm25: qdrant_edge.Bm25, word: str) -> tuple[int, ...]:
    return tuple(sorted(bm25.embed_query(word).indices))


def _key(bm25: qdrant_edge.Bm25, phrase: str) -> _Key:
    return tuple(k for k in (_word_terms(bm25, w) for w in phrase.split()) if k)


def current_synonyms(search: ProductSearch, max_age: float | None = CHECK_SECONDS) -> Synonyms:
    """The collection's synonyms as `search` last read them: read at the first search, and
    again when older than `max_age` seconds (a long-running service notices `synonyms set`)."""
    return search.synonyms.get(max_age)


def stored_synonyms(search: ProductSearch) -> Synonyms:
    """The collection's synonyms, compiled by its own BM25 tokenizer."""
    where = f"the synonyms of the collection at {search.backend.location}"
    try:
        return SynonymSet.stored(search.backend).compiled(search.bm25_model, where)
    except InputFileError as exc:
        raise CollectionError(f"{exc} {_AGAIN}") from None


def with_synonyms(search: ProductSearch, query: Query, options: SearchOptions) -> Query:
    """`query` (prepared: `searched` decided) with the synonyms its searched text matches, or
    none where `options` turn them off. Decided once: a query that carries them keeps them."""
    if not options.synonyms:
        return replace(query, synonyms=None) if query.synonyms else query
    if query.synonyms is not None:
        return query
    table = current_synonyms(search)
    if not table:
        return query
    applied = table.apply(query.searched or query.text)
    return replace(query, synonyms=applied) if applied else query


def expanded(sparse: SparseVec, applied: Sequence[Applied] | None) -> SparseVec:
    """The query's BM25 vector with its synonyms' terms added at `SYNONYM_WEIGHT`."""
    if not applied:
        return sparse
    held = set(sparse.indices)
    extra = [t for a in applied for t in a.terms if t not in held]
    extra = list(dict.fromkeys(extra))
    return SparseVec(sparse.indices + extra, sparse.values + [SYNONYM_WEIGHT] * len(extra))


def coverage_terms(
    sparse: SparseVec, applied: Sequence[Applied] | None, hits: Sequence[Hit]
) -> tuple[list[int], list[Hit]]:
    """The query's own terms, and `hits` with each synonym term they hold counted as the query
    terms of the words it stands for: the default fusion's coverage of what the shopper typed,
    which a product saying only the synonym covers too."""
    if not applied:
        return list(sparse.indices), list(hits)
    alias: dict[int, set[int]] = {}
    for a in applied:
        for t in a.terms:
            alias.setdefault(t, set()).update(a.own)
    own = [t for t in sparse.indices if t not in alias]
    mapped = []
    for h in hits:
        terms = {s for t in h.terms for s in alias.get(t, (t,))}
        mapped.append(replace(h, terms=tuple(sorted(terms))))
    return own, mapped
