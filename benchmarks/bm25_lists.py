"""BM25's top 100, with scores, for every Home Depot train and dev query: the lexical teacher
of `stage1_knobs_gpu.py --set distill` and its fused figures.

The GPU image has no Qdrant, so the lists are made here, with the project's exact BM25
(`Bm25Index`: Qdrant's tokenizer, k 0.3, IDF as the collection's modifier), and carried.
Queries are as typed, as training sees them. Runs in ~10 s on 2 cores.

    python benchmarks/bm25_lists.py OUT.npz [--data DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from bench_catalog import HOMEDEPOT

from shopsearch.training.data import (
    Bm25Index,
    load_judgments,
    load_product_texts,
    parse_grade_map,
)

DEPTH = 100


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--data", type=Path, default=HOMEDEPOT)
    args = parser.parse_args()
    texts = load_product_texts(args.data / "products.parquet", {"id": "product_uid"})
    ids = list(texts)
    index = Bm25Index([texts[i] for i in ids])
    arrays: dict[str, np.ndarray] = {"product_uid": np.array(ids, dtype="U")}
    for split in ("train", "dev"):
        queries = load_judgments(
            args.data / f"judgments-{split}.parquet", parse_grade_map(None)
        ).query_texts()
        top = np.full((len(queries), DEPTH), -1, dtype=np.int32)
        scores = np.zeros((len(queries), DEPTH), dtype=np.float32)
        for row, text in enumerate(queries.values()):
            all_scores = index.scores(text)
            ranked = index.best(all_scores, DEPTH)
            top[row, : len(ranked)] = ranked
            scores[row, : len(ranked)] = all_scores[ranked]
        arrays |= {
            f"{split}_qid": np.array(list(queries), dtype="U"),
            f"{split}_idx": top,
            f"{split}_score": scores,
        }
    np.savez_compressed(args.out, **arrays)
    print(
        f"{args.out}: BM25 top {DEPTH} for {len(arrays['train_qid'])} train and "
        f"{len(arrays['dev_qid'])} dev queries over {len(ids)} products"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
