"""The run format, read and written in one place.

A run file is JSONL, one line per query, results best first:
    {"query_id": "q1", "results": [{"product_id": "p9", "score": 0.83}, ...]}
`shopsearch query --batch` writes it, `shopsearch eval` reads it (and writes it for the
systems it searches itself), and so can any other tool: keeping reader, writer and the
search loop here means the two commands cannot drift apart.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from shopsearch.errors import InputFileError

if TYPE_CHECKING:
    from shopsearch.search.product_search import ProductSearch, Query, SearchOptions

# Queries per search_batch call: one encoder batch, and a progress tick, per chunk.
SEARCH_CHUNK = 64


@dataclass(frozen=True)
class Ranking:
    """One query's results, best first: product ids and their scores."""

    query_id: str
    product_ids: tuple[str, ...]
    scores: tuple[float, ...]

    def to_line(self) -> str:
        results = [
            {"product_id": p, "score": s}
            for p, s in zip(self.product_ids, self.scores, strict=True)
        ]
        return json.dumps({"query_id": self.query_id, "results": results})


Run = dict[str, Ranking]  # query_id -> ranking


def write_ranking(sink: IO[str], ranking: Ranking) -> None:
    sink.write(ranking.to_line() + "\n")


def write_run(path: Path, rankings: Iterable[Ranking]) -> None:
    with Path(path).open("w", encoding="utf-8") as sink:
        for ranking in rankings:
            write_ranking(sink, ranking)


def read_run(path: Path) -> Run:
    """Read a whole run file, validating every line; a bad one raises naming its line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"cannot read run file {path}: {exc}") from exc
    run: Run = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        ranking = parse_line(line, f"{path.name} line {number}")
        if ranking.query_id in run:
            raise InputFileError(
                f"{path.name} line {number}: query_id {ranking.query_id!r} appears twice"
            )
        run[ranking.query_id] = ranking
    return run


def parse_line(line: str, where: str) -> Ranking:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputFileError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(item, dict) or "query_id" not in item or "results" not in item:
        raise InputFileError(f'{where}: expected {{"query_id": ..., "results": [...]}}')
    query_id = item["query_id"]
    if not isinstance(query_id, str | int) or isinstance(query_id, bool):
        raise InputFileError(f"{where}: query_id must be a string or integer")
    results = item["results"]
    if not isinstance(results, list):
        raise InputFileError(f"{where}: results must be a list")
    ids: list[str] = []
    scores: list[float] = []
    for rank, result in enumerate(results, start=1):
        pid = result.get("product_id") if isinstance(result, dict) else None
        score = result.get("score") if isinstance(result, dict) else None
        if not isinstance(pid, str | int) or isinstance(pid, bool):
            raise InputFileError(f"{where}: result {rank} has no product_id")
        if not _is_number(score):
            raise InputFileError(f"{where}: result {rank} has no numeric score")
        ids.append(str(pid))
        scores.append(float(score))  # type: ignore[arg-type]
    return Ranking(str(query_id), tuple(ids), tuple(scores))


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


def search_rankings(
    search: ProductSearch,
    queries: Sequence[Query],
    options: SearchOptions,
    on_chunk: Callable[[int], None] | None = None,
    payloads: dict[str, dict[str, Any]] | None = None,
) -> Iterator[Ranking]:
    """Run `queries` through `search.search_batch` in chunks, yielding one Ranking per query
    in input order. This is the one search loop behind both
    `shopsearch query --batch` and `shopsearch eval --collection`. With `payloads`, every
    hit's payload is kept there by product id (eval reads categories from it)."""
    for start in range(0, len(queries), SEARCH_CHUNK):
        chunk = queries[start : start + SEARCH_CHUNK]
        for q, hits in zip(chunk, search.search_batch(chunk, options), strict=True):
            if payloads is not None:
                for h in hits:
                    payloads.setdefault(str(h.payload.get("product_id")), h.payload)
            yield Ranking(
                str(q.query_id),
                tuple(str(h.payload.get("product_id")) for h in hits),
                tuple(float(h.score) for h in hits),
            )
        if on_chunk is not None:
            on_chunk(len(chunk))
