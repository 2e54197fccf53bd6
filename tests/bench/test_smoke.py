"""Every benchmark in bench/ runs in its smoke mode (`--smoke`: tiny sizes, a few seconds) and
prints its table, so that none can rot between the runs whose figures the README quotes.

Each runs as a user runs it (`python -m bench.<name> --smoke`, its own redis-server and
`banditd` processes where it needs them) with its JSON and plot in a temp dir. What is checked
is that it finished, printed the markdown table with the columns that carry its comparison
(the ratio against the baseline measured in the same run, where it has one) and one row per
measured cell, and wrote its JSON. The figures of a smoke run mean nothing and are not
checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

pytestmark = pytest.mark.slow  # learning runs, real processes or a SavedModel per test: `make test-fast` leaves it out

REPO = Path(__file__).resolve().parents[2]
NOT_BENCHMARKS = {"__init__", "harness", "bare_app", "bare_candidates_app"}
"""Modules of bench/ that are not benchmarks: the shared harness and the baselines' apps."""


class Expected(NamedTuple):
    columns: tuple[str, ...]
    """Columns of the table that must be printed (first one included, to find it)."""
    rows: int
    """Its data rows in smoke mode: one per measured cell of the smoke sizes."""
    plot: bool = False
    """Whether the benchmark takes --plot."""
    slow: bool = True
    """Starts servers or trains for a while: more than about 20 s on the 2-core machine."""


BENCHMARKS = {
    # connections 1, 8
    "act_throughput": Expected(("connections", "service req/s", "bare req/s", "throughput ratio service/bare"), 2),
    # 10 candidates x connections 1, 8
    "candidates_act": Expected(("candidates", "connections", "service req/s", "ratio service/bare"), 2),
    # seed 0
    "cartpole_http": Expected(("seed", "steps to 475", "best greedy mean"), 1, plot=True),
    "cartpole_inprocess": Expected(("seed", "steps to 475", "best greedy mean"), 1, plot=True),
    # linucb, three neural variants, uniform
    "neural_regret": Expected(("variant", "cumulative regret (per seed)", "ratio to LinUCB"), 5, plot=True),
    # fit, DR estimate, total, evaluate_arrays
    "ope_dr": Expected(("step", "training/ope.py s", "numpy s", "ratio ope/numpy"), 4, slow=False),
    # linucb, uniform
    "regret_curve": Expected(
        ("algorithm", "cumulative regret in process", "over HTTP", "ratio HTTP/in-process"), 2, plot=True
    ),
    # one shape
    "retrain_throughput": Expected(("shape", "read rows/s", "update ex/s"), 1),
    "reward_latency": Expected(("samples", "p50", "p95", "timeouts"), 1),
    # minute 1
    "soak": Expected(("min", "/act sent", "/act errors", "/reward errors"), 1, plot=True),
    # d=16 K=10 x batches 100, 1000
    "trainer_throughput": Expected(("shape", "batch", "TF update ex/s", "numpy ex/s", "ratio"), 2, slow=False),
}


def markdown_tables(text: str) -> list[list[list[str]]]:
    """The markdown tables in text: each a list of rows (the header first, the alignment row
    dropped), each row a list of stripped cells."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|") and line.endswith("|"):
            cells = [cell.strip() for cell in line[1:-1].split("|")]
            if not all(set(cell) <= set("-:") for cell in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def test_every_benchmark_has_a_smoke_test() -> None:
    modules = {path.stem for path in (REPO / "bench").glob("*.py")} - NOT_BENCHMARKS
    assert modules == set(BENCHMARKS)


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.slow] if e.slow else []) for name, e in BENCHMARKS.items()]
)
def test_benchmark_runs_and_prints_its_table(name: str, tmp_path: Path) -> None:
    expected = BENCHMARKS[name]
    command = [sys.executable, "-m", f"bench.{name}", "--smoke", "--json", str(tmp_path / f"{name}.json")]
    if expected.plot:
        command += ["--plot", str(tmp_path / f"{name}.png")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BANDIT_") and k != "REDIS_URL"}
    run = subprocess.run(
        command,
        cwd=REPO,
        env=env | {"TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, f"{name} exited with {run.returncode}:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    tables = [t for t in markdown_tables(run.stdout) if set(expected.columns) <= set(t[0])]
    assert tables, f"{name} printed no table with the columns {expected.columns}:\n{run.stdout[-3000:]}"
    table = tables[0]
    assert len(table) - 1 == expected.rows, f"{name}: {len(table) - 1} rows, expected {expected.rows}:\n{table}"
    assert all(len(row) == len(table[0]) for row in table), table
    assert json.loads((tmp_path / f"{name}.json").read_text())
