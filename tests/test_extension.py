"""The extension claim: a new cell and a new data set are one Python file plus one yaml each, with no edit anywhere
else. Both are written to a temporary folder (outside the repository), found through Hydra's search path and
PYTHONPATH, and trained by the real command line at depth 2 in both directions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.conftest import CACHE, ROOT

CELL = '''
import torch
from torch import nn


class LeakyRNN(nn.Module):
    """h_t = (1 - a) h_{t-1} + a tanh(W x_t + U h_{t-1})."""

    def __init__(self, input_size: int, hidden_size: int = 16, leak: float = 0.5):
        super().__init__()
        self.inp = nn.Linear(input_size, hidden_size)
        self.rec = nn.Linear(hidden_size, hidden_size, bias=False)
        self.leak, self.output_size = leak, hidden_size

    def forward(self, x, state=None):
        h = x.new_zeros(x.shape[0], self.output_size) if state is None else state
        outputs = []
        for t in range(x.shape[1]):
            h = (1 - self.leak) * h + self.leak * torch.tanh(self.inp(x[:, t]) + self.rec(h))
            outputs.append(h)
        return torch.stack(outputs, 1), h
'''

DATA = '''
import numpy as np

from src.data.tensors import TensorDataModule


class Ramps(TensorDataModule):
    """Is the noisy ramp rising or falling?"""

    def load_splits(self):
        rng = np.random.default_rng(0)
        rising = rng.integers(0, 2, 400)
        x = np.linspace(0, 1, 12)[None, :] * (2 * rising[:, None] - 1) + 0.1 * rng.standard_normal((400, 12))
        return {"train": (x[:, :, None].astype(np.float32), rising.astype(np.int64))}
'''

CELL_YAML = """
_target_: my_ext.leaky.LeakyRNN
_partial_: true
hidden_size: 16
leak: 0.5
"""

DATA_YAML = """
defaults:
  - override /task@_global_.task: classify
_target_: my_ext.ramps.Ramps
cache_dir: ${paths.cache_dir}
batch_size: 32
eval_batch_size: 200
val_fraction: 0.1
test_fraction: 0.2
split_seed: 0
shuffle_seed: ${seed}
"""


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip())


def test_a_new_cell_and_data_set_from_a_temporary_folder_train(tmp_path):
    ext = tmp_path / "ext"
    write(ext / "my_ext" / "__init__.py", "")
    write(ext / "my_ext" / "leaky.py", CELL)
    write(ext / "my_ext" / "ramps.py", DATA)
    write(ext / "conf" / "cell" / "leaky.yaml", CELL_YAML)
    write(ext / "conf" / "dataset" / "ramps.yaml", DATA_YAML)
    before = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout

    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ext), "RNN_BENCH_CACHE": str(CACHE), "WANDB_MODE": "offline"}
    args = [f"hydra.searchpath=[file://{ext / 'conf'}]", "cell=leaky", "dataset=ramps", "depth=2", "direction=bi"]
    args += ["trainer.max_epochs=4", "logger=csv", f"hydra.run.dir={run_dir}"]
    proc = subprocess.run(
        [sys.executable, "-m", "src.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    record = json.loads((run_dir / "metrics.json").read_text())
    assert (record["status"], record["cell"], record["dataset"]) == ("ok", "leaky", "ramps")
    assert (record["depth"], record["direction"]) == (2, "bi")
    assert record["test/acc"] > 0.9  # it learned: chance is 0.5
    # No file of the repository was added or changed to get there.
    after = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    assert after == before
