"""Issue 25, classes 4-7: values outside the documented ranges are refused before anything runs (4), the last
tracebacks become one line (5), a refusal names the real cause and fix (6), and a refusal has no side effects on
what is not the run's own (7). The bad inputs are made here; each test fails on the code before the fix."""

from __future__ import annotations

import json

import pytest

from src.common.errors import ConfigError
from src.train import train
from tests.conftest import run_cli

QUICK = ["dataset=digits", "debug=limit"]

# Class 4: every documented range, checked before the run dir is claimed (all but the truncation length, which
# needs the data's sequence length and is checked once the data is set up, before any training).
OUT_OF_RANGE = {
    "trainer.max_epochs=0": "trainer.max_epochs=0 trains nothing",
    "trainer.max_steps=0": "trainer.max_steps=0 trains nothing",
    "+trainer.min_epochs=5": "trainer.min_epochs=5 is more than trainer.max_epochs=2",
    "trainer.max_epochs=-1 trainer.max_steps=-1": "never ends",
    "trainer.check_val_every_n_epoch=5": "validation would never run",
    "optimizer.lr=0": "optimizer.lr=0 must be > 0",
    "scheduler=step scheduler.gamma=0": "scheduler.gamma=0 must be > 0",
    "scheduler=step scheduler.gamma=-0.5": "scheduler.gamma=-0.5 must be > 0",
    "stack.dropout=0.5": "depth=1 has none, so it would do nothing",
    "task.input_proj=0": "task.input_proj=0 must be null",
    "tags=abc": "tags='abc' must be a list of labels",
    "seeds=[1,2] seed=3": "were both given, and one would silently win",
    "truncation=tbptt": "truncation.steps=35 is longer than dataset=digits's sequences (8 steps)",
}


@pytest.mark.parametrize("override", sorted(OUT_OF_RANGE))
def test_a_value_outside_its_documented_range_is_refused(cfg_factory, tmp_path, override):
    with pytest.raises(ConfigError) as refused:
        train(cfg_factory(*QUICK, *override.split()))
    message = str(refused.value)
    assert OUT_OF_RANGE[override] in message and "\n" not in message, message
    record = json.loads((tmp_path / "metrics.json").read_text())  # recorded as failed, never as ok
    assert record["status"] == "failed" and "epochs" not in record


@pytest.mark.parametrize(
    "override", ["trainer.max_epochs=1", "truncation=tbptt truncation.steps=8", "stack.dropout=0.5 depth=2"]
)
def test_the_edges_of_the_ranges_still_run(cfg_factory, override):
    assert train(cfg_factory(*QUICK, *override.split()))["status"] == "ok"


def test_seeds_and_seed_together_is_refused_on_the_command_line(tmp_path):
    done = run_cli(*QUICK, "logger=csv", "seeds=[1,2]", "seed=3", f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2
    assert done.stderr.startswith("error: seeds=[1, 2] and seed=3 were both given") and done.stderr.count("\n") == 1


# Class 7: a refused run leaves nothing in a dir that is not its own.


def test_a_run_refused_a_dir_of_unknown_files_leaves_no_lock_and_no_log(tmp_path):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    done = run_cli(*QUICK, "logger=csv", f"hydra.run.dir={foreign}")
    assert done.returncode == 2 and "already holds files of an unknown run (notes.txt)" in done.stderr
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_refused_sweep_job_does_not_write_into_a_finished_runs_log(tmp_path):
    args = ["-m", *QUICK, "logger=csv", "callbacks=none", "seed=1", f"hydra.sweep.dir={tmp_path}"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    (job,) = [p for p in tmp_path.iterdir() if (p / "metrics.json").exists()]
    record = json.loads((job / "metrics.json").read_text())
    record["config_hash"] = "0123456789abcdef"  # a finished run of another config in the job's dir
    (job / "metrics.json").write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    again = run_cli(*args)
    assert again.returncode == 1 and "holds a run of another config" in again.stderr, again.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in job.iterdir() if p.is_file() and p.name != ".rnn_bench.lock"} == {
        k: v for k, v in before.items() if k != ".rnn_bench.lock"
    }
