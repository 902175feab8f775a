"""kill -9 and Ctrl-C at drawn points of `ingest`, `ingest --recreate` and `ingest --prune`
(real CLI processes on a 120-product catalog), each kill leaving the state the next run
starts from; then a run to the end must leave what an uninterrupted run leaves, and no kill
may lose or alter a product (`fault_kills` holds the scenarios and checks). Seeded: CI draws
the same delays every run; benchmarks/faults.py draws more."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fault_kills import SCENARIOS, run_chain

DEMO = Path(__file__).resolve().parents[2] / "examples" / "catalog.parquet"
KILLS = 7  # per scenario, each reaching a running ingest


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_ingests_resume_to_what_an_uninterrupted_one_leaves(
    scenario, exported_model, tmp_path
):
    result = run_chain(scenario, DEMO, exported_model, tmp_path, kills=KILLS, seed=0, rows=120)
    assert not result.problems, "\n".join(result.problems)
    assert result.data_loss == 0
    assert result.kills == KILLS, f"only {result.kills} signals reached a running ingest"


def test_a_ctrl_c_a_library_turns_into_its_own_error_is_an_interruption(exported_model, tmp_path):
    """Found by the kill points: Ctrl-C while onnxruntime initialises surfaced as its
    ImportError ("initialization failed") and a traceback. Here the import of onnxruntime
    gets a real SIGINT and turns the KeyboardInterrupt into an ImportError, as it does."""
    import os
    import subprocess
    import sys
    import textwrap

    code = """
        import os, signal, sys, time

        class ConvertsCtrlC:
            def find_spec(self, name, path=None, target=None):
                if name == "onnxruntime":
                    sys.meta_path.remove(self)
                    try:
                        os.kill(os.getpid(), signal.SIGINT)
                        time.sleep(5)
                    except KeyboardInterrupt:
                        raise ImportError("initialization failed") from None
                return None

        sys.meta_path.insert(0, ConvertsCtrlC())
        sys.argv = ["shopsearch", *sys.argv[1:]]
        from shopsearch.cli.app import run

        run()
    """
    catalog = tmp_path / "tiny.parquet"
    pq.write_table(pq.read_table(DEMO).slice(0, 3), catalog)
    args = ["ingest", str(catalog), "--path", str(tmp_path / "data"), "--rejects",
            str(tmp_path / "r.jsonl")]  # fmt: skip
    env = {**os.environ, "SHOPSEARCH_MODEL_DIR": str(exported_model)}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.startswith("interrupted"), proc.stderr
