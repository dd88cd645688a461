"""End to end through src.train: every cell/direction/depth runs, training learns, metrics.json, resume, DDP,
multirun and W&B logging."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

from src.common.errors import ConfigError, DataError
from src.train import train
from tests.conftest import ROOT, run_cli

CELLS = ["rnn", "rnn_relu", "lstm", "gru"]
CONTRACT = {
    "dataset",
    "task",
    "cell",
    "depth",
    "direction",
    "truncation",
    "seed",
    "params",
    "monitor",
    "val/acc_best",
    "test/acc",
    "test/f1",
    "train_samples_per_s",
    "wall_s",
    "status",
}


def per_step(k: int) -> list[str]:
    """The update group's overrides for k optimizer updates per Lightning step: Lightning's loop for 1, else K
    batches per step around the graphed manual update (which runs as a plain manual update off a GPU)."""
    return ["update=automatic"] if k == 1 else ["update=graphed", f"update.per_step={k}"]


def read_metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("direction", ["uni", "bi"])
@pytest.mark.parametrize("depth", [1, 2])
def test_fast_dev_run_every_cell_direction_depth(cfg_factory, tmp_path, cell, direction, depth):
    cfg = cfg_factory("debug=fdr", f"cell={cell}", f"direction={direction}", f"depth={depth}", "cell.hidden_size=16")
    record = train(cfg)
    assert record["status"] == "ok" and 0.0 <= record["test/acc"] <= 1.0
    assert (record["cell"], record["direction"], record["depth"]) == (cell, direction, depth)
    assert read_metrics(tmp_path)["status"] == "ok"


def test_short_training_on_smnist5k_learns(cfg_factory):
    """6 epochs of LSTM-128 on 4,050 digits. Chance is 0.10; the full 30-epoch recipe reaches ~0.94 (docs/results.md).
    0.85 leaves room for seed noise on 500 test digits (1 sd ~ 1.5 points) while any real breakage (labels
    shuffled, no gradient through time, wrong summary step) lands far below it."""
    record = train(cfg_factory("trainer.max_epochs=6", "seed=1"))
    assert record["test/acc"] >= 0.85, record


def test_metrics_json_contract_and_best_checkpoint(cfg_factory, tmp_path):
    cfg = cfg_factory("debug=limit", "callbacks=default", "trainer.enable_progress_bar=true")
    returned = train(cfg)
    record = read_metrics(tmp_path)
    assert CONTRACT <= set(record), CONTRACT - set(record)
    assert record == json.loads(json.dumps(returned, default=str))
    assert record["status"] == "ok" and record["task"] == "classify" and record["monitor"] == "val/acc"
    assert record["params"] > 0 and record["train_samples_per_s"] > 0 and record["wall_s"] > 0
    assert record["tested_checkpoint"].endswith("checkpoints/best.ckpt")
    assert record["update"] == "grouped(manual, K=8)" and "update=auto: 8 off a GPU" in record["update_reason"]
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    assert (tmp_path / "csv" / "metrics.csv").exists()


def test_failure_is_recorded_in_metrics_json(cfg_factory, tmp_path):
    cfg = cfg_factory("dataset=smnist", f"dataset.data_dir={tmp_path / 'missing'}")
    with pytest.raises(DataError):
        train(cfg)
    record = read_metrics(tmp_path)
    assert record["status"] == "failed" and "does not exist" in record["error"]
    assert record["dataset"] == "smnist" and record["cell"] == "lstm"


@pytest.mark.parametrize("updates", [1, 3])
def test_resume_from_last_checkpoint_matches_uninterrupted_run(cfg_factory, tmp_path, updates):
    """From the end-of-epoch checkpoint (with 3 updates per step: 8 batches an epoch in steps of 3, 3, 2)."""
    common = [
        "callbacks=default",
        "scheduler=none",
        "trainer.deterministic=true",
        "trainer.limit_train_batches=8",
        "cell.hidden_size=32",
        *per_step(updates),
    ]
    whole = train(cfg_factory(*common, "trainer.max_epochs=3", out=tmp_path / "whole"))
    train(cfg_factory(*common, "trainer.max_epochs=2", out=tmp_path / "first"))
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    resumed = train(cfg_factory(*common, "trainer.max_epochs=3", f"ckpt_path={last}", out=tmp_path / "resumed"))
    assert resumed["epochs"] == whole["epochs"] == 3
    for key in ("val/loss", "val/acc", "val/acc_best"):
        assert resumed[key] == pytest.approx(whole[key], abs=1e-6), key
    # The same weights at the end: the data order, optimizer state and step count were all restored.
    final = [
        torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run in ("whole", "resumed")
    ]
    assert final[0].keys() == final[1].keys()
    for name in final[0]:
        torch.testing.assert_close(final[1][name], final[0][name], rtol=0, atol=1e-6)


def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """The global batch is split across processes and gradients averaged: the same optimisation as one process,
    and evaluation covers each sample once, so the synced test metrics are the same."""
    args = [
        "trainer.max_epochs=2",
        "logger=csv",  # under ddp_spawn each phase logs from a copy of the logger
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "cell.hidden_size=32",
    ]
    single = run_cli(*args, f"hydra.run.dir={tmp_path / 'one'}")
    ddp = run_cli(*args, "trainer=ddp_sim", f"hydra.run.dir={tmp_path / 'ddp'}")
    assert single.returncode == 0, single.stderr[-3000:]
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one, two = read_metrics(tmp_path / "one"), read_metrics(tmp_path / "ddp")
    assert two["status"] == "ok"
    with open(tmp_path / "ddp" / "csv" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r["train/loss"] for r in rows) and any(r["test/acc"] for r in rows)
    assert two["test/acc"] == pytest.approx(one["test/acc"], abs=0.01)
    assert two["test/loss"] == pytest.approx(one["test/loss"], rel=0.02)
    # Several updates per Lightning step under DDP: the same training as one per step.
    grouped = run_cli(*args, "trainer=ddp_sim", *per_step(3), f"hydra.run.dir={tmp_path / 'ddp3'}")
    assert grouped.returncode == 0, grouped.stderr[-3000:]
    three = read_metrics(tmp_path / "ddp3")
    assert three["test/acc"] == two["test/acc"] and three["test/loss"] == pytest.approx(two["test/loss"], rel=1e-5)


# A DDP process as a spawned rank is, its gloo group up: is the group still up once the process's exit hooks ran?
RANK = """
import atexit, sys, torch.distributed as dist
from src.runs.callbacks import EndProcessGroup

