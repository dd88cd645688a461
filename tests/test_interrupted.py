"""A command stopped from outside (Ctrl-C, SIGTERM): the status a shell gives the signal (130, 143; Lightning's own
are 1 and, for SIGTERM, 0 as if all went well), one line that says how to go on, and the same words in every
stopped run's metrics.json; the command it prints resumes the run."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from src.common.errors import STOPPED_BY, interrupted_by
from tests.conftest import CACHE, ROOT, run_cli

# Epochs enough that the signal always comes mid-training; digits' epoch is short, so a checkpoint comes soon.
LONG = ["dataset=digits", "cell=gru", "cell.hidden_size=16", "trainer.max_epochs=500", "logger=csv", "test=false"]
LONG += ["trainer.enable_progress_bar=false"]


def stopped(args: list[str], sig: signal.Signals, checkpoints: int, under: Path) -> subprocess.CompletedProcess:
    """`python -m src.train <args>` sent `sig` once `checkpoints` last.ckpt files exist under `under`."""
    env = {**os.environ, "RNN_BENCH_CACHE": str(CACHE), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    victim = subprocess.Popen(
        [sys.executable, "-m", "src.train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # a shell without job control starts a background command with SIGINT ignored; the user's Ctrl-C is not
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if len(list(under.glob("**/checkpoints/last.ckpt"))) >= checkpoints:
            break
        time.sleep(0.05)
    assert victim.poll() is None, "the run ended before it was stopped"
    victim.send_signal(sig)
    out, err = victim.communicate(timeout=120)
    return subprocess.CompletedProcess(victim.args, victim.returncode, out, err)


def resume_line(stderr: str, how: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith(f"interrupted by {how}")]
    assert len(lines) == 1, stderr[-3000:]  # one line for the command, not one per member
    return lines[0]


def test_a_run_stopped_by_sigterm_exits_143_and_its_printed_command_resumes_it(tmp_path):
    out = tmp_path / "run"
    done = stopped([*LONG, f"hydra.run.dir={out}"], signal.SIGTERM, 1, out)
    assert done.returncode == 143, done.stderr[-2000:]
    line = resume_line(done.stderr, "SIGTERM")
    command = line.split("resume it from its last checkpoint: ", 1)[1]
    assert shlex.split(command) == ["python", "-m", "src.train", *LONG, "ckpt_path=last", f"hydra.run.dir={out}"]
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "failed" and record["error"] == line.replace(":", ";", 1)
    # the printed command, with an epoch budget that ends soon after the checkpoint, continues the run
    epoch = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["epoch"]
    args = [a if a != "trainer.max_epochs=500" else f"trainer.max_epochs={epoch + 2}" for a in shlex.split(command)]
    resumed = run_cli(*args[3:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    record = json.loads((out / "metrics.json").read_text())
    assert record["status"] == "ok" and record["resumed"] == 1 and record["epochs"] == epoch + 2


def test_a_packed_multirun_stopped_by_ctrl_c_exits_130_with_one_line_for_all_its_members(tmp_path):
    sweep = tmp_path / "sweep"
    done = stopped(["-m", *LONG, "seed=1,2", f"hydra.sweep.dir={sweep}"], signal.SIGINT, 2, sweep)
    assert done.returncode == 130, done.stderr[-2000:]
    line = resume_line(done.stderr, r"Ctrl-C (SIGINT)")
    assert line.endswith(f"ckpt_path=last hydra.sweep.dir={sweep}") and " -m " in line
    records = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(records) == 2 and all(r["error"] == line.replace(":", ";", 1) for r in records)


@pytest.mark.parametrize(
    "error, how",
    [
        (KeyboardInterrupt(), "Ctrl-C (SIGINT)"),
        (ValueError("a run's own error"), None),
        (SystemExit(2), None),
    ],
)
def test_what_stopped_a_command_is_read_from_the_error_and_its_context(error, how):
    assert interrupted_by(error) == how
    wrapped = SystemExit(1)  # what Lightning raises after it caught Ctrl-C
    wrapped.__context__ = error
    assert interrupted_by(wrapped) == how
    assert how is None or STOPPED_BY[how] == 128 + signal.SIGINT


def test_lightnings_sigterm_exception_is_sigterm():
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    assert interrupted_by(SIGTERMException()) == "SIGTERM" and STOPPED_BY["SIGTERM"] == 128 + signal.SIGTERM


def test_an_error_chain_that_links_back_is_walked_once():
    """Re-raising an error of its own chain (`raise user_error(e) from None`) makes the chain a cycle: reading what
    stopped the run still ends (it once looped forever in the Recorder of a run with a bad value)."""
    from src.common.errors import ConfigError, behind

    bad = ConfigError("cell.hidden_size=-1 must be positive")
    try:
        try:
            raise RuntimeError("wrapped") from bad
        except RuntimeError:
            raise bad from None  # its __context__ is now the RuntimeError, whose __cause__ is `bad`
    except ConfigError as e:
        assert [type(x).__name__ for x in behind(e)] == ["ConfigError", "RuntimeError"]
        assert interrupted_by(e) is None
