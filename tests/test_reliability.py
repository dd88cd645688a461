"""Reliability: determinism, divergence, wrong checkpoints, wrong task, atomic writes, secrets, exact DDP metrics."""

from __future__ import annotations

import json
import os
import pickle

import lightning as L
import pytest
import torch

from src.common.errors import ConfigError
from src.records.checkpoints import AtomicCheckpointIO
from src.runs.build import build, resume_checkpoint
from src.runs.callbacks import TrainingDiverged
from src.tasks.classify import SequenceClassifier
from src.train import train
from tests.conftest import run_cli


def test_same_config_and_seed_give_identical_metrics(cfg_factory, tmp_path):
    args = ["debug=limit", "trainer.deterministic=true", "seed=7"]
    first = train(cfg_factory(*args, out=tmp_path / "a"))
    second = train(cfg_factory(*args, out=tmp_path / "b"))
    for key in ("val/loss", "val/acc", "test/acc", "test/loss", "train/loss"):
        assert first[key] == second[key], key
    assert first["seed"] == 7 and json.loads((tmp_path / "a" / "metrics.json").read_text())["seed"] == 7
    other = train(cfg_factory(*args[:-1], "seed=8", out=tmp_path / "c"))
    assert other["val/loss"] != first["val/loss"]  # the seed does reach the run


