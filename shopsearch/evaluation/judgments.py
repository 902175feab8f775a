"""Relevance judgments: which products are how relevant to which query.

A judgments file (parquet, CSV or JSONL) has one row per judged (query, product) pair:
`query_id`, `query` (the text), `product_id` (or `product_uid`), a grade, and optionally a
`count` (how often shoppers type the query). The grade is either numeric (`relevance`,
e.g. Home Depot's mean rating 1..3) or an ESCI label (Exact, Substitute, Complement,
Irrelevant; `E`/`S`/`C`/`I` or the full words). Column names can be mapped like ingest's
`--map`. The grade scheme turns grades into nDCG gains, a "relevant" test for Recall/MRR,
and an order for pairwise accuracy, so every metric reads grades the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from shopsearch.errors import InputFileError, UsageError
from shopsearch.ingest.readers import parse_column_map as parse_field_map

FIELDS = ("query_id", "query", "product_id", "grade", "count")
# Column names tried, in order, when a field is not mapped explicitly.
DEFAULT_COLUMNS: dict[str, tuple[str, ...]] = {
    "query_id": ("query_id", "qid"),
    "query": ("query", "query_text", "search_term"),
    "product_id": ("product_id", "product_uid", "doc_id"),
    "grade": ("relevance", "grade", "esci_label", "label", "rating"),
    "count": ("count", "frequency", "query_count"),
}
ESCI_LEVELS = ("I", "C", "S", "E")  # worst to best
ESCI_NAMES = {"exact": "E", "substitute": "S", "complement": "C", "irrelevant": "I"}
# Amazon's ESCI paper gains: an exact match is worth ten substitutes.
ESCI_GAINS = {"E": 1.0, "S": 0.1, "C": 0.01, "I": 0.0}


@dataclass(frozen=True)
class GradeScheme:
    """How grades become gains, relevance and an order.

    kind "esci": grades are labels E/S/C/I; gains from `gains` (default ESCI_GAINS);
    relevant = the label `relevant` or better; pairs compare label levels.
    kind "numeric": gain = (r - lo) / (hi - lo); relevant = r >= `relevant`
    (default lo + 0.75 (hi - lo), which is 2.5 on a 1..3 scale); pairs need |r1 - r2| >= gap.
    """

    kind: str
    lo: float = 0.0
    hi: float = 1.0
    gains: Mapping[str, float] = field(default_factory=lambda: dict(ESCI_GAINS))
    relevant: float | str | None = None
    pair_gap: float = 0.5

    def gain(self, grade: float | str) -> float:
        if self.kind == "esci":
            return float(self.gains[str(grade)])
        if self.hi == self.lo:
            return 1.0
        return (float(grade) - self.lo) / (self.hi - self.lo)

    def level(self, grade: float | str) -> float:
        """A number that orders grades: the label's rank for ESCI, the rating otherwise."""
        return float(ESCI_LEVELS.index(str(grade))) if self.kind == "esci" else float(grade)

    @property
    def relevant_level(self) -> float:
        if self.kind == "esci":
            return self.level(self.relevant or "S")
        if self.relevant is not None:
            return float(self.relevant)
        return self.lo + 0.75 * (self.hi - self.lo)

    def is_relevant(self, grade: float | str) -> bool:
        return self.level(grade) >= self.relevant_level

    def min_gap(self) -> float:
        """Smallest level difference that makes a pair: any for labels, `pair_gap` for ratings."""
        return 1.0 if self.kind == "esci" else self.pair_gap

    def summary(self) -> str:
        """One line for people: how grades are read."""
        if self.kind == "esci":
            gains = ", ".join(f"{k}={v:g}" for k, v in self.gains.items())
            return f"ESCI labels, gains {gains}; relevant: {self.relevant or 'S'} or better"
        return (
            f"ratings {self.lo:g}..{self.hi:g}, gain (r-{self.lo:g})/{self.hi - self.lo:g}; "
            f"relevant: r >= {self.relevant_level:g}; pairs: gap >= {self.pair_gap:g}"
        )

    def describe(self) -> dict[str, Any]:
        if self.kind == "esci":
            return {
                "kind": "esci",
                "gains": dict(self.gains),
                "relevant": f"{self.relevant or 'S'} or better",
            }
        return {
            "kind": "numeric",
            "gain": f"(r - {self.lo:g}) / ({self.hi:g} - {self.lo:g})",
            "relevant": f"r >= {self.relevant_level:g}",
            "pair_gap": self.pair_gap,
        }


@dataclass
class JudgedQuery:
    query_id: str
    text: str
    grades: dict[str, float | str]  # product_id -> grade
    count: float | None = None


@dataclass
class Judgments:
    queries: dict[str, JudgedQuery]
    scheme: GradeScheme
    source: str = ""

    @property
    def n_pairs(self) -> int:
        return sum(len(q.grades) for q in self.queries.values())

    @property
    def has_counts(self) -> bool:
        return any(q.count is not None for q in self.queries.values())


def parse_column_map(items: list[str]) -> dict[str, str]:
    """`["grade=esci_label", ...]` -> {"grade": "esci_label"}."""
    return parse_field_map(items, FIELDS)


