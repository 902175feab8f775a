"""BM25 sparse vectors with Qdrant's own tokenizer.

We use `qdrant_edge.Bm25`, whose config mirrors the server's `Bm25Config`, so a service
querying the `bm25` vector (or a Qdrant server doing BM25 inference) produces the same
token ids. The settings are stored with the collection: documents and queries must be
embedded with the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace

import qdrant_edge

from shopsearch.errors import UsageError

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
    def from_dict(cls, data: dict) -> Bm25Settings:
        return cls(**{k: data[k] for k in ("k", "b", "avg_len", "language") if k in data})

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
        return qdrant_edge.Bm25(
            qdrant_edge.Bm25Config(k=self.k, b=self.b, avg_len=self.avg_len, language=self.language)
        )
