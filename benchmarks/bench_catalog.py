"""Shared pieces of the performance benchmarks: a filterable catalog and measuring helpers.

The Home Depot data has titles only, and filtered search needs payload fields, so the
benchmark catalog gives each product deterministic synthetic attributes: brand (the title's
first word: Home Depot titles lead with the brand), price (log-normal, median ~$60), in_stock
(90% true) and color (the first colour word in the title, if any). `variants > 1` multiplies
the catalog for scale tests: variant v of a product gets another colour, a size and a pack
count, which also appear in its title.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DATA = Path(
    os.environ.get("SHOPSEARCH_BENCH_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
HOMEDEPOT = DATA / "homedepot"
COLORS = ["black", "white", "red", "blue", "green", "gray", "brown", "silver", "chrome", "bronze"]
SIZES = ["small", "medium", "large", "12 in.", "24 in.", "36 in.", "1/2 in.", "3/4 in."]
SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("price", pa.float64()),
        ("in_stock", pa.bool_()),
        ("color", pa.string()),
        ("size", pa.string()),
        ("parent_id", pa.string()),
    ]
)
# Filters of the latency benchmarks: selective enough to matter, loose enough to return 10.
FILTERS = ["price<=150", "in_stock=true"]


def homedepot_titles() -> tuple[list[str], list[str]]:
    table = pq.read_table(HOMEDEPOT / "products.parquet")
    ids = [str(x) for x in table.column("product_uid").to_pylist()]
    return ids, table.column("title").to_pylist()


def dev_queries() -> list[str]:
    dev = pq.read_table(HOMEDEPOT / "judgments-dev.parquet", columns=["query_id", "query"])
    seen: dict[str, str] = {}
    pairs = zip(dev.column("query_id").to_pylist(), dev.column("query").to_pylist(), strict=True)
    for qid, query in pairs:
        seen.setdefault(str(qid), query)
    return list(seen.values())


def catalog_batches(variants: int = 1, batch: int = 50_000) -> Iterator[pa.RecordBatch]:
    ids, titles = homedepot_titles()
    rng = np.random.default_rng(7)
    n = len(ids)
    for v in range(variants):
        prices = np.round(np.exp(rng.normal(4.1, 1.2, n)), 2)
        stock = rng.random(n) < 0.9
        rows: dict[str, list] = {name: [] for name in SCHEMA.names}
        for i, (pid, title) in enumerate(zip(ids, titles, strict=True)):
            words = title.split()
            color = next((w.lower() for w in words if w.lower() in COLORS), None)
            size = None
            if v:
                color = COLORS[(i + v) % len(COLORS)]
                size = SIZES[(i * 7 + v) % len(SIZES)]
                title = f"{title} - {color.title()}, {size}, pack of {1 + v % 4}"
            rows["id"].append(pid if v == 0 else f"{pid}-v{v}")
            rows["title"].append(title)
            rows["brand"].append(words[0] if words else None)
            rows["price"].append(float(prices[i]))
            rows["in_stock"].append(bool(stock[i]))
            rows["color"].append(color)
            rows["size"].append(size)
            rows["parent_id"].append(pid)
            if len(rows["id"]) >= batch:
                yield pa.RecordBatch.from_pydict(rows, schema=SCHEMA)
                rows = {name: [] for name in SCHEMA.names}
        if rows["id"]:
            yield pa.RecordBatch.from_pydict(rows, schema=SCHEMA)


def write_catalog(path: Path, variants: int = 1) -> Path:
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, SCHEMA) as writer:
        for batch in catalog_batches(variants):
            writer.write_batch(batch, row_group_size=10_000)
    tmp.replace(path)
    return path


def percentiles(samples_s: Sequence[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1000
    return {
        "p50": float(np.percentile(ms, 50)),
        "p90": float(np.percentile(ms, 90)),
        "p99": float(np.percentile(ms, 99)),
        "mean": float(ms.mean()),
    }


_PEAK_RSS_WRAPPER = (
    "import resource, sys\n"
    "from shopsearch.cli.app import main\n"
    "code = main(sys.argv[1:])\n"
    "peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
    "sys.stderr.write(f'\\nPEAK_RSS_KB={peak}\\n')\n"
    "sys.exit(code)\n"
)


def run_shopsearch(*args: str, env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run the CLI in a child process: (wall seconds, the child's peak RSS in MiB, stdout)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_WRAPPER, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"shopsearch {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    peak_kb = int(proc.stderr.rsplit("PEAK_RSS_KB=", 1)[1].split()[0])
    return wall, peak_kb / 1024, proc.stdout


def median_wall(
    cmd: Sequence[str], runs: int, env: dict[str, str] | None = None, cwd: Path | None = None
) -> float:
    """Median wall time of a whole command (cold start included), run in `cwd`."""
    # Installed packages have compiled bytecode; a sandbox that disables it would time the
    # compiler instead. Unset, an untimed first run writes the .pyc files the timed ones read.
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    walls = []
    for run in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**environ, **(env or {})}, cwd=cwd
        )
        if run:
            walls.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return statistics.median(walls)


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
