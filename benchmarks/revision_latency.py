"""Query latency of two revisions of shopsearch, measured in one run on one collection.

A refactoring must leave search speed as it was; timings taken in different runs on a shared
machine differ by more than the change being checked. So this script checks out the base
revision into a temporary git worktree and times both trees in turn, round by round, each in
its own process (`PYTHONPATH` selects the tree), on the Home Depot collection that
`benchmarks/query_latency.py` builds:

- warm: in-process encode + filtered hybrid search (int8, the default options, the filters
  of query_latency.py) over the 1,226 dev queries: p50 and p99 per round;
- cold: `python -m shopsearch query` as a whole process, median wall of `--runs`.

    python benchmarks/revision_latency.py --base REV [--rounds 3] [--runs 5] [--work DIR]

Both revisions must read the same collection format (the schema version is unchanged).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench_catalog import FILTERS, dev_queries, median_wall, table, write_catalog
from query_latency import COLLECTION, ensure_collection, ensure_model

from shopsearch.encoders import default_model_dir
from shopsearch.store.connection import Connection

REPO = Path(__file__).resolve().parents[1]

# Runs under either tree: the import paths moved between revisions.
WARM = """
import json, sys, time
try:
    from shopsearch.search.filters import parse_filters
    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions
    from shopsearch.store.connection import Connection
except ImportError:
    from shopsearch.qdrant.backend import Connection
    from shopsearch.qdrant.filters import parse_filters
    from shopsearch.qdrant.search import ProductSearch, Query, SearchOptions
from shopsearch.encoders.onnx_encoder import OnnxEncoder

data_dir, model_dir, queries_file, collection = sys.argv[1:5]
filters = json.loads(sys.argv[5])
queries = json.loads(open(queries_file).read())
backend = Connection(collection=collection, path=__import__("pathlib").Path(data_dir)).open()
search = ProductSearch(backend, OnnxEncoder.load(model_dir, precision="int8"))
conditions = parse_filters(filters)
options = SearchOptions(top_k=10)
for text in queries[:50]:
    search.search(Query(text, conditions), options)
times = []
for text in queries:
    t0 = time.perf_counter()
    search.search(Query(text, conditions), options)
    times.append(time.perf_counter() - t0)
backend.close()
print(json.dumps(times))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="The revision to compare with (git rev).")
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-bench"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    model_dir = ensure_model(default_model_dir())
    catalog = write_catalog(args.work / "homedepot-attrs.parquet")
    edge = Connection(collection=COLLECTION, path=args.work / "edge")
    ensure_collection(edge, catalog, model_dir)
    queries = dev_queries()
    queries_file = args.work / "dev-queries.json"
    queries_file.write_text(json.dumps(queries))

    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        git = ["git", "-C", str(REPO), "worktree"]
        subprocess.run([*git, "add", "--detach", "-q", str(base_tree), args.base], check=True)
        try:
            trees = {f"base {args.base}": base_tree, "this tree": REPO}
            warm: dict[str, list[float]] = {name: [] for name in trees}
            p99: dict[str, list[float]] = {name: [] for name in trees}
            cold: dict[str, list[float]] = {name: [] for name in trees}
            for round_ in range(args.rounds):
                # Each tree goes first in turn.
                order = list(trees.items())[round_ % 2 :] + list(trees.items())[: round_ % 2]
                for name, tree in order:
                    env = {**os.environ, "PYTHONPATH": str(tree)}
                    out = subprocess.run(
                        [
                            sys.executable,
                            "-c",
                            WARM,
                            str(args.work / "edge"),
                            str(model_dir),
                            str(queries_file),
                            COLLECTION,
                            json.dumps(FILTERS),
                        ],
                        env=env,
                        cwd=tree,
                        capture_output=True,
                        text=True,
                        check=True,
                    )
                    times = json.loads(out.stdout)
                    warm[name].append(statistics.median(times) * 1000)
                    p99[name].append(percentile(times, 0.99) * 1000)
                    filters = [a for f in FILTERS for a in ("--filter", f)]
                    command = [sys.executable, "-m", "shopsearch", "query", "cordless drill"]
                    cold[name].append(
                        median_wall(
                            [*command, "-c", COLLECTION, "--json", *filters],
                            args.runs,
                            {
                                "PYTHONPATH": str(tree),
                                "SHOPSEARCH_MODEL_DIR": str(model_dir),
                                "SHOPSEARCH_DATA_DIR": str(args.work / "edge"),
                            },
                            cwd=tree,
                        )
                    )
        finally:
            subprocess.run([*git, "remove", "--force", str(base_tree)], check=False)

    base, this = list(trees)
    rows = []
    for label, values in (("warm p50 (ms)", warm), ("warm p99 (ms)", p99), ("cold (s)", cold)):
        b, t = statistics.median(values[base]), statistics.median(values[this])
        spread = ", ".join(f"{v:.3f}" for v in values[this])
        rows.append([label, f"{b:.3f}", f"{t:.3f}", f"{t / b:.2f}x", spread])
    print(
        f"{len(queries)} dev queries, filters {FILTERS}, hybrid RRF, int8; "
        f"{args.rounds} rounds, medians over rounds; {os.cpu_count()} CPUs\n"
    )
    print(table(["what", base, "this tree", "this / base", "this tree, per round"], rows))


if __name__ == "__main__":
    main()
