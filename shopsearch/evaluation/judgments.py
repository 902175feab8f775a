"""Relevance judgments: which products are how relevant to which query.

A judgments file (parquet, CSV or JSONL) has one row per judged (query, product) pair:
`query_id`, `query` (the text), `product_id` (or `product_uid`), a grade, and optionally a
`count` (how often shoppers type the query). The grade is either numeric (`relevance`,
e.g. Home Depot's mean rating 1..3, CrowdFlower's median rating 1..4) or an ESCI label
(Exact, Substitute, Complement, Irrelevant; `E`/`S`/`C`/`I` or the full words). Column names
can be mapped like ingest's `--map`. The grade scheme turns grades into nDCG gains, a
"relevant" test for Recall/MRR, and an order for pairwise accuracy, so every metric reads
grades the same way.

Ratings live on a scale LO..HI that is given (`--grades 1..4`) or detected: the integer
scale the ratings span, floor(lowest)..ceil(highest). Home Depot's means of 1..3 ratings
(1, 1.33, ..., 3) give 1..3; CrowdFlower's medians (1, 1.5, ..., 4) give 1..4. A sample that
never reaches a scale's ends (no rating of 4 among a few queries) is detected too narrow,
which is why the scale, and whether it was detected, is printed with every result.
"""

from __future__ import annotations

