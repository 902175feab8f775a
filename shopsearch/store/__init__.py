"""Where a collection lives and what it holds: the `Backend` protocol with its two
implementations (embedded Qdrant Edge, a Qdrant server), the requests both send to Qdrant
(`qdrant_requests`), the collection schema and its documents (metadata, vocabulary, learned
fusion), BM25 settings, and filter conditions turned into Qdrant's filter models."""
