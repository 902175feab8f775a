"""BM25's k and b for product titles: chosen on Home Depot train queries, checked on dev.

Textbook BM25 (k 1.2, b 0.75) was tuned on long documents. A product title rarely repeats a
word, and a long title is no less about its product, so other values may suit titles
better. This replays the Home Depot collection's points (the zero-shot dense vectors and
payloads of `eval_homedepot.py`'s collection) into fresh Edge shards whose BM25 vectors
and stored settings differ only in k and b. Each is searched through `ProductSearch`, the
query path of `shopsearch query` and `shopsearch eval`, and scored with the evaluation
protocol: full-corpus nDCG@10 and Recall@100 (relevance >= 2.5).

- On the 8,191 train queries: BM25 alone over the grid; the best nDCG@10 is the choice.
- On the 1,226 dev queries, the textbook setting, the choice and the project's default:
  BM25 alone, and hybrid (RRF, the CLI default) with the zero-shot model, exact dense.
  Paired tests are against the textbook setting.

    python benchmarks/bm25_params.py [--work DIR] [--data DIR] [--model-dir DIR]

--work is shared with eval_homedepot.py (the collection is built there once, ~2 min). The
grid takes ~10 min on 2 CPU cores. Results: RESULTS.md section 7.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from eval_homedepot import COLLECTION, DEFAULT_DATA, ensure_collection
from index_build import build, read_points

from shopsearch.encoders import OnnxEncoder
from shopsearch.evaluation.evaluate import ALL, Evaluation, System, evaluate
from shopsearch.evaluation.judgments import Judgments, load_judgments
from shopsearch.evaluation.systems import search_system
from shopsearch.search.product_search import ProductSearch, SearchOptions
from shopsearch.store.backend import IndexSettings, ProductPoint, SearchMode, SparseVec
from shopsearch.store.bm25 import Bm25Settings
from shopsearch.store.connection import Connection
from shopsearch.store.documents import read_meta
from shopsearch.store.edge import EdgeBackend
from shopsearch.store.schema import CollectionMeta
from shopsearch.training.data import load_product_texts

TEXTBOOK = (1.2, 0.75)
GRID = [(k, b) for k in (0.3, 0.5, 0.9, 1.2, 1.5) for b in (0.3, 0.45, 0.6, 0.75, 0.9)]
METRICS = ("nDCG@10", "Recall@100")


class Shards:
    """One Edge shard per BM25 setting: the same points, BM25 re-embedded."""

    def __init__(self, meta: CollectionMeta, points: list[ProductPoint], texts: list[str]):
        self.meta, self.points, self.texts = meta, points, texts
        self.root = Path(tempfile.mkdtemp(prefix="shopsearch-bm25-"))

    def open(self, k: float, b: float, encoder: OnnxEncoder) -> ProductSearch:
        directory = self.root / f"k{k}-b{b}"
        if directory.exists():  # built for the train grid, searched again on dev
            return ProductSearch(EdgeBackend(directory), encoder)
        settings = Bm25Settings(k=k, b=b, avg_len=float(self.meta.bm25["avg_len"]))
        model = settings.model()
        points = []
        for point, text in zip(self.points, self.texts, strict=True):
            sparse = model.embed_document(text)
            points.append(replace(point, sparse=SparseVec(sparse.indices, sparse.values)))
        meta = replace(self.meta, bm25=settings.to_dict())
        built = build(meta, points, directory, (IndexSettings(), None))
        return ProductSearch(built["backend"], encoder)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def run(
    shards: Shards,
    encoder: OnnxEncoder,
    judgments: Judgments,
    settings: list[tuple[float, float]],
    mode: SearchMode,
) -> list[System]:
    systems: list[System] = []
    for k, b in settings:
        started = time.perf_counter()
        search = shards.open(k, b, encoder)
        options = SearchOptions(mode=mode, top_k=100, exact=True)
        systems.append(search_system(search, judgments, options, f"k {k}, b {b}", rerank=False))
        search.backend.close()
        print(f"  {mode.value} k {k} b {b}: {time.perf_counter() - started:.0f} s", flush=True)
    return systems


def table(ev: Evaluation, title: str) -> None:
    print(f"\n{title}\n")
    print("| k, b | nDCG@10 | Δ, p | Recall@100 | Δ, p |")
    print("|---|---|---|---|---|")
    for system in ev.systems:
        cells = []
        for metric in METRICS:
            mean, _ = ev.mean(system, "full", metric)
            cells.append(f"{mean:.4f}")
            comparison = ev.comparisons["full"].get(system.name)
            if comparison:
                c = comparison[ALL][metric]
                cells.append(f"{c.delta:+.4f}, {c.p_value:.2g}")
            else:
                cells.append("(baseline)")
        print(f"| {system.name} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work", type=Path, default=Path("/tmp/shopsearch-homedepot"))
    parser.add_argument("--model-dir", type=Path, default=None)
    args = parser.parse_args()
    hd = args.data / "homedepot"
    where = ensure_collection(hd, args.work, args.model_dir)
    model_dir = Path(where[where.index("--model") + 1])
    edge_dir = Connection(collection=COLLECTION, path=args.work / "data").edge_dir()
    meta = read_meta(EdgeBackend(edge_dir))
    assert meta is not None
    points = read_points(edge_dir)
    by_id = load_product_texts(hd / "products.parquet", {"id": "product_uid"})
    texts = [by_id[str(p.payload["product_id"])] for p in points]
    encoder = OnnxEncoder.load(model_dir, precision="int8")
    shards = Shards(meta, points, texts)
    try:
        train = load_judgments(hd / "judgments-train.parquet")
        grid = [TEXTBOOK] + [s for s in GRID if s != TEXTBOOK]
        # One system an evaluation: paired tests of 25 systems over 8,191 queries take long,
        # and the grid is for choosing, not for testing.
        scored = [evaluate(train, [s]) for s in run(shards, encoder, train, grid, SearchMode.BM25)]
        print(f"\nBM25 alone, {len(train.queries)} train queries:\n")
        print("| k, b | nDCG@10 | Recall@100 |\n|---|---|---|")
        for ev in scored:
            means = [f"{ev.mean(ev.baseline, 'full', m)[0]:.4f}" for m in METRICS]
            print(f"| {ev.baseline.name} | " + " | ".join(means) + " |")
        best = max(scored, key=lambda ev: ev.mean(ev.baseline, "full", "nDCG@10")[0])
        chosen = grid[scored.index(best)]
        default = (Bm25Settings().k, Bm25Settings().b)
        print(f"\nbest on train: k, b = {chosen}; the default: {default}")
        dev = load_judgments(hd / "judgments-dev.parquet")
        checked = list(dict.fromkeys([TEXTBOOK, chosen, default]))
        for mode in (SearchMode.BM25, SearchMode.HYBRID):
            ev = evaluate(dev, run(shards, encoder, dev, checked, mode))
            table(ev, f"{mode.value}, {len(dev.queries)} dev queries")
    finally:
        shards.close()


if __name__ == "__main__":
    main()