import codecs
import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import combinations, pairwise
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
    kind "numeric": gain = (r - lo) / (hi - lo); relevant = r >= `relevant`, by default
    three quarters up the scale rounded down to a half grade (`default_relevant`): 2.5 on
    1..3 and 3 on 1..4, the Home Depot and CrowdFlower protocols; pairs need
    |r1 - r2| >= gap. `detected`: the scale came from the ratings, not from the user.
    """

    kind: str
    lo: float = 0.0
    hi: float = 1.0
    gains: Mapping[str, float] = field(default_factory=lambda: dict(ESCI_GAINS))
    relevant: float | str | None = None
    pair_gap: float = 0.5
    detected: bool = False
    whole_grades: tuple[float, ...] = ()

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
        return default_relevant(self.lo, self.hi)

    def is_relevant(self, grade: float | str) -> bool:
        return self.level(grade) >= self.relevant_level

    def min_gap(self) -> float:
        """Smallest level difference that makes a pair: any for labels, `pair_gap` for ratings."""
        return 1.0 if self.kind == "esci" else self.pair_gap

    def grade_pairs(self) -> list[tuple[str, str]]:
        """(better, worse) grade pairs whose order accuracy is reported apart: every pair of
        ESCI labels (`esci_pairs`); on a scale of whole grades, the consecutive ones best
        first and the scale's ends (4>3, 3>2, 2>1, 4>1 on 1..4); none for averaged ratings,
        where "a grade" is not a class of products."""
        if self.kind == "esci":
            return esci_pairs()
        grades = [f"{g:g}" for g in self.whole_grades]
        pairs = list(pairwise(grades))
        if len(grades) > 2:
            pairs.append((grades[0], grades[-1]))
        return pairs

    def distant_pairs(self) -> set[str]:
        """The grade pairs that are not neighbours (E>C, S>I, E>I; 4>1 on 1..4), as metric
        names: charts that show one row per pair leave them out, the neighbours say more."""
        grades = len(ESCI_LEVELS) if self.kind == "esci" else len(self.whole_grades)
        return {f"OrderAcc[{a}>{b}]" for a, b in self.grade_pairs()[grades - 1 :]}

    def summary(self) -> str:
        """One line for people: how grades are read."""
        if self.kind == "esci":
            gains = ", ".join(f"{k}={v:g}" for k, v in self.gains.items())
            return f"ESCI labels, gains {gains}; relevant: {self.relevant or 'S'} or better"
        scale = f"ratings {self.lo:g}..{self.hi:g}"
        if self.detected:
            scale += " (detected from the ratings; --grades sets it)"
        return (
            f"{scale}, gain (r-{self.lo:g})/{self.hi - self.lo:g}; "
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
            "scale": f"{self.lo:g}..{self.hi:g}",
            "scale_from": "ratings" if self.detected else "given",
            "gain": f"(r - {self.lo:g}) / ({self.hi:g} - {self.lo:g})",
            "relevant": f"r >= {self.relevant_level:g}",
            "pair_gap": self.pair_gap,
            "grade_pairs": [f"{a}>{b}" for a, b in self.grade_pairs()],
        }


def esci_pairs() -> list[tuple[str, str]]:
    """(better, worse) label pairs, consecutive ones first: E>S, S>C, C>I, E>C, S>I, E>I."""
    best_first = ESCI_LEVELS[::-1]
    return sorted(
        combinations(best_first, 2),
        key=lambda p: (best_first.index(p[1]) - best_first.index(p[0]), best_first.index(p[0])),
    )


def default_relevant(lo: float, hi: float) -> float:
    """The default "relevant" threshold of a LO..HI scale: three quarters up it, rounded
    down to a half grade. One rule gives both shops' protocols (2.5 on Home Depot's 1..3,
    3 on CrowdFlower's 1..4) and the usual ones elsewhere (2 on TREC's 0..3, 4 on 1..5)."""
    return math.floor((lo + 0.75 * (hi - lo)) * 2 + 1e-9) / 2


def detect_scale(ratings: Iterable[float]) -> tuple[float, float]:
    """The integer scale ratings span: floor(lowest)..ceil(highest). Means and medians of
    integer ratings (Home Depot's 2.33, CrowdFlower's 3.5) fall inside their raters' scale,
    so rounding outwards recovers it whenever the data reach both ends."""
    values = list(ratings)
    return float(math.floor(min(values))), float(math.ceil(max(values)))


def parse_scale(text: str | None) -> tuple[float, float] | None:
    """`--grades 1..4` (or `1:4`, the `--rating-range` form) -> (1.0, 4.0)."""
    if text is None:
        return None
    lo, sep, hi = text.partition("..")
    if not sep:
        lo, sep, hi = text.partition(":")
    try:
        scale = float(lo), float(hi)
    except ValueError:
        raise UsageError(f"bad --grades {text!r}: expected LO..HI, e.g. 1..4") from None
    if not (sep and all(map(math.isfinite, scale)) and scale[0] < scale[1]):
        raise UsageError(f"bad --grades {text!r}: expected LO..HI with LO < HI, e.g. 1..4")
    return scale


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
    """Read a judgments file. The grade column's values decide the scheme (mostly ESCI
    labels: ESCI; mostly numbers: ratings), not its type: a CSV column is text either way,
    and a column that holds one bad value among ratings is ratings with that value blamed.
    `rating_range`: the ratings' scale (`--grades`); None detects it (`detect_scale`)."""
    path = Path(path)
    names, rows = _read_rows(path)
    columns = _resolve_columns(path, names, dict(column_map or {}))
    grade_col = str(columns["grade"])  # a required field: always found
    is_esci = _holds_labels(row.get(grade_col) for _, row in rows)
    queries: dict[str, JudgedQuery] = {}
    ratings: list[float] = []
    for where, row in rows:
        qid, text, pid = (row.get(columns[f] or "") for f in ("query_id", "query", "product_id"))
        missing = [
            f for f, v in (("query_id", qid), ("query", text), ("product_id", pid)) if _blank(v)
        ]
        if missing:
            raise InputFileError(f"{where}: missing {', '.join(missing)}")
        qid, pid = _id(qid), _id(pid)
        raw = row.get(grade_col)
        grade: float | str
        if _blank(raw):
            raise InputFileError(f"{where}, column '{grade_col}': no grade")
        if is_esci:
            label = _esci_label(raw)
            if label is None:
                raise InputFileError(
                    f"{where}, column '{grade_col}': unknown grade label {raw!r} "
                    "(use E, S, C, I or Exact, Substitute, Complement, Irrelevant)"
                )
            grade = label
        else:
            number = _number(raw)
            if number is None:
                raise InputFileError(
                    f"{where}, column '{grade_col}': grade {raw!r} is not a number"
                )
            grade = number
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
        count_col = columns.get("count")
        if count_col and not _blank(row.get(count_col)):
            count = _number(row.get(count_col))
            if count is None:
                raise InputFileError(
                    f"{where}, column '{count_col}': count {row.get(count_col)!r} is not a number"
                )
            query.count = count
    if not queries:
        raise InputFileError(f"{path}: no judgments")
    if is_esci:
        if rating_range is not None:
            raise UsageError(f"--grades sets a rating scale: {path.name} holds ESCI labels")
        if relevant is not None and _esci_label(relevant) is None:
            raise UsageError(f"bad --relevant {relevant!r}: use an ESCI label (E, S, C, I)")
        scheme = GradeScheme(
            "esci",
            gains=dict(gains or ESCI_GAINS),
            relevant=_esci_label(relevant) if relevant is not None else None,
        )
    else:
        lo, hi = rating_range or detect_scale(ratings)
        if hi < lo:
            raise UsageError(f"bad rating range {lo:g}..{hi:g}")
        outside = [r for r in ratings if not lo <= r <= hi]
        if outside:
            raise InputFileError(
                f"{path.name}: {len(outside)} rating(s) outside --grades {lo:g}..{hi:g} "
                f"(e.g. {outside[0]:g}); give the judgments' scale"
            )
        try:
            rel = None if relevant is None else float(relevant)
        except ValueError:
            raise UsageError(f"bad --relevant {relevant!r}: ratings need a number") from None
        scheme = GradeScheme(
            "numeric",
            lo=lo,
            hi=hi,
            relevant=rel,
            pair_gap=pair_gap,
            detected=rating_range is None,
            whole_grades=whole_grades_of(ratings, lo, hi),
        )
    return Judgments(queries, scheme, source=str(path))


