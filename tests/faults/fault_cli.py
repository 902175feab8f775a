"""Fuzzed command lines, for the fault suite (tests/faults/) and its soak mode
(benchmarks/faults.py): queries, filters, flags, `query --batch` files and `eval` judgment
files drawn from a seeded `random.Random`, run through the CLI's `main` in this process.

Whatever the input, the CLI answers with an exit code and, when it is not 0, a message (ours,
`error: ...`, or click's `Error: ...` for a flag it cannot parse): 2 for bad input, 1 for a
fault. An exception out of `main` is a traceback a user would see.
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATEGORIES = ("query", "filter", "flags", "batch", "judgments")
# Exit codes a category's inputs may get: they are all input, against a sound collection,
# except `flags`, which also names catalogs, collections and servers that are not there.
ALLOWED_CODES = {
    "query": {0, 2},
    "filter": {0, 2},
    "flags": {0, 1, 2},
    "batch": {0, 2},
    "judgments": {0, 2},
}

_ODD_TEXT = [
    "",
    " ",
    "\t\n",
    "shoes",
    "women's casual shoes",
    "Ωmega ñandú 中文 😀",
    "\u202eevil\u202c",
    "e\u0301\u0301\u0301",
    "a" * 5_000,
    "shoes " * 400,
    "'; DROP TABLE products; --",
    "price<=100",
    "brand=x",
    "\\",
    '"',
    "\x00",
    "\x1b[31mred\x1b[0m",
    "shoes \udcff",  # an argument of invalid UTF-8, as Python hands it over
    "\ud800",
    "-k",
    "--json",
    "{title}",
    "%s%n%x",
    "nan",
    "1e309",
]
_FIELDS = [
    "brand", "price", "color", "size", "in_stock", "category", "currency", "parent_id",
    "product_id", "title", "description", "attributes.Size", "attributes.'Size (UK)'",
    'attributes."a b"', "attributes.", "attributes.\\", "attributes.a.b", "attrs.x", "",
    "price.x", "Brand", "rating", "url",
]  # fmt: skip
_OPS = ["=", "!=", "<", "<=", ">", ">=", " in ", " not in ", "==", "=<", "~", "", " = ", "<>"]
_VALUES = [
    "DeWalt", "", "x", "'quoted'", '"dq"', "'unclosed", "(a,b)", "(a, 'b, c')", "(", ")",
    "()", "(,)", "100", "-1", "1e309", "nan", "inf", "0x10", "1_000", "true", "false", "TRUE",
    "yes", "null", "\\", "a\\,b", "中文", "\x00", "\u200b", "(a,(b))", "[1,2]",
]  # fmt: skip


@dataclass
class Outcome:
    argv: list[str]
    code: int | None
    stdout: str
    stderr: str
    error: str | None = None  # the traceback, when an exception left `main`


@dataclass
class Tally:
    """Cases per category, and the failures: tracebacks, unexplained exit codes."""

    tried: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def add(self, category: str, outcome: Outcome) -> None:
        self.tried[category] = self.tried.get(category, 0) + 1
        problem = judge(category, outcome)
        if problem:
            self.failures.append(f"[{category}] {problem}\n  argv: {outcome.argv!r}")


def run_main(argv: list[str]) -> Outcome:
    """`shopsearch ARGV` in this process, its output captured."""
    from shopsearch.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code: int | None = None
    error = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except BaseException:
            error = traceback.format_exc()
    return Outcome(list(argv), code, out.getvalue(), err.getvalue(), error)


def judge(category: str, outcome: Outcome) -> str | None:
    """Why `outcome` is a failure, or None."""
    if outcome.error:
        return f"an exception left main:\n{outcome.error[-2000:]}"
    if "Traceback" in outcome.stderr:
        return f"a traceback on stderr:\n{outcome.stderr[-2000:]}"
    if outcome.code not in ALLOWED_CODES[category]:
        return f"exit {outcome.code}: {outcome.stderr.strip()[-500:]}"
    if outcome.code and not any(
        line.startswith(("error: ", "Error: ")) for line in outcome.stderr.splitlines()
    ):
        return f"exit {outcome.code} without a message: {outcome.stderr[-500:]!r}"
    return None


# -- generators --------------------------------------------------------------------------


@dataclass
class Context:
    """Where the fuzzed commands point: a sound collection, a tiny catalog, files to write."""

    data: Path  # holds the collection `collection`
    collection: str
    catalog: Path  # a small valid catalog
    run_file: Path  # a valid run file for `eval --run`
    work: Path  # scratch space
    closed_port: int
    counter: int = 0

    def scratch(self, suffix: str) -> Path:
        self.counter += 1
        return self.work / f"case{self.counter}{suffix}"

    def where(self) -> list[str]:
        return ["-c", self.collection, "--path", str(self.data)]


def odd_text(rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(_ODD_TEXT)
    alphabet = [chr(rng.randrange(0x20, 0x3000)) for _ in range(12)] + [" ", ",", "'", '"']
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))


def odd_filter(rng: random.Random) -> str:
    if rng.random() < 0.15:
        return odd_text(rng)
    expression = rng.choice(_FIELDS) + rng.choice(_OPS) + rng.choice(_VALUES)
    if rng.random() < 0.3:  # one character dropped, doubled or swapped in
        i = rng.randrange(len(expression) + 1)
        expression = (
            expression[:i]
            + rng.choice(["", "(", ")", ",", "'", "\\", "=", " "])
            + (expression[i + 1 :] if rng.random() < 0.5 else expression[i:])
        )
    return expression


def query_case(rng: random.Random, ctx: Context) -> list[str]:
    mode = rng.choice(["bm25", "bm25", "bm25", "hybrid", "dense"])
    argv = ["query", odd_text(rng), "--mode", mode, *ctx.where()]
    if rng.random() < 0.5:
        argv.append("--json")
    if rng.random() < 0.3:
        argv += ["--top-k", str(rng.choice([1, 3, 10, 10_000]))]
    if rng.random() < 0.2:
        argv.append(rng.choice(["--no-fix-typos", "--all-variants", "--exact"]))
    return argv


def filter_case(rng: random.Random, ctx: Context) -> list[str]:
    argv = ["query", "shoes", "--mode", "bm25", *ctx.where()]
    for _ in range(rng.randrange(1, 4)):
        argv += [rng.choice(["--filter", "-f"]), odd_filter(rng)]
    if rng.random() < 0.3:
        argv = ["facets", rng.choice(["brand", "color", "price"]), *argv[4:]]
    if rng.random() < 0.5:
        argv.append("--json")
    return argv


_NUMBERS = ["0", "-1", "1", "2", "7", "100", "10001", "99999999999999999999", "abc", "1e3",
            "nan", "inf", "-inf", "0.5", "", " 3", "1_0"]  # fmt: skip


def flags_case(rng: random.Random, ctx: Context) -> list[str]:
    command = rng.choice(["query", "query", "facets", "info", "ingest", "ingest", "eval"])
    where = ctx.where()
    if rng.random() < 0.2:
        where = rng.choice(
            [
                [
                    "-c",
                    rng.choice(["..", "a/b", "", ".", "-x", "x" * 300, "nope", "CON", "a\x00b"]),
                ],
                ["--path", rng.choice([str(ctx.catalog), str(ctx.work / "missing"), "/proc"])],
                [
                    "--qdrant-url",
                    rng.choice(
                        [
                            "http://",
                            "ftp://x",
                            "localhost",
                            f"http://127.0.0.1:{ctx.closed_port}",
                            "http://[::1",
                        ]
                    ),
                ],
            ]
        ) + (["--path", str(ctx.data)] if rng.random() < 0.5 else [])
    if command == "query":
        argv = ["query", "shoes", *where, "--mode", rng.choice(["bm25", "BM25", "x", "hybrid"])]
        options = {
            "--top-k": _NUMBERS, "--offset": _NUMBERS, "--candidates": _NUMBERS,
            "--bm25-weight": _NUMBERS, "--fusion": ["rrf", "dbsf", "learned", "x", ""],
            "--facet": ["brand", "price", "nope", "", "attributes"],
            "--facet-limit": _NUMBERS, "--precision": ["int8", "fp32", "fp16", ""],
            "--threads": _NUMBERS, "--batch": [str(ctx.work / "none.jsonl"), str(ctx.work)],
            "--out": [str(ctx.work / "o.jsonl"), str(ctx.work)],
        }  # fmt: skip
    elif command == "facets":
        argv = ["facets", *rng.sample(["brand", "color", "price", "nope", "", "in_stock"], 2)]
        argv += where
        options = {"--limit": _NUMBERS, "-n": _NUMBERS, "--filter": [odd_filter(rng)]}
    elif command == "info":
        argv = ["info", *where]
        options = {"--json": [None], "--verbose": [None]}
    elif command == "ingest":
        catalog = rng.choice(
            [str(ctx.catalog), str(ctx.work / "missing.csv"), str(ctx.work), "/dev/null", ""]
        )
        target = ["-c", f"fuzz{rng.randrange(4)}", "--path", str(ctx.work / "data")]
        argv = ["ingest", catalog, *(target if rng.random() < 0.8 else where)]
        argv += ["--rejects", str(ctx.scratch(".rejects.jsonl"))]
        options = {
            "--format": ["csv", "jsonl", "parquet", "xml", ""],
            "--map": ["title=name", "nope=x", "title", "=", "id=missing"],
            "--template": ["{title}", "{nope}", "", "{title}|{brand", "{{title}}", "B: {brand}"],
            "--bm25-k": _NUMBERS, "--bm25-b": _NUMBERS, "--batch-size": _NUMBERS,
            "--threads": _NUMBERS, "--precision": ["fp32", "int4"], "--recreate": [None],
            "--prune": [None], "--rejects": [str(ctx.work), str(ctx.catalog)],
        }  # fmt: skip
    else:
        argv = ["eval", "-j", str(ctx.work / "missing.jsonl"), "--run", str(ctx.run_file)]
        options = {
            "--resamples": _NUMBERS, "--ndcg-k": _NUMBERS, "--recall-k": _NUMBERS,
            "--gain": ["E=1", "X=2", "E=abc", "E"], "--rating-range": ["1:3", "3:1", "a:b", ":"],
            "--relevant": ["2.5", "E", "x", ""], "--pair-gap": _NUMBERS, "--seed": _NUMBERS,
            "--mode": ["bm25", "x"], "--report": [str(ctx.work), str(ctx.work / "no" / "r.html")],
        }  # fmt: skip
    for _ in range(rng.randrange(1, 4)):
        option = rng.choice(list(options))
        value = rng.choice(options[option])
        argv += [option] if value is None else [option, value]
    if rng.random() < 0.1:
        argv.append(rng.choice(["--nope", "-z", "--json=1", "--", "--top-k"]))
    return argv


def _batch_line(rng: random.Random) -> bytes:
    kind = rng.randrange(12)
    if kind < 4:
        item: Any = {"query_id": rng.choice(["q1", 7, None, "x" * 50]), "query": odd_text(rng)}
        if rng.random() < 0.3:
            item["filters"] = [odd_filter(rng)]
        return json.dumps(item).encode()
    return rng.choice(
        [
            b"not json",
            b"[1, 2]",
            b'{"query": 5}',
            b'{"query_id": "q", "query": "shoes", "filters": "brand=x"}',
            b'{"query_id": "q", "query": "shoes", "filters": [1]}',
            b'{"query_id": "q", "query": "\\ud800"}',
            b'{"query_id": "q", "query": "caf\xe9"}',
            b"",
            b"   ",
            b'{"query_id": {"a": 1}, "query": "shoes"}',
            b'\xef\xbb\xbf{"query_id": "q", "query": "shoes"}',
            b'{"query_id": "q", "query": ""}',
        ]
    )


def batch_case(rng: random.Random, ctx: Context) -> list[str]:
    path = ctx.scratch(".jsonl")
    path.write_bytes(b"\n".join(_batch_line(rng) for _ in range(rng.randrange(0, 6))))
    argv = ["query", "--batch", str(path), "--mode", "bm25", *ctx.where()]
    if rng.random() < 0.5:
        argv += ["--out", str(ctx.scratch(".run.jsonl"))]
    return argv


_GRADES = [3, 2.5, 1, 0, -1, "E", "S", "C", "I", "Exact", "x", "", None, "nan", 1e309, True]


def judgments_case(rng: random.Random, ctx: Context) -> list[str]:
    rows = []
    for _ in range(rng.randrange(0, 8)):
        row: dict[str, Any] = {
            "query_id": rng.choice(["q1", "q2", 3, None, ""]),
            "query": rng.choice(["shoes", "", None, odd_text(rng)]),
            "product_id": rng.choice(["p1", "p2", 5, None, ""]),
            rng.choice(["relevance", "relevance", "esci_label", "grade", "nope"]): rng.choice(
                _GRADES
            ),
        }
        if rng.random() < 0.2:
            row["count"] = rng.choice([1, 0, -3, "x", None])
        if rng.random() < 0.2:
            row.pop(rng.choice(list(row)))
        rows.append(row)
    fmt = rng.choice(["jsonl", "jsonl", "csv"])
    path = ctx.scratch(f".{fmt}")
    if fmt == "jsonl":
        lines = [json.dumps(r).encode() for r in rows]
        if rng.random() < 0.3:
            lines.append(rng.choice([b"{", b"\xff\xfe", b"[]", b'{"query_id": "q1"}']))
        path.write_bytes(b"\n".join(lines))
    else:
        names = sorted({k for r in rows for k in r}) or ["query_id"]
        text = ",".join(names) + "\n"
        text += "".join(",".join("" if r.get(n) is None else str(r.get(n)) for n in names) + "\n"
                        for r in rows)  # fmt: skip
        path.write_bytes(text.encode("utf-8", "surrogatepass"))
    argv = ["eval", "-j", str(path), "--resamples", "100"]
    if rng.random() < 0.8:
        argv += ["--run", str(ctx.run_file)]
    else:
        argv += ["--mode", "bm25", "--top-k", "5", *ctx.where()]
    if rng.random() < 0.2:
        argv += ["--map", rng.choice(["grade=relevance", "query=nope", "x=y"])]
    return argv


GENERATORS: dict[str, Callable[[random.Random, Context], list[str]]] = {
    "query": query_case,
    "filter": filter_case,
    "flags": flags_case,
    "batch": batch_case,
    "judgments": judgments_case,
}


def fuzz(ctx: Context, cases: dict[str, int], seed: int, tally: Tally | None = None) -> Tally:
    """Run `cases[category]` drawn command lines of each category in this process."""
    tally = tally or Tally()
    for category, count in cases.items():
        rng = random.Random(f"{category}-{seed}")
        for _ in range(count):
            tally.add(category, run_main(GENERATORS[category](rng, ctx)))
    return tally
