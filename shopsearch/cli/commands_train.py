"""`shopsearch train` (being built: issue 4)."""

from __future__ import annotations

from shopsearch.errors import UsageError


def train() -> None:
    """Two-stage training: FN-masked contrastive, then ROAR."""
    raise UsageError("shopsearch train is not implemented yet")
