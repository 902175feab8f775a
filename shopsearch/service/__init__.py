"""`shopsearch serve`: the shop's search as an HTTP service (the `serve` extra: FastAPI and
uvicorn).

Threading model. One process owns the collection (an embedded Edge shard opens in one
process only) and so holds the interpreter's lock for all its Python. uvicorn's event loop
accepts requests and each endpoint runs on a worker thread. Searches have threads of their
own, `--search-threads` at most at once (the rest wait their turn in arrival order): those
running side by side meet in batches (`LiveCollection.search`, `BatchingEncoder`), which
spread over the cores, and Qdrant answers each batch. One search thread runs each search
from start to end alone: no other request's Python competes with it for the interpreter's
lock, the lowest tail latency at a moderate load; many batch searches under a heavy one.
Writes (`PUT /products`, deletes) go through one lock, one at a time (`LiveCollection`). A
reindex (`shopsearch ingest --recreate`) is noticed at the next request and the new
collection is opened beside the old one, which serves until the new one is ready and closes
after its last request. On SIGTERM or Ctrl-C uvicorn stops accepting, lets requests in
flight finish, and the collection is closed (flushed) last.
"""

# Searches worked on at once by default: anyio's own thread-pool size, as for every other
# endpoint. Here, not in `app`, so the CLI shows it without importing FastAPI.
DEFAULT_SEARCH_THREADS = 40
