"""--recreate replaces a collection only once the new one is built: an unreadable
catalog or an interrupted run leaves the old one, and a second writer is refused."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from search_helpers import _empty_backend, _jsonl, ingest

from shopsearch.errors import CatalogError, CollectionBusyError
from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
from shopsearch.store.documents import read_vocabulary
from shopsearch.store.edge import EdgeBackend


def _unreadable_parquet(path):
    """A parquet file whose footer opens but whose first data page is garbage."""
    rows = [{"id": f"b{i}", "title": f"Rake {i}"} for i in range(8)]
    pq.write_table(pa.Table.from_pylist(rows), path, compression="none")
    offset = pq.ParquetFile(path).metadata.row_group(0).column(1).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset : offset + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    return path


def _titles(path, titles):
    return _jsonl(path, [{"id": f"{path.stem}-{i}", "title": t} for i, t in enumerate(titles)])


TOOLS = ["Cordless drill", "Claw hammer", "Mitre saw"]


GARDEN = ["Garden hose", "Hose reel", "Cordless trimmer", "Lawn mower"]


@pytest.mark.parametrize("backend_name", ["edge", "server"])
def test_a_recreate_whose_catalog_cannot_be_read_leaves_the_old_collection(
    backend_name, encoder, tmp_path
):
    backend = _empty_backend(backend_name, tmp_path)
    ingest(_titles(tmp_path / "tools.jsonl", TOOLS), backend, encoder, tmp_path)
    tools_words = read_vocabulary(backend)
    with pytest.raises(CatalogError, match=r"broken\.parquet after row 0"):
        ingest(
            _unreadable_parquet(tmp_path / "broken.parquet"),
            backend,
            encoder,
            tmp_path,
            recreate=True,
        )
    assert backend.count() == 3 and read_vocabulary(backend) == tools_words
    report = ingest(
        _titles(tmp_path / "garden.jsonl", GARDEN), backend, encoder, tmp_path, recreate=True
    )
    assert report.created and report.points_in_collection == backend.count() == 4
    assert set(read_vocabulary(backend)) == {
        "garden",
        "hose",
        "reel",
        "cordless",
        "trimmer",
        "lawn",
        "mower",
    }
    backend.close()


def test_an_interrupted_edge_recreate_leaves_the_old_collection_and_no_leftovers(encoder, tmp_path):
    data = tmp_path / "data"
    backend = EdgeBackend(data / "products")
    ingest(_titles(tmp_path / "tools.jsonl", TOOLS), backend, encoder, tmp_path)
    garden = _titles(tmp_path / "garden.jsonl", GARDEN)

    def ctrl_c(rows: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # after the first batch went into the new shard
        ingest(garden, backend, encoder, tmp_path, recreate=True, on_rows=ctrl_c)
    assert sorted(os.listdir(data)) == [".products.lock", "products"]  # the lock file stays
    assert backend.count() == 3 and "drill" in read_vocabulary(backend)
    search = ProductSearch(backend, encoder)
    assert search.search(Query("drill"), SearchOptions(top_k=1))[0].payload["title"] == TOOLS[0]
    backend.close()
    # What a killed run leaves behind does not stop the next one.
    (data / ".products.recreating" / "shard").mkdir(parents=True)
    (data / ".products.recreating" / "shopsearch.json").write_text("{", encoding="utf-8")
    (data / ".products.replaced").mkdir()
    report = ingest(garden, backend, encoder, tmp_path, recreate=True)
    assert report.created and report.points_in_collection == 4
    assert sorted(os.listdir(data)) == [".products.lock", "products"]
    assert backend.count() == 4 and "drill" not in read_vocabulary(backend)
    search = ProductSearch(backend, encoder)
    assert search.search(Query("mower"), SearchOptions(top_k=1))[0].payload["title"] == GARDEN[3]
    backend.close()


def test_an_edge_ingest_fails_at_once_while_another_process_writes_the_collection(
    encoder, tmp_path
):
    """Two --recreate runs at once used to delete each other's build directory (the second
    one crashed the first with Edge's IO error); a plain ingest during a --recreate wrote
    into the collection about to be swapped out. The writer lock refuses the second ingest,
    and dies with the process that holds it."""
    import subprocess
    import sys

    data = tmp_path / "data"
    backend = EdgeBackend(data / "products")
    ingest(_titles(tmp_path / "tools.jsonl", TOOLS), backend, encoder, tmp_path)
    backend.close()
    code = (
        "import time\nfrom pathlib import Path\nfrom shopsearch.store.edge import EdgeBackend\n"
        f"with EdgeBackend(Path({str(backend.directory)!r})).writing():\n"
        "    print('locked', flush=True)\n    time.sleep(600)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        garden = _titles(tmp_path / "garden.jsonl", GARDEN)
        for recreate in (False, True):
            with pytest.raises(CollectionBusyError) as err:
                ingest(garden, backend, encoder, tmp_path, recreate=recreate)
            assert str(err.value) == (
                f"collection 'products' at {backend.directory} is being written by another "
                f"ingest (process {holder.pid}): wait for it to finish (lock file "
                f"{data / '.products.lock'})"
            )
        assert backend.count() == 3  # readers are not locked out
        backend.close()
        assert sorted(os.listdir(data)) == [".products.lock", "products"]  # no build started
    finally:
        holder.kill()  # SIGKILL: no clean-up runs in the holder
        holder.wait()
    report = ingest(garden, backend, encoder, tmp_path, recreate=True)
    assert report.points_in_collection == 4
    backend.close()