# Share of ratings that must be whole numbers for a scale's grades to be classes of products
# (CrowdFlower's medians of 1..4: 99.7% whole; Home Depot's means of 1..3: 44%).
WHOLE_GRADES_SHARE = 0.9


def whole_grades_of(ratings: Sequence[float], lo: float, hi: float) -> tuple[float, ...]:
    """LO..HI's whole grades, best first, when at least WHOLE_GRADES_SHARE of `ratings` are
    whole numbers and the scale has 2 to 11 of them; otherwise none."""
    if not ratings or lo != int(lo) or hi != int(hi) or not 1 <= hi - lo <= 10:
        return ()
    whole = sum(float(r).is_integer() for r in ratings)
    if whole < WHOLE_GRADES_SHARE * len(ratings):
        return ()
    return tuple(float(g) for g in range(int(hi), int(lo) - 1, -1))


def _holds_labels(grades: Iterable[Any]) -> bool:
    """Whether a grade column holds ESCI labels rather than ratings: whichever most of its
    values are. Deciding by the first value, or by the column's type, blames the wrong row
    when that one is the odd value out."""
    labels = numbers = 0
    for grade in grades:
        if _esci_label(grade) is not None:
            labels += 1
        elif _number(grade) is not None:
            numbers += 1
    return labels > numbers


def _number(value: Any) -> float | None:
    """A finite number, from a number or from text that is one (a CSV cell); else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float | Decimal):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


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


Rows = list[tuple[str, dict[str, Any]]]  # (where, for messages: "j.csv row 3"; the row)


def _read_rows(path: Path) -> tuple[list[str], Rows]:
    """The file's column names and its rows, each with where it is in the file."""
    if not path.is_file():
        raise InputFileError(f"judgments file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)  # dictionary columns read as their values
            numbered = enumerate(table.to_pylist(), start=1)
            return table.column_names, [(f"{path.name} row {n}", row) for n, row in numbered]
        if suffix == ".csv":
            return _read_csv(path)
        if suffix in (".jsonl", ".json", ".ndjson"):
            return _read_jsonl(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputFileError(f"cannot read judgments {path}: {exc}") from exc
    raise InputFileError(f"judgments {path}: unknown format (use .parquet, .csv or .jsonl)")


def _read_csv(path: Path) -> tuple[list[str], Rows]:
    """Every cell as text, as the catalog reader reads it: a product id "00123" stays
    "00123", and a grade column does not change type because one cell is bad. A cell that
    is not UTF-8 is named by its row."""
    with path.open(encoding="utf-8-sig", errors="replace", newline="") as fh:
        names = next(csv.reader(fh), [])
    table = pacsv.read_csv(
        path,
        convert_options=pacsv.ConvertOptions(
            column_types={name: pa.binary() for name in names}, strings_can_be_null=False
        ),
    )
    rows: Rows = []
    for number, raw in enumerate(table.to_pylist(), start=1):
        where = f"{path.name} row {number}"
        row: dict[str, Any] = {}
        for column, cell in raw.items():
            try:
                row[column] = cell.decode("utf-8") if isinstance(cell, bytes) else cell
            except UnicodeDecodeError:
                raise InputFileError(f"{where}, column '{column}': not valid UTF-8") from None
        rows.append((where, row))
    return table.column_names, rows


def _read_jsonl(path: Path) -> tuple[list[str], Rows]:
    names: dict[str, None] = {}  # in the order they first appear
    rows: Rows = []
    with path.open("rb") as fh:
        for number, data in enumerate(fh, start=1):
            where = f"{path.name} line {number}"
            if number == 1:
                data = data.removeprefix(codecs.BOM_UTF8)
            try:
                line = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputFileError(f"{where}: not valid UTF-8 at byte {exc.start + 1}") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line, object_pairs_hook=_unique_keys)
            except _RepeatedKey as exc:
                raise InputFileError(f"{where}: key {exc.key!r} appears twice") from None
            except json.JSONDecodeError as exc:
                raise InputFileError(f"{where}: invalid JSON ({exc.msg})") from None
            except ValueError as exc:  # a number over Python's 4300-digit limit
                raise InputFileError(f"{where}: invalid JSON ({exc})") from None
            except RecursionError:
                raise InputFileError(f"{where}: invalid JSON (nested too deeply)") from None
            if not isinstance(row, dict):
                raise InputFileError(f"{where}: expected a JSON object")
            names.update(dict.fromkeys(row))
            rows.append((where, row))
    return list(names), rows


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object; one that gives a key twice is refused, as `json` would keep the last
    value without a word."""
    mapping: dict[str, Any] = {}
    for key, value in pairs:
        if key in mapping:
            raise _RepeatedKey(key)
        mapping[key] = value
    return mapping


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
    for name, column in columns.items():
        if column is not None and available.count(column) > 1:
            raise InputFileError(
                f"{path.name}: {available.count(column)} columns named '{column}' (the {name}): "
                "which one to read is ambiguous; rename or drop all but one"
            )
    return columns
