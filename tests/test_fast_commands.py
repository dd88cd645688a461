"""Commands answer without loading torch (issue 19, section 3): every command's --help, and `python -m src.compare`
on finished runs (which reads only JSON and CSV), run as a user types them, import none of torch, Lightning, W&B
or gensim. Checked by the modules loaded, not by a timing."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEAVY = ("torch", "lightning", "wandb", "gensim")

# Runs `python -m <module> <args>` in this interpreter, then writes the heavy modules it loaded as its last line.
PROBE = """
import runpy, sys
module, *args = sys.argv[1:]
sys.argv = [module, *args]
try:
    runpy.run_module(module, run_name="__main__", alter_sys=True)
except SystemExit as e:
    code = e.code
else:
    code = 0
print("exit", code, "loaded", sorted(m for m in {heavy!r} if m in sys.modules), file=sys.stderr)
"""


def loaded(module: str, *args: str) -> tuple[str, str]:
    """(the last stderr line: exit code and heavy modules loaded, the command's stdout)."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return done.stderr.strip().splitlines()[-1], done.stdout


COMMANDS = [
    "src.train",
    "src.compare",
    "src.generate",
    "src.diagnostics",
    "src.data",
    "src.runs.sweeps",
    "src.bench",
]
BENCHMARKS = ["src.bench cells", "src.bench overhead", "src.bench sweep", "src.bench diagnostics"]


@pytest.mark.parametrize("command", COMMANDS + BENCHMARKS)
def test_help_loads_no_heavy_library(command):
    last, out = loaded(*command.split(), "--help")
    assert last == "exit 0 loaded []", last
    assert "usage" in out.lower() or "== options ==" in out.lower() or "== config" in out.lower(), out[:500]


def finished_run(root: Path, cell: str, seed: int, value: float) -> Path:
    """A run dir as src.train leaves it: metrics.json, .hydra/overrides.yaml, csv/metrics.csv and the gradient
    diagnostics' CSV."""
    run = root / f"{cell}{seed}"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(f"- dataset=adding\n- cell={cell}\n- seed={seed}\n")
    record = {
        "status": "ok",
        "dataset": "adding",
        "task": "regress_last",
        "cell": cell,
        "depth": 1,
        "direction": "uni",
        "truncation": "none",
        "seed": seed,
        "params": 1000,
        "monitor": "val/mse",
        "monitor_mode": "min",
        "val/mse_best": value,
        "test/mse": value,
        "test/baseline_mse": 0.167,
        "train_samples_per_s": 500.0,
        "wall_s": 10.0,
    }
    (run / "metrics.json").write_text(json.dumps(record))
    (run / "csv").mkdir()
    with open(run / "csv" / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "step", "train/loss", "val/mse"])
        for epoch in range(3):
            writer.writerow([epoch, 10 * epoch + 9, 0.5 / (epoch + 1), ""])
            writer.writerow([epoch, 10 * epoch + 9, "", value * (3 - epoch)])
    (run / "diagnostics").mkdir()
    with open(run / "diagnostics" / "gradient_flow.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epochs_done", "step", "layer", "direction", "t", "grad_h", "grad_c"])
        for t in range(10):
            writer.writerow([1, 30, 0, 0, t, 0.9 ** (9 - t), ""])
    return run


def test_comparing_finished_runs_loads_no_heavy_library(tmp_path):
    for cell, values in (("gru", (0.01, 0.02)), ("lstm", (0.03, 0.04))):
        for seed, value in enumerate(values):
            finished_run(tmp_path, cell, seed, value)
    last, out = loaded("src.compare", str(tmp_path))
    assert last == "exit 0 loaded []", last
    # it did compare: both cells on the leaderboard, the plots (gradient flow included) written
    assert "gru" in out and "lstm" in out, out
    assert (tmp_path / "leaderboard.md").is_file()
    assert (tmp_path / "plots" / "adding_gradient_flow.png").read_bytes()[:4] == b"\x89PNG"
