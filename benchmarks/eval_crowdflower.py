"""Evaluate BM25, dense and hybrid search on CrowdFlower dev with `shopsearch eval`.

CrowdFlower stands for a shop the project has never seen: 9,913 products with
descriptions (product text = title + description), 124 dev queries, ratings 1..4 (gain
(r-1)/3, relevant r >= 3). It is evaluation only: nothing is fit, tuned or chosen on it.
The work is `eval_homedepot.py --shop crowdflower` (one script for both shops):

    python benchmarks/eval_crowdflower.py [--data ../shared/data] [--work DIR] [--hnsw]
        [--report report.html]
"""

from __future__ import annotations

import sys

from eval_homedepot import main

if __name__ == "__main__":
    main(["--shop", "crowdflower", *sys.argv[1:]])
