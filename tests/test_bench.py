"""`python -m src.bench`: the overhead and sweep-throughput benchmarks run end to end at toy settings and write
their JSON + markdown (the real numbers are in benchmarks/); and the per-step syncs the overhead work removed
stay removed."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess

import pytest
import torch
from lightning.pytorch.callbacks import TQDMProgressBar

from src.bench import __main__ as bench_main
from src.bench import overhead, report, stacked_kernels
from src.bench import stacked as stacked_bench
from src.bench import sweep as sweep_bench
from tests.conftest import ROOT


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    out = tmp_path / "benchmarks"
    monkeypatch.setattr(report, "write", functools.partial(report.write, out_dir=out))
    return out


def test_overhead_benchmark_ends_with_its_json_line(bench_dir, capsys):
    assert overhead.main(["--epochs", "1", "--repeats", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"overhead_ratio", "suite_samples_per_s", "plain_samples_per_s", "device"} <= last.keys()
    assert last["overhead_ratio"] == pytest.approx(last["suite_samples_per_s"] / last["plain_samples_per_s"], rel=0.01)
    doc = json.loads((bench_dir / "overhead-lstm-cpu.json").read_text())
    assert doc["environment"]["torch"] and doc["environment"]["date"] and doc["summary"] == last
    assert (bench_dir / "overhead-lstm-cpu.md").read_text().startswith("# overhead-lstm-cpu")


def test_stacked_benchmark_times_a_stacked_job_against_its_single_runs(bench_dir, capsys):
    args = ["--sizes", "8", "--members", "2", "--epochs", "1", "--repeats", "1", "dataset=digits"]
    args += ["trainer.limit_train_batches=3", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
    assert stacked_bench.main(args) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = json.loads((bench_dir / "stacked-cpu.json").read_text())["rows"]
    assert [(r["hidden"], r["S"]) for r in rows] == [(8, 2)]
    assert last["whole_job"]["hidden=8"] > 0 and last["compute_only"]["hidden=8"] > 0
    assert rows[0]["whole job (median, min-max)"].startswith(f"{last['whole_job']['hidden=8']:.2f}")
    # the members trained as their single runs: the same test metrics
    assert rows[0]["largest test metric difference"] < 1e-5


@pytest.mark.parametrize(
    "overrides, device",
    [([], "cpu"), (["cell=gru"], "cpu"), (["trainer=gpu"], "cuda"), (["trainer.accelerator=cuda"], "cuda")],
)
def test_a_stacked_or_packed_record_is_named_for_the_device_its_runs_train_on(overrides, device):
    assert report.recipe_device(overrides) == device  # stacked-cuda.md, never a GPU's figures in stacked-cpu.md


def test_stacked_kernels_benchmark_times_every_candidate(bench_dir, capsys):
    assert stacked_kernels.main(["--sizes", "4", "--members", "2", "--batch", "4", "--repeats", "1"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = json.loads((bench_dir / "stacked-kernels-cpu.json").read_text())["rows"]
    names = ["per member fused", "block-diagonal fused", "batched loop", "batched loop, scripted"]
    names.append("batched loop, backward written out")
    assert [r["candidate"] for r in rows] == names and last["hidden=4,per member fused"] == 1.0
    assert all(r["ms (median)"] > 0 for r in rows)
    # every candidate computes the members' own LSTMs: the same last states and gradients (float32 rounding)
    assert all(r["largest relative difference"] < 1e-5 for r in rows) and rows[0]["largest relative difference"] == 0


def test_the_kernels_benchmark_writes_the_record_it_is_named(bench_dir, capsys):
    """--name: the GPU script's dry run on a CPU (.ci/gpu dry) must not overwrite the CPU's record."""
    assert (
        stacked_kernels.main(["--sizes", "4", "--members", "2", "--batch", "4", "--repeats", "1", "--name", "k"]) == 0
    )
    assert (bench_dir / "k.json").is_file() and (bench_dir / "k.md").read_text().startswith("# k")
    assert not (bench_dir / "stacked-kernels-cpu.json").exists()


@pytest.mark.parametrize(
    "args, words",
    [([], "usage: bash .ci/gpu fetch | run | dry"), (["run"], "no wheels in .whl/: run 'bash .ci/gpu fetch'")],
)
def test_the_gpu_script_refuses_a_call_it_cannot_carry_out_in_one_line(tmp_path, args, words):
    """.ci/gpu, the one command a lent GPU runs: without its wheels (a fresh clone has none) it stops before it
    installs or runs anything, rather than spending the device's minutes on imports that fail."""
    clone = tmp_path / "repo"
    (clone / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "gpu", clone / ".ci" / "gpu")
    done = subprocess.run(
        ["bash", ".ci/gpu", *args],
        cwd=clone,
        capture_output=True,
        text=True,
        env={**os.environ, "OUT": str(tmp_path / "out")},
    )
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [done.stderr.strip()], done.stderr
    assert words in done.stderr and not (tmp_path / "out" / "gpu.log").exists()


