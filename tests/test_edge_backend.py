"""Edge-only behaviour: reading a shard ahead into RAM, the lock against another
process, Edge's panics named, and the int8-quantised index rescoring to full precision."""

import itertools
import os

import numpy as np
import pytest

from shopsearch.errors import CollectionError
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.backend import ProductPoint, SearchMode, SearchRequest, SparseVec
from shopsearch.store.edge import EdgeBackend, _edge_call, _read_ahead
from shopsearch.store.schema import CollectionMeta, EncoderInfo, point_id


@pytest.fixture
def advised(monkeypatch) -> dict[str, list[tuple[int, int]]]:
    """Every posix_fadvise call from here on, passed through: path -> [(offset, length)]."""
    calls: dict[str, list[tuple[int, int]]] = {}
    advise = os.posix_fadvise

    def recording(fd: int, offset: int, length: int, advice: int) -> None:
        calls.setdefault(os.readlink(f"/proc/self/fd/{fd}"), []).append((offset, length))
        advise(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    return calls


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_edge_load_reads_ahead_what_edge_copies_into_ram(edge, encoder, advised):
    """Edge drops a shard's files from the page cache after loading them, so a load first asks
    the kernel to read them ahead; payloads and sparse vectors, which Edge reads lazily, are
    left alone."""
    edge.close()
    edge.load_index()
    assert any("vector_storage-dense" in path for path in advised)
    assert not [p for p in advised if "payload_storage" in p or "vector_storage-bm25" in p]
    hits = ProductSearch(edge, encoder).search(Query("black boots"), SearchOptions(top_k=3))
    assert len(hits) == 3


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_read_ahead_advises_every_byte_in_steps_the_kernel_honours(tmp_path, advised):
    """Linux reads at most the device's read-ahead window per WILLNEED advice, so one advice
    for a whole file left all but its first 8 MB on disk: the advice covers each file in
    steps no larger than the default window (128 KB), and skips lazily read storage."""
    segment = tmp_path / "segments" / "s1"
    vectors = segment / "vector_storage-dense" / "matrix.dat"
    payloads = segment / "payload_storage" / "page_0.dat"
    for path, size in ((vectors, 1_000_003), (payloads, 300_000)):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"\0" * size)
    _read_ahead(tmp_path)
    assert list(advised) == [str(vectors)]
    steps = advised[str(vectors)]
    assert all(0 < length <= 128 * 1024 for _, length in steps)
    assert steps[0][0] == 0
    assert all(a + la == b for (a, la), (b, _) in itertools.pairwise(steps))
    assert steps[-1][0] + steps[-1][1] >= vectors.stat().st_size


def test_collection_locked_by_another_process_is_a_clear_error(edge, encoder):
    import subprocess
    import sys

    edge.count()  # this process holds the shard open
    code = (
        "from pathlib import Path; from shopsearch.store.edge import EdgeBackend; "
        f"EdgeBackend(Path({str(edge.directory)!r})).count()"
    )
    env = {**os.environ, "SHOPSEARCH_LOCK_WAIT": "0"}  # fail at once, not after the wait
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert "open in another process" in proc.stderr


def test_an_edge_panic_is_named_and_ctrl_c_is_not(tmp_path):
    """Edge panics on some damaged files, and pyo3 raises the panic as its own
    `pyo3_runtime.PanicException`, a BaseException: it becomes a CollectionError naming the
    collection, what Edge said and the way out, while Ctrl-C and exit pass as they are."""
    panic = type("PanicException", (BaseException,), {"__module__": "pyo3_runtime"})

    def raising(exc: BaseException):
        def call(*_args):
            raise exc

        return call

    with pytest.raises(CollectionError, match=r"'shop'.*panicked.*out of bounds.*--recreate"):
        _edge_call(tmp_path / "shop", raising(panic("index out of bounds\nmore")))
    for passing in (KeyboardInterrupt(), SystemExit(1)):
        with pytest.raises(type(passing)):
            _edge_call(tmp_path / "shop", raising(passing))
    # A search, count or read of a damaged shard: its panic is named; a search's own error
    # (an Exception) is left as Edge raised it.
    backend = EdgeBackend(tmp_path / "shop")
    with pytest.raises(CollectionError, match=r"searching failed in collection 'shop'.*--recreate"):
        backend._edge_read("searching", raising(panic("index out of bounds")))
    for passing in (ValueError("bad filter"), KeyboardInterrupt()):
        with pytest.raises(type(passing)):
            backend._edge_read("searching", raising(passing))


def test_quantised_index_returns_full_precision_scores(tmp_path):
    """The default index walks int8 copies of the vectors; the rescoring every query asks for
    must hand back exact cosine scores, and the nearest neighbours, as exact search does.
    A reopened shard answers as before."""
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(40, 384))
    vectors = centres[rng.integers(0, 40, 8000)] + rng.normal(scale=0.6, size=(8000, 384))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    backend = EdgeBackend(tmp_path / "products")
    assert backend.index.int8_quantization
    encoder = EncoderInfo("random", 384, "f" * 64)
    backend.create(CollectionMeta(encoder=encoder, bm25={}, product_text_template="{title}"))
    empty = SparseVec([], [])
    # Finished as the block ends: 8,000 x 384 floats is above the full-scan threshold: HNSW + int8
    with backend.writing():
        for start in range(0, len(vectors), 1000):
            backend.upsert(
                [
                    ProductPoint(point_id(str(i)), vectors[i], empty, {"product_id": str(i)})
                    for i in range(start, start + 1000)
                ]
            )
    queries = vectors[:20] + rng.normal(scale=0.05, size=(20, 384)).astype(np.float32)
    requests = [
        SearchRequest(dense=q, sparse=None, mode=SearchMode.DENSE, exact=exact, with_payload=True)
        for exact in (False, True)
        for q in queries
    ]
    results = backend.search_batch(requests)
    approx, exact = results[:20], results[20:]
    backend.close()
    reopened = EdgeBackend(tmp_path / "products")
    assert reopened.search_batch(requests) == results
    reopened.close()
    for query, hits, truth in zip(queries, approx, exact, strict=True):
        ids = [int(h.payload["product_id"]) for h in hits]
        cosines = vectors[ids] @ (query / np.linalg.norm(query))
        np.testing.assert_allclose([h.score for h in hits], cosines, atol=1e-5)
        assert ids[0] == int(truth[0].payload["product_id"])
    pairs = zip(approx, exact, strict=True)
    overlap = np.mean([len({h.point_id for h in a} & {h.point_id for h in e}) for a, e in pairs])
    assert overlap >= 9.5, overlap
