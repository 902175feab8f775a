"""The fault suite's soak mode: the generators of tests/faults/ run longer, with new seeds, and
a report of cases tried per category, failures and data-loss incidents; then the
reproducibility measurement on the Home Depot dev queries (benchmarks/reproducibility.py).

    python benchmarks/faults.py [--work DIR] [--seed 1] [--scale 10] [--model-dir MODEL]
        [--only catalogs kills fuzz damage server repro] [--repro-rows 10000]

`--scale` multiplies the CI suite's counts (525 catalogs, 21 kill points, 230 command lines,
22 damaged files, 17 garbage answers; garbage answers are not multiplied). Failures are
listed, at most 10 per category, each with what reproduces it: the category's seed, and the
catalog or command line. The catalogs go into QdrantClient(":memory:") and, a sixth of
them, Edge; the kills and damaged collections run the real CLI in child processes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "faults"))

import fault_catalogs  # noqa: E402
import fault_cli  # noqa: E402
import fault_files  # noqa: E402
import fault_kills  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from bench_catalog import table  # noqa: E402

DEMO = ROOT / "examples" / "catalog.parquet"
PARTS = ("catalogs", "kills", "fuzz", "damage", "server", "repro")
FUZZ_CASES = {"query": 50, "filter": 60, "flags": 60, "batch": 30, "judgments": 30}


class Report:
    def __init__(self) -> None:
        self.rows: list[list[object]] = []
        self.failures: dict[str, list[str]] = {}

    def add(self, category: str, tried: int, failures: list[str], data_loss: int = 0,
            seconds: float = 0.0) -> None:  # fmt: skip
        self.rows.append([category, tried, len(failures), data_loss, f"{seconds:.0f}"])
        self.failures[category] = failures
        print(f"{category}: {tried} tried, {len(failures)} failures, {data_loss} data-loss "
              f"incidents ({seconds:.0f} s)", flush=True)  # fmt: skip

    def print(self) -> None:
        print()
        print(table(["category", "cases", "failures", "data-loss incidents", "s"], self.rows))
        for category, failures in self.failures.items():
            for failure in failures[:10]:
                print(f"\n[{category}] {failure[:3000]}")


def catalogs(report: Report, encoder: object, count: int, seed: int) -> None:
    """`count` generated catalogs per format: five of six in memory, one in Edge."""
    from qdrant_client import QdrantClient

    client = QdrantClient(":memory:")
    for fmt in fault_catalogs.FORMATS:
        for where in ("memory", "edge"):
            examples = count * 5 // 6 if where == "memory" else count // 6
            start = time.perf_counter()
            tried, failures = _soak_catalogs(fmt, where, examples, seed, client, encoder)
            took = time.perf_counter() - start
            report.add(f"catalogs {fmt} ({where})", tried, failures, seconds=took)


def _soak_catalogs(
    fmt: str, where: str, examples: int, seed: int, client: object, encoder: object
) -> tuple[int, list[str]]:
    """Hypothesis draws `examples` catalogs; every failure is kept (none stops the run)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from shopsearch.store.edge import EdgeBackend
    from shopsearch.store.server import ServerBackend

    tried, failures = 0, []

    @hypothesis_seed(seed)
    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(catalog=fault_catalogs.catalogs(fmt), batch_size=st.integers(1, 9))
    def check(catalog: fault_catalogs.Catalog, batch_size: int) -> None:
        nonlocal tried
        tried += 1
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            path = fault_catalogs.write(catalog, work)
            if where == "edge":
                backend = EdgeBackend(work / "products")
            else:
                backend = ServerBackend(client, work.name, ":memory:")
            template = None if where == "edge" else "{title}"
            try:
                problems = fault_catalogs.check_ingest(
                    catalog, path, backend, encoder, work, batch_size, template
                )
            except Exception as exc:
                problems = [f"{type(exc).__name__}: {exc}"]
            finally:
                if where == "edge":
                    backend.close()
                else:
                    client.delete_collection(work.name)  # type: ignore[attr-defined]
        if problems:
            failures.append(f"{catalog!r}\n" + "\n".join(problems))

    check()
    return tried, failures


def kills(report: Report, model: Path, work: Path, count: int, seed: int) -> None:
    for scenario in fault_kills.SCENARIOS:
        start = time.perf_counter()
        result = fault_kills.run_chain(
            scenario, DEMO, model, work / f"kills-{scenario}", kills=count, seed=seed
        )
        report.add(f"kill points: {scenario}", result.kills, result.problems, result.data_loss,
                   time.perf_counter() - start)  # fmt: skip


