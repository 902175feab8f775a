"""A document a collection keeps beside its points that a shop changes while searches run
(merchandising rules, synonyms): read at the first search that needs it, and read again once
older than a given age, so a long-running service notices `rules set` or `synonyms set`
without a restart, and a one-shot command reads it once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Refreshed(Generic[T]):
    """`load()`'s value, kept until it is older than the `max_age` a caller asks for."""

    def __init__(self, load: Callable[[], T]) -> None:
        self._load = load
        self._value: T | None = None
        self._read_at = 0.0

    def get(self, max_age: float | None = None) -> T:
        now = time.monotonic()
        if self._value is None or (max_age is not None and now - self._read_at > max_age):
            self._value, self._read_at = self._load(), now
        return self._value
