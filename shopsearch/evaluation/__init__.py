"""Offline evaluation: is a model better, for which queries, and is the difference real?

judgments (graded query-product pairs) + runs (ranked results per query) -> per-query
metrics (metrics), grouped by strata (strata), compared pairwise (significance), rendered
as tables, JSON or a self-contained HTML report (report). The run format lives in `runs`,
shared with `shopsearch query --batch`. No torch, no CLI imports: a library in its own right.
"""