def fuzz(report: Report, model: Path, work: Path, scale: int, seed: int) -> None:
    os.environ["SHOPSEARCH_MODEL_DIR"] = str(model)
    here = Path.cwd()
    work.mkdir(parents=True, exist_ok=True)
    os.chdir(work)
    try:
        catalog = work / "tiny.parquet"
        pq.write_table(pq.read_table(DEMO).slice(0, 3), catalog)
        small = work / "small.parquet"
        pq.write_table(pq.read_table(DEMO).slice(0, 120), small)
        run_file = work / "run.jsonl"
        results = [{"product_id": "p1", "score": 1.0}]
        run_file.write_text(json.dumps({"query_id": "q1", "results": results}) + "\n")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        ctx = fault_cli.Context(work / "data", "fuzz", catalog, run_file, work, port)
        done = fault_cli.run_main(
            ["ingest", str(small), *ctx.where(), "--rejects", str(work / "r.jsonl")]
        )
        assert done.code == 0, done.stderr
        for category, count in FUZZ_CASES.items():
            start = time.perf_counter()
            tally = fault_cli.fuzz(ctx, {category: count * scale}, seed)
            report.add(f"fuzzed CLI: {category}", tally.tried.get(category, 0), tally.failures,
                       seconds=time.perf_counter() - start)  # fmt: skip
    finally:
        os.chdir(here)


def damage(report: Report, model: Path, work: Path, scale: int, seed: int) -> None:
    os.environ["XDG_CACHE_HOME"] = str(work / "xdg")
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    count = 8 * scale + len(fault_files.MANIFEST_SHAPES)
    failures = fault_files.check_models(model, work / "models", random.Random(seed), count)
    report.add("damaged model files", count, failures, seconds=time.perf_counter() - start)

    start = time.perf_counter()
    env = {"SHOPSEARCH_MODEL_DIR": str(model), "XDG_CACHE_HOME": str(work / "xdg")}
    data = work / "collection"
    proc = fault_files.cli(
        ["ingest", str(DEMO), "-c", "shop", "--path", str(data), "--rejects",
         str(work / "r.jsonl")], env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    count = 14 * scale
    failures = fault_files.check_collections(
        data / "shop", env, work / "collections", random.Random(seed), count
    )
    report.add("damaged collection files", count, failures, seconds=time.perf_counter() - start)


def server(report: Report, encoder: object) -> None:
    start = time.perf_counter()
    failures = []
    for kind in fault_files.GARBAGE:
        failures += [f"{kind}: {p}" for p in fault_files.check_server(kind, encoder)]
    report.add("garbage server answers", len(fault_files.GARBAGE), failures,
               seconds=time.perf_counter() - start)  # fmt: skip


def repro(work: Path, rows: int, model: Path | None) -> None:
    args = [sys.executable, str(ROOT / "benchmarks" / "reproducibility.py"), "--work",
            str(work / "repro"), "--rows", str(rows)]  # fmt: skip
    if model:
        args += ["--model-dir", str(model)]
    print("\n" + " ".join(args), flush=True)
    subprocess.run(args, check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--scale", type=int, default=10)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--repro-rows", type=int, default=10_000)
    args = parser.parse_args()

    from shopsearch.encoders import OnnxEncoder, default_model_dir

    model = args.model_dir or default_model_dir()
    work = args.work or Path(tempfile.mkdtemp(prefix="shopsearch-faults-"))
    work.mkdir(parents=True, exist_ok=True)
    encoder = OnnxEncoder.load(model, precision="fp32")
    print(f"work {work}, seed {args.seed}, scale {args.scale}, model {model}", flush=True)
    report = Report()
    if "catalogs" in args.only:
        catalogs(report, encoder, 175 * args.scale, args.seed)
    if "kills" in args.only:
        kills(report, model, work, 7 * args.scale, args.seed)
    if "fuzz" in args.only:
        fuzz(report, model, work / "fuzz", args.scale, args.seed)
    if "damage" in args.only:
        damage(report, model, work / "damage", args.scale, args.seed)
    if "server" in args.only:
        server(report, encoder)
    report.print()
    if "repro" in args.only:
        repro(work, args.repro_rows, args.model_dir)


if __name__ == "__main__":
    main()
