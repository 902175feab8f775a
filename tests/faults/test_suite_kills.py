"""kill -9 and Ctrl-C at drawn points of `ingest`, `ingest --recreate` and `ingest --prune`
(real CLI processes on a 240-product catalog), each kill leaving the state the next run
starts from; then a run to the end must leave what an uninterrupted run leaves, and no kill
may lose or alter a product (`fault_kills` holds the scenarios and checks). Seeded: CI draws
the same delays every run; benchmarks/faults.py draws more."""

from __future__ import annotations

from pathlib import Path

import pytest
from fault_kills import SCENARIOS, run_chain

DEMO = Path(__file__).resolve().parents[2] / "examples" / "catalog.parquet"
KILLS = 7  # per scenario, each reaching a running ingest


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_killed_ingests_resume_to_what_an_uninterrupted_one_leaves(
    scenario, exported_model, tmp_path
):
    result = run_chain(scenario, DEMO, exported_model, tmp_path, kills=KILLS, seed=0)
    assert not result.problems, "\n".join(result.problems)
    assert result.data_loss == 0
    assert result.kills == KILLS, f"only {result.kills} signals reached a running ingest"