def test_the_kernels_benchmark_compares_what_each_candidate_computes():
    """The difference column is not blind: a candidate that computes something else shows it."""
    runs = stacked_kernels.candidates(2, 3, 4, torch.device("cpu"))
    reference = runs["per member fused"]()
    assert stacked_kernels.difference(runs["block-diagonal fused"](), reference) < 1e-5
    last, grads = runs["batched loop"]()
    assert stacked_kernels.difference((last.flip(0), grads), reference) > 1e-3  # members swapped


def test_the_written_out_backward_is_the_lstms_gradient_at_every_step():
    """WrittenOut's hand-written backward through time against numerical gradients (float64), with a loss that
    reads every step's h, so the gradient flowing in at each step is checked, not the last step's alone."""
    pre = torch.randn(2, 5, 3, 4 * 4, dtype=torch.float64, requires_grad=True)
    w_hh = (0.5 * torch.randn(2, 4 * 4, 4, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(stacked_kernels.WrittenOut.apply, (pre, w_hh))


def test_the_kernels_benchmark_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit, match="--device cuda: torch sees no CUDA GPU"):
        stacked_kernels.main(["--device", "cuda"])


def test_sweep_benchmark_runs_both_modes_through_the_cli(bench_dir, capsys):
    assert (
        sweep_bench.main(
            [
                "--jobs",
                "2",
                "--parallel",
                "2",
                "--epochs",
                "1",
                "dataset=digits",
                "trainer.limit_train_batches=2",
                "trainer.limit_val_batches=1",
                "test=false",
            ]
        )
        == 0
    )
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["jobs"] == 2 and last["sequential_wall_s"] > 0 and last["parallel_wall_s"] > 0
    assert last["speedup"] == pytest.approx(last["sequential_wall_s"] / last["parallel_wall_s"], rel=0.05)
    rows = json.loads((bench_dir / "sweep-cpu.json").read_text())["rows"]
    assert [r["jobs_at_once"] for r in rows] == [1, 2]


def test_sweep_benchmark_fails_loudly_when_a_job_fails(bench_dir):
    with pytest.raises(SystemExit, match="multirun failed|failed"):
        sweep_bench.main(["--jobs", "1", "--parallel", "1", "--epochs", "1", "dataset=digits", "depth=0"])


def test_unknown_benchmark_or_bad_setting_is_an_error(capsys):
    assert bench_main.main(["nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
    assert {"cells", "overhead", "sweep", "diagnostics", "stacked"} <= set(bench_main.available())
    # a bad setting or override: one message naming it, exit 2 (not a traceback)
    assert bench_main.main(["overhead", "--epochs", "1", "--repeats", "1", "--updates-per-step", "fast"]) == 2
    assert "error: updates_per_step='fast' must be a positive integer or auto" in capsys.readouterr().err


def test_progress_bar_redraws_only_on_logging_steps(cfg_factory):
    """A redraw reads the logged values back from the device (a sync): only every log_every_n_steps."""
    from src.runs.build import build

    cfg = cfg_factory("dataset=digits", "trainer.enable_progress_bar=true", "trainer.log_every_n_steps=7")
    _, _, trainer = build(cfg)
    bars = [c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)]
    assert len(bars) == 1 and bars[0].refresh_rate == 7
    assert trainer.progress_bar_callback is bars[0]


def test_train_loss_is_logged_only_on_the_steps_loggers_write(cfg_factory, monkeypatch):
    from src.tasks.base import RecurrentTask
    from src.train import train

    logged = []
    original = RecurrentTask.log

    def spy(self, name, value, *args, **kwargs):
        if name == "train/loss":
            logged.append(self.trainer.global_step)
        return original(self, name, value, *args, **kwargs)

    monkeypatch.setattr(RecurrentTask, "log", spy)
    cfg = cfg_factory(
        "dataset=digits",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=10",
        "trainer.log_every_n_steps=3",
        "trainer.limit_val_batches=1",
        "test=false",
        "update=automatic",  # one update per step (update=grouped: tests/test_train.py, the curves of one)
    )
    train(cfg)
    assert logged == [2, 5, 8, 9]  # before the update: Lightning writes after steps 3, 6, 9; 10 is the last


def test_packed_benchmark_times_a_packed_multirun_against_it_unpacked(bench_dir, capsys):
    from src.bench import packed

    args = ["--cells", "gru", "--lrs", "0.01,0.02", "--seeds", "1", "--hidden", "8", "--epochs", "1", "--repeats", "1"]
    args += ["dataset=digits", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2"]
    assert packed.main([*args, "trainer.limit_test_batches=2"]) == 0
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = json.loads((bench_dir / "packed-cpu.json").read_text())["rows"]
    assert [(r["cell"], r["jobs"]) for r in rows] == [("gru", 2)]
    assert last["whole_sweep"]["gru"] > 0 and last["compute_only"]["gru"] > 0
    # the packed members trained as their unpacked jobs: the same test metrics
    assert rows[0]["largest test metric difference"] < 1e-5