atexit.register(lambda: print(dist.is_initialized()))  # registered first, so run last
dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0, world_size=1)
if sys.argv[2] == "suite":
    EndProcessGroup().setup(None, None, "fit")  # what the suite's Trainer calls in each DDP process
"""


@pytest.mark.parametrize("callbacks, up", [("suite", "False"), ("none", "True")])
def test_a_ddp_process_ends_its_process_group_at_exit(tmp_path, callbacks, up):
    """Lightning ends only NCCL's group at exit; a gloo group left to the interpreter's teardown has aborted a DDP
    process after its training (SIGABRT, "terminate called without an active exception"): the suite ends it."""
    done = subprocess.run(
        [sys.executable, "-c", RANK, str(tmp_path / "store"), callbacks], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == up


def test_multirun_through_the_command_line(tmp_path):
    done = run_cli(
        "-m",
        "cell=rnn,gru",
        "debug=limit",
        "logger=csv",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={tmp_path}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    records = [read_metrics(path.parent) for path in sorted(tmp_path.glob("*/metrics.json"))]
    assert sorted(r["cell"] for r in records) == ["gru", "rnn"]
    assert {path.parent.name.split(",")[0] for path in tmp_path.glob("*/metrics.json")} == {"callbacks=none"}
    assert all(r["status"] == "ok" for r in records)
    assert done.stdout.count("run dir:") == 2


def test_wandb_offline_run_with_nested_config_group_and_tags(cfg_factory, tmp_path, monkeypatch):
    import wandb

    import src.train

    seen = {}
    finish = src.train._finish_wandb

    def capture_then_finish():
        if wandb.run is not None:
            seen.update(
                config=dict(wandb.run.config),
                tags=list(wandb.run.tags),
                group=wandb.run.group,
                offline=wandb.run.settings._offline,
                job_type=wandb.run.job_type,
                summary={k: wandb.run.summary[k] for k in ("val/acc", "val/acc_best", "test/acc")},
            )
        finish()

    monkeypatch.setattr(src.train, "_finish_wandb", capture_then_finish)
    train(cfg_factory("debug=limit", "logger=wandb", "cell=gru", "depth=2"))
    assert seen["offline"] and list(tmp_path.glob("wandb/offline-run-*"))
    assert seen["group"] == "smnist5k"
    assert {"dataset=smnist5k", "cell=gru", "depth=2", "direction=uni", "truncation=none"} <= set(seen["tags"])
    config = seen["config"]
    assert config["task"]["_target_"] == "src.tasks.classify.SequenceClassifier"  # nested, not flattened
    assert config["cell"]["hidden_size"] == 128 and config["params"] > 0 and config["seed"] == 42
    assert config["run"]["cell"] == "gru" and config["run"]["dataset"] == "smnist5k"  # to group by on W&B
    assert seen["job_type"] == "train" and "sweep=none" in seen["tags"]  # in a sweep: its name (sweep_name)
    summary = seen["summary"]  # the monitored metric keeps its best beside its last value (WandbSummary)
    assert summary["val/acc"]["max"] == pytest.approx(summary["val/acc_best"]) and 0 <= summary["test/acc"] <= 1
    assert wandb.run is None  # finished: the next job in a multirun gets a run of its own


def test_callbacks_none_writes_no_checkpoint(cfg_factory, tmp_path):
    """callbacks=none means no checkpoint at all (Lightning would otherwise add its own ModelCheckpoint), and
    the test split is evaluated with the final weights."""
    out = tmp_path / "run"
    cfg = cfg_factory("dataset=digits", "trainer.max_epochs=1", "trainer.limit_train_batches=3", out=out)
    train(cfg)
    assert not list(out.rglob("*.ckpt"))
    assert json.loads((out / "metrics.json").read_text())["tested_checkpoint"] == "final weights"


# -- several optimizer updates per Lightning step (update=grouped / graphed) ------------------------------------------------
def fit_weights(cfg) -> tuple[list[torch.Tensor], L.Trainer]:
    from src.runs.build import build

    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    return [p.detach().clone() for p in model.parameters()], trainer


@pytest.mark.parametrize(
    "setting",
    [
        ["dataset=smnist5k", "task.scheduler_interval=step"],  # a per-update LR schedule
        ["dataset=smnist5k", "truncation=tbptt", "truncation.steps=10"],  # several updates per batch
        ["experiment=sin2cos_lstm", "truncation.steps=25"],  # a state carried from batch to batch
        ["experiment=seq2seq_reverse", "cell.hidden_size=32"],  # a task with its own loss path
    ],
    ids=["classify", "tbptt", "stream", "seq2seq"],
)
def test_several_updates_per_step_train_exactly_as_one(cfg_factory, tmp_path, setting):
    """3 updates per Lightning step over 8 batches an epoch (steps of 3, 3, 2): the same updates in the same order
    as one per step, so the same weights, bit for bit; global_step counts updates; Throughput every sample. One
    per step: automatic (truncated with tbptt); three: grouped around graphed-manual (around truncated)."""
    common = [
        *setting,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=8",
        "trainer.limit_val_batches=2",
        "test=false",
        "update.gradient_clip_val=0.5",
    ]
    full_bptt = cfg_factory(*common).truncation.mode == "none"
    one_update, grouped = (
        (["update=automatic"], per_step(3))
        if full_bptt
        else (["update=truncated"], ["update=grouped", "update.per_step=3"])
    )
    one, one_trainer = fit_weights(cfg_factory(*common, *one_update, out=tmp_path / "one"))
    three, trainer = fit_weights(cfg_factory(*common, *grouped, out=tmp_path / "three"))
    assert trainer.lightning_module.update.per_step == 3 and not trainer.lightning_module.automatic_optimization
    assert trainer.global_step == one_trainer.global_step
    for a, b in zip(one, three):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
    # Lightning counts steps: a group of 3 batches is one (3, 3, 2 an epoch); its limit_train_batches=8 counted
    # batches, as with one update per step, because the loader applied it (src/data/tensors.py BatchGroups)
    loops = one_trainer.fit_loop.epoch_loop, trainer.fit_loop.epoch_loop
    assert loops[0].batch_progress.total.completed == 16 and loops[1].batch_progress.total.completed == 6
    throughput = next(c for c in trainer.callbacks if type(c).__name__ == "Throughput")
    clock = next(c for c in one_trainer.callbacks if type(c).__name__ == "Throughput")
    assert throughput.samples == clock.samples > 0
    # the record's train/loss is the epoch's last batch's (not its group's mean), as with one update per step
    assert trainer.callback_metrics["train/loss"] == one_trainer.callback_metrics["train/loss"]


@pytest.mark.parametrize("every", [1, 4])
def test_several_updates_per_step_log_the_curves_of_one(cfg_factory, tmp_path, every):
    """The loggers' step counts batches with groups too: the CSV curves of 3 updates per step over 7 batches an
    epoch (3, 3, 1) hold the same rows, at the same steps, with the same values, as one update per step's (the
    throughput aside), train/loss every `every` batches, validation and test where one per step has them."""
    from src.train import train

    common = ["dataset=digits", "cell=gru", "cell.hidden_size=8", "logger=csv", "trainer.max_epochs=2"]
    common += ["trainer.limit_train_batches=7", "trainer.limit_val_batches=1", f"trainer.log_every_n_steps={every}"]
    curves = []
    for k in (1, 3):
        out = tmp_path / f"k{k}"
        train(cfg_factory(*common, *per_step(k), out=out))
        with open(out / "csv" / "metrics.csv") as f:
            rows = [{k: v for k, v in row.items() if v and not k.startswith("perf/")} for row in csv.DictReader(f)]
        curves.append(rows)
    one, three = curves
    assert [r["step"] for r in one if "train/loss" in r] == [str(i) for i in range(14) if (i + 1) % every == 0]
    assert three == one


@pytest.mark.parametrize("limit", [8, 0.5, None])
def test_the_epoch_is_counted_in_batches_with_several_updates_per_step(cfg_factory, limit):
    """trainer.limit_train_batches counts batches with update=grouped too, as Lightning counts them with one per
    step: an int caps them, a fraction takes int(share * batches)."""
    limit_arg = [] if limit is None else [f"trainer.limit_train_batches={limit}"]
    cfg = cfg_factory(
        *["dataset=digits", "dataset.batch_size=40", "update=grouped", "update.per_step=3", *limit_arg],
        *["trainer.max_epochs=1", "trainer.limit_val_batches=1", "test=false"],
    )
    _, trainer = fit_weights(cfg)
    batches = len(trainer.datamodule.train_dataloader().batches)  # the whole epoch's
    updates = {8: 8, 0.5: int(batches * 0.5), None: batches}[limit]
    assert trainer.global_step == updates
    assert trainer.fit_loop.epoch_loop.batch_progress.total.completed == -(-updates // 3)  # Lightning's steps


def test_max_steps_stops_at_its_update_with_several_updates_per_step(cfg_factory):
    _, trainer = fit_weights(
        cfg_factory(*per_step(3), "trainer.max_steps=4", "trainer.limit_val_batches=1", "test=false")
    )
    assert trainer.global_step == 4


def test_updates_per_step_auto_and_bad_values(cfg_factory):
    from src.runs.build import update_strategy

    def updates_per_step(cfg):
        return update_strategy(cfg).setting("per_step", 1)

    assert updates_per_step(cfg_factory("trainer=cpu")) == 8
    assert updates_per_step(cfg_factory("trainer=cpu", "+update.per_step_off_gpu=1")) == 1
    gpu = cfg_factory("trainer=gpu")
    assert updates_per_step(gpu) == gpu["update"].per_step_on_gpu > 1
    assert updates_per_step(cfg_factory("trainer=gpu", "diagnostics=gradients")) == 1  # it watches single updates
    assert updates_per_step(cfg_factory("trainer=gpu", "trainer.accumulate_grad_batches=2")) == 1
    assert updates_per_step(cfg_factory("update=grouped", "update.per_step=5")) == 5
    for bad, words in (
        (["update=grouped", "update.per_step=0"], "positive integer"),
        (["update=grouped", "update.per_step=fast"], "update.per_step='fast' must be a positive integer"),
        (["update=grouped", "update.per_step=4", "diagnostics=gradients"], "set update.per_step=1"),
        (["update=grouped", "update.per_step=4", "trainer.accumulate_grad_batches=2"], "set one of them to 1"),
    ):
        with pytest.raises(ConfigError, match=words):
            updates_per_step(cfg_factory(*bad))


@pytest.mark.parametrize(
    "overrides, update, reason",
    [
        (["trainer=cpu"], "grouped(manual, K=8)", "update=auto: 8 off a GPU"),
        (["trainer=cpu", "+update.per_step_off_gpu=1"], "automatic", "update=auto: 1 off a GPU"),
        (["trainer=gpu"], "grouped(graphed(manual), K=8)", "update=auto: 8 on a GPU; graphed"),
        (["trainer=gpu", "update.graphed=false"], "grouped(manual, K=8)", "update=auto: 8 on a GPU"),
        (
            ["update=grouped", "update.per_step=3", "truncation=tbptt", "truncation.steps=7", "truncation.stride=5"],
            "grouped(truncated(k2=7, k1=5), K=3)",
            "update=grouped",
        ),
        (["truncation=tbptt", "truncation.steps=4", "update=truncated"], "truncated(k2=4", "update=truncated"),
    ],
    ids=["cpu", "cpu-one", "gpu", "gpu-no-graphs", "tbptt-grouped", "tbptt"],
)
def test_the_update_strategy_comes_from_the_config_with_its_reason(cfg_factory, overrides, update, reason):
    """One place (the update group, built by src.runs.build.update_strategy) gives the strategy; update=auto picks
    from truncation and the device; metrics.json records its `describe()` and `explain()`. Clipping is the
    strategy's for every strategy, and the trainer config is left as composed (it holds no clipping)."""
    from src.runs.build import update_choice, update_strategy

    cfg = cfg_factory(*overrides, "update.gradient_clip_val=0.5")
    strategy = update_strategy(cfg)
    assert strategy.describe().startswith(update) and strategy.explain(update_choice(cfg)) == reason
    assert strategy.automatic == (update == "automatic")
    assert "gradient_clip_val" not in cfg.trainer and "gradient_clip_algorithm" not in cfg.trainer
    assert strategy.setting("gradient_clip_val") == 0.5 and strategy.setting("gradient_clip_algorithm") == "norm"