class PoisonAtEpoch(L.Callback):
    """Makes the weights NaN at the start of the given epoch, as a diverging optimizer would."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            with torch.no_grad():
                for p in module.parameters():
                    p.fill_(float("nan"))


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(cfg_factory, tmp_path):
    cfg = cfg_factory("dataset=digits", "callbacks=default", "trainer.max_epochs=3")
    datamodule, model, trainer = build(cfg)
    trainer.callbacks.append(PoisonAtEpoch(1))
    with pytest.raises(TrainingDiverged, match="NaN or inf in epoch 1.*last good checkpoint") as diverged:
        trainer.fit(model, datamodule=datamodule)
    assert str(tmp_path / "checkpoints" / "last.ckpt") in str(diverged.value)  # a file that exists
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_diverged_run_is_recorded_as_failed(cfg_factory, tmp_path):
    with pytest.raises(TrainingDiverged):
        train(cfg_factory("dataset=digits", "optimizer=sgd", "optimizer.lr=1e30", "trainer.max_epochs=2"))
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "failed" and "NaN or inf" in record["error"]


def test_checkpoint_of_another_architecture_is_refused_naming_the_difference(cfg_factory, tmp_path):
    train(cfg_factory("debug=limit", "callbacks=default", "cell.hidden_size=16", out=tmp_path / "a"))
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"cell.hidden_size: checkpoint 16, this run 32"):
        resume_checkpoint(cfg_factory("debug=limit", "cell.hidden_size=32", f"ckpt_path={ckpt}", out=tmp_path / "b"))
    with pytest.raises(ConfigError, match=r"cell.mode: checkpoint 'lstm', this run 'gru'"):
        resume_checkpoint(
            cfg_factory("debug=limit", "cell=gru", "cell.hidden_size=16", f"ckpt_path={ckpt}", out=tmp_path / "c")
        )


def test_corrupt_or_foreign_checkpoint_is_refused(cfg_factory, tmp_path):
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot be loaded weights-only"):
        resume_checkpoint(cfg_factory(f"ckpt_path={garbage}"))
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ConfigError, match="not a checkpoint written by rnn-bench"):
        resume_checkpoint(cfg_factory(f"ckpt_path={foreign}"))


class Tagger(SequenceClassifier):
    kind = "tag"


def test_task_that_does_not_fit_the_data_set_is_refused(cfg_factory):
    with pytest.raises(ConfigError, match="'classify' data set but .* trains 'tag' models"):
        build(cfg_factory("task._target_=tests.test_reliability.Tagger"))


def test_unwritable_output_directory_is_a_clear_error(cfg_factory, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not writable.*hydra.run.dir"):
        train(cfg_factory(out=blocker / "run"))


def test_checkpoint_writes_are_atomic(tmp_path):
    path = tmp_path / "model.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(2)}, path)
    with pytest.raises((pickle.PicklingError, AttributeError)):  # which one depends on the pickler
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(2), "bad": lambda: 0}, path)  # fails mid-way
    assert torch.equal(torch.load(path, weights_only=True)["w"], torch.ones(2))  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["model.ckpt"]  # and no temporary file is left


def test_wandb_api_key_is_never_written(tmp_path):
    secret = "0123456789abcdef0123456789abcdef01234567"
    env_before = os.environ.get("WANDB_API_KEY")
    os.environ["WANDB_API_KEY"] = secret
    try:
        done = run_cli("debug=limit", "logger=many", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp_path}")
    finally:
        if env_before is None:
            os.environ.pop("WANDB_API_KEY")
        else:
            os.environ["WANDB_API_KEY"] = env_before
    assert done.returncode == 0, done.stderr[-2000:]
    assert list(tmp_path.glob("wandb/offline-run-*"))
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_ddp_test_metrics_equal_one_process_with_an_uneven_last_batch(tmp_path):
    """One checkpoint evaluated by 1 and by 2 processes: 500 test digits in batches of 33 (the last holds 5,
    split 3/2). Each sample is evaluated exactly once and torchmetrics syncs the counts: identical metrics."""
    train_dir = tmp_path / "train"
    done = run_cli(
        "debug=limit",
        "logger=none",
        "callbacks=default",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={train_dir}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ckpt = train_dir / "checkpoints" / "best.ckpt"
    common = [
        "train=false",
        f"ckpt_path={ckpt}",
        "debug=limit",
        "trainer.limit_test_batches=null",
        "dataset.eval_batch_size=33",
        "logger=none",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
    ]
    records = []
    for name, extra in (("one", []), ("two", ["trainer=ddp_sim"])):
        done = run_cli(*common, *extra, f"hydra.run.dir={tmp_path / name}")
        assert done.returncode == 0, done.stderr[-2000:]
        records.append(json.loads((tmp_path / name / "metrics.json").read_text()))
    one, two = records
    assert one["test/acc"] == two["test/acc"] and one["test/f1"] == two["test/f1"]
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6)


@pytest.mark.parametrize("updates", [1, 4])
def test_run_killed_mid_epoch_resumes_to_the_same_final_metrics(tmp_path, updates):
    """SIGKILL a run mid-epoch (checkpoints every 4 updates, atomically), resume from last.ckpt: the same final
    metrics as an uninterrupted run, since the resumed epoch continues the same seeded batch order (with 4 updates
    per Lightning step, 4 batches per step already taken are skipped)."""
    import subprocess
    import sys
    import time

    from tests.conftest import CACHE, ROOT

    common = [
        "dataset=digits",
        "trainer.max_epochs=2",
        "callbacks=default",
        "scheduler=none",
        "+callbacks.last_checkpoint.every_n_train_steps=4",
        "trainer.deterministic=true",
        "logger=none",
        "trainer.enable_progress_bar=false",
        # updates slow enough that the poll below sees a mid-epoch checkpoint before the second epoch ends (at the
        # default width a quiet machine once ran through it between two polls)
        "cell.hidden_size=256",
        *(["update=automatic"] if updates == 1 else ["update=graphed", f"update.per_step={updates}"]),
    ]
    whole = run_cli(*common, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-2000:]
    env = {**os.environ, "RNN_BENCH_CACHE": str(CACHE)}
    victim = subprocess.Popen(
        [sys.executable, "-m", "src.train", *common, f"hydra.run.dir={tmp_path / 'killed'}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    last, step, deadline = tmp_path / "killed" / "checkpoints" / "last.ckpt", 0, time.time() + 300
    steps_per_epoch = 20  # 1,293 training digits in batches of 64
    while step < steps_per_epoch + 4 and time.time() < deadline and victim.poll() is None:
        if last.exists():
            step = torch.load(last, weights_only=True)["global_step"]
        time.sleep(0.02)
    victim.kill()
    victim.wait()
    step = torch.load(last, weights_only=True)["global_step"]
    assert steps_per_epoch < step < 2 * steps_per_epoch and step % steps_per_epoch, step  # killed mid-epoch
    resumed = run_cli(*common, f"ckpt_path={last}", f"hydra.run.dir={tmp_path / 'resumed'}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (json.loads((tmp_path / run / "metrics.json").read_text()) for run in ("whole", "resumed"))
    for key in ("val/loss", "val/acc", "test/acc", "test/loss"):
        assert a[key] == b[key], key


@pytest.mark.parametrize("group", [1, 3])
def test_the_finite_loss_check_reads_its_flag_every_n_batches_however_many_a_step_trains(group):
    """every=4: with one batch a step the flag is read after batch 4 (not before); with steps of 3 batches
    (update=grouped) after the step that crosses batch 4, the second, not only every 4 steps (12 batches)."""
    from types import SimpleNamespace

    from src.runs.callbacks import FiniteLoss

    check = FiniteLoss(every=4)
    trainer = SimpleNamespace(current_epoch=0, global_step=0, checkpoint_callbacks=[])
    check.on_train_epoch_start(trainer, None)
    batch = [object()] * group if group > 1 else object()
    nan = {"loss": torch.tensor(float("nan"))}
    steps_before = {1: 3, 3: 1}[group]  # the steps that end before batch 4
    for step in range(steps_before):
        check.on_train_batch_end(trainer, None, nan, batch, step)  # not read yet
    with pytest.raises(TrainingDiverged, match="NaN or inf in epoch 0"):
        check.on_train_batch_end(trainer, None, nan, batch, steps_before)
