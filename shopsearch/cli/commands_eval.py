"""`shopsearch eval` (being built: issue 3)."""

from __future__ import annotations

from shopsearch.errors import UsageError


def evaluate() -> None:
    """Graded retrieval metrics, strata, significance and an HTML report."""
    raise UsageError("shopsearch eval is not implemented yet")
