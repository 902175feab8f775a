"""Where a collection lives and what it holds: the `Backend` protocol with its two
implementations (embedded Qdrant Edge, a Qdrant server), the collection schema and metadata,
BM25 settings, and filter conditions turned into Qdrant's filter models."""
