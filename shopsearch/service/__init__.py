"""`shopsearch serve`: the shop's search as an HTTP service (the `serve` extra: FastAPI and
uvicorn).

Threading model. One process owns the collection: an embedded (Edge) shard opens in one
process only, and a server collection gains nothing from several. uvicorn's event loop
accepts requests and FastAPI runs each endpoint on a worker thread. Searches run side by
side on those threads; their query texts meet in the encoder's batches (`BatchingEncoder`),
which spread over the cores, and Qdrant answers each search. Writes (`PUT /products`,
deletes) go through one lock, one at a time (`LiveCollection`). A reindex
(`shopsearch ingest --recreate`) is noticed at the next request and the new collection is
opened beside the old one, which serves until the new one is ready and closes after its last
request. On SIGTERM or Ctrl-C uvicorn stops accepting, lets requests in flight finish, and
the collection is closed (flushed) last.
"""