def test_host_reads_in_a_loss_are_detected_on_cpu():
    """The graphed strategy's check for a loss a CUDA graph cannot record, run on this CPU machine: a loss that
    counts its targets with int(...) or .item() is caught; a loss that stays on the device is not."""
    import torch.nn.functional as F

    from src.updates.graphed import host_reads
    from tests.test_truncation import batches, make_task

    task, batch = make_task("lstm", None), batches()[0]
    assert host_reads(task, batch) == []
    task.loss = lambda p, b, t0, t1: (F.mse_loss(p, b.y[:, t0:t1]), int((b.y[:, t0:t1] > 0).sum()))
    assert host_reads(task, batch) == ["__int__"]
    task.loss = lambda p, b, t0, t1: (F.mse_loss(p, b.y[:, t0:t1]), b.y.numel() * b.y.abs().max().item())
    assert host_reads(task, batch) == ["item"]


def test_update_graphs_stay_off_where_not_exact_and_checkpoints_stay_portable(cfg_factory):
    """update=graphed on CPU: the update runs as usual, and says why; a checkpoint of a graphed run (optimizer made
    capturable, learning rate a tensor) is saved with plain settings that an optimizer on CPU accepts."""
    from src.updates.graphed import portable_optimizer_states

    weights, trainer = fit_weights(
        cfg_factory(
            *per_step(2),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=4",
            "trainer.limit_val_batches=1",
            "test=false",
        )
    )
    recorder = trainer.lightning_module.update.inner  # grouped(graphed(manual))
    assert recorder.off == "not on a GPU" and not recorder.graphs and trainer.global_step == 4
    explained = trainer.lightning_module.update.explain("update=graphed")  # metrics.json `update_reason`
    assert explained == "update=graphed; graphs off: not on a GPU"
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters(), lr=torch.tensor(0.01), capturable=True)
    checkpoint = {"optimizer_states": [opt.state_dict()]}
    portable_optimizer_states(checkpoint)
    group = checkpoint["optimizer_states"][0]["param_groups"][0]
    assert group["capturable"] is False and group["lr"] == pytest.approx(0.01) and not torch.is_tensor(group["lr"])
    fresh = torch.optim.Adam(net.parameters(), lr=0.5)
    fresh.load_state_dict(checkpoint["optimizer_states"][0])
    net(torch.ones(1, 2)).sum().backward()
    fresh.step()  # a capturable Adam on CPU would refuse
    with pytest.raises(ConfigError, match="update.graphed"):
        fit_weights(cfg_factory("update=auto", "update.graphed=sometimes"))


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ([], None),  # the benchmark's setting: fused LSTM, Adam, fp32, one process
        (["cell=gru_v1"], "loop cell"),
        (["optimizer=sgd"], "SGD cannot be captured"),
        (["depth=2", "stack.dropout=0.2"], "dropout"),
        (["trainer.precision=64-true"], "precision"),
        (["experiment=seq2seq_reverse", "cell.hidden_size=16"], "loss reads values back to the host (__int__"),
    ],
    ids=["captured", "loop-cell", "sgd", "dropout", "float64", "host-count"],
)
def test_update_graphs_are_used_only_where_exact(cfg_factory, overrides, reason):
    """The conditions a GPU run's update graphs are checked against (src/updates/graphed.py), on this CPU
    machine: a trained module is made to look as if it were on a GPU, so only the condition under test differs.
    A loss's host reads are detected by running it once (seq2seq counts its targets with int(...))."""
    from src.updates.graphed import Graphed

    _, trainer = fit_weights(
        cfg_factory(
            *overrides,
            *per_step(2),
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "test=false",
        )
    )
    task = trainer.lightning_module
    batch = next(iter(trainer.datamodule.batches("train", True, None)))  # one batch (the loader hands groups)
    task._device = torch.device("cuda", 0)
    graphed = task.update.inner
    assert isinstance(graphed, Graphed)
    why = graphed.why_not(batch)
    assert why is None if reason is None else reason in why, why