def parse_gains(items: list[str]) -> dict[str, float]:
    """`["E=1", "S=0.2"]` -> ESCI gains with those overrides."""
    gains = dict(ESCI_GAINS)
    for item in items:
        name, sep, value = (x.strip() for x in item.partition("="))
        label = _esci_label(name)
        try:
            number = float(value)
        except ValueError:
            number = None
        if not sep or label is None or number is None:
            raise UsageError(f"bad --gain {item!r}: expected LABEL=NUMBER with LABEL in E, S, C, I")
        gains[label] = number
    return gains


def load_judgments(
    path: Path,
    column_map: Mapping[str, str] | None = None,
    *,
    gains: Mapping[str, float] | None = None,
    rating_range: tuple[float, float] | None = None,
    relevant: float | str | None = None,
    pair_gap: float = 0.5,
) -> Judgments:
    """Read a judgments file; the grade column's type decides the scheme (text: ESCI)."""
    path = Path(path)
    table = _read_table(path)
    columns = _resolve_columns(path, table.column_names, dict(column_map or {}))
    grade_col = columns["grade"]
    grade_type = table.schema.field(grade_col).type
    is_esci = pa.types.is_string(grade_type) or pa.types.is_large_string(grade_type)
    rows = table.select([c for c in columns.values() if c]).to_pylist()
    queries: dict[str, JudgedQuery] = {}
    ratings: list[float] = []
    for number, row in enumerate(rows, start=1):
        where = f"{path.name} row {number}"
        qid, text, pid = (row.get(columns[f]) for f in ("query_id", "query", "product_id"))
        if qid is None or pid is None or text is None:
            missing = [
                f for f, v in (("query_id", qid), ("query", text), ("product_id", pid)) if v is None
            ]
            raise InputFileError(f"{where}: missing {', '.join(missing)}")
        qid, pid = _id(qid), _id(pid)
        raw = row.get(grade_col)
        grade: float | str
        if is_esci:
            label = _esci_label(raw)
            if label is None:
                raise InputFileError(
                    f"{where}, column '{grade_col}': unknown grade label {raw!r} "
                    "(use E, S, C, I or Exact, Substitute, Complement, Irrelevant)"
                )
            grade = label
        else:
            if not isinstance(raw, int | float) or isinstance(raw, bool) or not math.isfinite(raw):
                raise InputFileError(
                    f"{where}, column '{grade_col}': grade {raw!r} is not a number"
                )
            grade = float(raw)
            ratings.append(grade)
        query = queries.get(qid)
        if query is None:
            query = queries[qid] = JudgedQuery(qid, str(text), {})
        elif str(text) != query.text:
            raise InputFileError(
                f"{where}: query_id {qid!r} has two texts ({query.text!r} and {str(text)!r})"
            )
        if pid in query.grades:
            raise InputFileError(f"{where}: product {pid!r} is judged twice for query {qid!r}")
        query.grades[pid] = grade
        if columns.get("count"):
            count = row.get(columns["count"])
            if count is not None:
                if not isinstance(count, int | float) or isinstance(count, bool):
                    raise InputFileError(
                        f"{where}, column '{columns['count']}': count {count!r} is not a number"
                    )
                query.count = float(count)
    if not queries:
        raise InputFileError(f"{path}: no judgments")
    if is_esci:
        if relevant is not None and _esci_label(relevant) is None:
            raise UsageError(f"bad --relevant {relevant!r}: use an ESCI label (E, S, C, I)")
        scheme = GradeScheme(
            "esci",
            gains=dict(gains or ESCI_GAINS),
            relevant=_esci_label(relevant) if relevant is not None else None,
        )
    else:
        lo, hi = rating_range or (min(ratings), max(ratings))
        if hi < lo:
            raise UsageError(f"bad rating range {lo:g}..{hi:g}")
        try:
            rel = None if relevant is None else float(relevant)
        except ValueError:
            raise UsageError(f"bad --relevant {relevant!r}: ratings need a number") from None
        scheme = GradeScheme("numeric", lo=lo, hi=hi, relevant=rel, pair_gap=pair_gap)
    return Judgments(queries, scheme, source=str(path))


def _esci_label(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    text = value.strip()
    if text.upper() in ESCI_LEVELS:
        return text.upper()
    return ESCI_NAMES.get(text.lower())


def _id(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise InputFileError(f"judgments file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            return pacsv.read_csv(path)
        if suffix in (".jsonl", ".json", ".ndjson"):
            return _read_jsonl(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"cannot read judgments {path}: {exc}") from exc
    raise InputFileError(f"judgments {path}: unknown format (use .parquet, .csv or .jsonl)")


def _read_jsonl(path: Path) -> pa.Table:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path.name} line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise InputFileError(f"{path.name} line {number}: expected a JSON object")
        rows.append(row)
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InputFileError(f"{path.name}: columns with mixed types ({exc})") from None


def _resolve_columns(
    path: Path, available: list[str], mapping: dict[str, str]
) -> dict[str, str | None]:
    columns: dict[str, str | None] = {}
    for name in FIELDS:
        if name in mapping:
            if mapping[name] not in available:
                raise InputFileError(
                    f"{path.name}: no column '{mapping[name]}' (mapped to {name}); "
                    f"columns: {', '.join(available)}"
                )
            columns[name] = mapping[name]
            continue
        found = next((c for c in DEFAULT_COLUMNS[name] if c in available), None)
        if found is None and name != "count":
            raise InputFileError(
                f"{path.name}: no {name} column (looked for {', '.join(DEFAULT_COLUMNS[name])}; "
                f"columns: {', '.join(available)}); map one with --map {name}=COLUMN"
            )
        columns[name] = found
    return columns
