"""BM25 sparse vectors with Qdrant's own tokenizer.

We use `qdrant_edge.Bm25`, whose config mirrors the server's `Bm25Config`, so a service
querying the `bm25` vector (or a Qdrant server doing BM25 inference) produces the same
token ids. The settings are stored with the collection: documents and queries must be
embedded with the same ones.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import qdrant_edge

from shopsearch.errors import CollectionError, UsageError

# Product texts are short (title + brand + category + a few attributes); BM25's stock
# avg_len of 256 would make its length normalisation meaningless for them.
DEFAULT_AVG_LEN = 24.0


@dataclass(frozen=True)
class Bm25Settings:
    # Not the textbook k = 1.2: a product title rarely repeats a word, and a long title is
    # no less about its product. A small k weakens term-frequency saturation and length
    # normalisation alike, which ranks Home Depot's train and dev queries better
    # (benchmarks/bm25_params.py; benchmarks/RESULTS.md, section 7).
    k: float = 0.3
    b: float = 0.75
    avg_len: float = DEFAULT_AVG_LEN
    language: str = "english"

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str | None = None) -> Bm25Settings:
        """Settings a collection stored. Its metadata is a file anyone may edit, so each value
        is checked here, where it is read, rather than failing deep inside the tokenizer:
        CollectionError names the setting; `where` names the collection."""
        source = where or "the collection's metadata (shopsearch.json in an embedded collection)"

        def bad(name: str, value: object, expected: str) -> CollectionError:
            return CollectionError(
                f"{source}: BM25 setting {name!r} is {value!r}, not {expected}; fix it, or "
                "re-ingest with --recreate"
            )

        if not isinstance(data, dict):
            raise CollectionError(f"{source}: the BM25 settings are {data!r}, not an object")
        chosen = {name: data[name] for name in ("k", "b", "avg_len", "language") if name in data}
        for name, value in chosen.items():
            if name == "language":
                if not isinstance(value, str) or not value:
                    raise bad(name, value, "a language name such as 'english'")
            elif isinstance(value, bool) or not isinstance(value, int | float):
                raise bad(name, value, "a number")
            elif not math.isfinite(value):
                raise bad(name, value, "a finite number")
        settings = cls(**chosen)
        if not settings.k >= 0:
            raise bad("k", settings.k, "a number >= 0")
        if not 0 <= settings.b <= 1:
            raise bad("b", settings.b, "a number between 0 and 1")
        if not settings.avg_len > 0:
            raise bad("avg_len", settings.avg_len, "a number > 0")
        return settings

    def fitted(self, texts: Iterable[str]) -> Bm25Settings:
        """These settings with avg_len the mean token count of a sample of the catalog."""
        model = self.model()
        lengths = [len(model.embed_query(t).indices) for t in texts]
        avg = sum(lengths) / len(lengths) if lengths else DEFAULT_AVG_LEN
        return replace(self, avg_len=round(max(avg, 1.0), 1))

    def check(self) -> None:
        """k and b where BM25 is defined; raised as the ingest flags that set them."""
        if not self.k >= 0:
            raise UsageError(f"--bm25-k must be at least 0 (got {self.k})")
        if not 0 <= self.b <= 1:
            raise UsageError(f"--bm25-b must be between 0 and 1 (got {self.b})")

    def model(self) -> qdrant_edge.Bm25:
        """The tokenizer; CollectionError when it refuses these settings (an unknown stored
        language: flags check k and b before a collection stores them)."""
        try:
            return qdrant_edge.Bm25(
                qdrant_edge.Bm25Config(
                    k=self.k, b=self.b, avg_len=self.avg_len, language=self.language
                )
            )
        except (TypeError, ValueError) as exc:
            raise CollectionError(f"BM25 cannot use the settings {self.to_dict()}: {exc}") from exc