@pytest.mark.parametrize("stop", [3, 7], ids=["mid-epoch", "epoch-end"])
def test_resume_with_several_updates_per_step_continues_the_same_batches(cfg_factory, tmp_path, stop):
    """A checkpoint written after a step of 3 updates (on_train_batch_end: mid-epoch, or the epoch's last step),
    resumed: the same batches in the same order as an uninterrupted run, the same update count, and Throughput
    counts only the batches trained after resuming."""
    from src.runs.build import build

    class Stop(Exception):
        pass

    class SaveAndStop(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == stop:
                trainer.save_checkpoint(tmp_path / "step.ckpt")
                raise Stop

    def run(callback=None, ckpt=None):
        datamodule, model, trainer = build(
            cfg_factory(
                *per_step(3),
                "trainer.max_epochs=2",
                "trainer.limit_train_batches=7",
                "scheduler=none",
                "trainer.limit_val_batches=1",
                "test=false",
                out=tmp_path / "run",
            )
        )
        inner = model.update.inner  # the strategy that trains each batch of a grouped step
        seen, train_on = [], inner.train_on
        inner.train_on = lambda batch: seen.append(batch.y[:8].tolist()) or train_on(batch)
        trainer.callbacks += [callback] if callback else []
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        except Stop:
            pass
        throughput = next(c for c in trainer.callbacks if type(c).__name__ == "Throughput")
        return seen, trainer.global_step, throughput.samples

    whole, updates, _ = run()
    first, _, _ = run(SaveAndStop())
    rest, resumed_updates, samples = run(ckpt=str(tmp_path / "step.ckpt"))
    assert first + rest == whole and resumed_updates == updates == 14
    assert samples == len(rest) * 128
