"""BM25 sparse vectors with Qdrant's own tokenizer.

We use `qdrant_edge.Bm25`, whose config mirrors the server's `Bm25Config`, so a service
querying the `bm25` vector (or a Qdrant server doing BM25 inference) produces the same
token ids. The settings are stored with the collection: documents and queries must be
embedded with the same ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

import qdrant_edge

# Product texts are short (title + brand + category + a few attributes); BM25's stock
# avg_len of 256 would make its length normalisation meaningless for them.
DEFAULT_AVG_LEN = 24.0


@dataclass(frozen=True)
class Bm25Settings:
    k: float = 1.2
    b: float = 0.75
    avg_len: float = DEFAULT_AVG_LEN
    language: str = "english"

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Bm25Settings:
        return cls(**{k: data[k] for k in ("k", "b", "avg_len", "language") if k in data})

    @classmethod
    def fitted(cls, texts: Iterable[str]) -> Bm25Settings:
        """Settings whose avg_len is the mean token count of a sample of the catalog."""
        model = qdrant_edge.Bm25(qdrant_edge.Bm25Config(language=cls.language))
        lengths = [len(model.embed_query(t).indices) for t in texts]
        avg = sum(lengths) / len(lengths) if lengths else DEFAULT_AVG_LEN
        return cls(avg_len=round(max(avg, 1.0), 1))

    def model(self) -> qdrant_edge.Bm25:
        return qdrant_edge.Bm25(
            qdrant_edge.Bm25Config(k=self.k, b=self.b, avg_len=self.avg_len, language=self.language)
        )
