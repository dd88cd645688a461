"""Every bad value is one line and exit 2: the suite's own checks, the values torch, Lightning and Hydra refuse,
and the settings they would accept and act on wrongly (a silently wrong result is worse than an error)."""

from __future__ import annotations

import json

import pytest
import torch

from src.common.errors import ConfigError, UserError
from src.runs.build import build
from src.runs.commands import one_line, options_first
from src.train import train
from tests.conftest import run_cli

QUICK = ["dataset=digits", "debug=limit"]

REFUSED = {
    # values torch refuses, checked before any data is loaded
    "optimizer.lr=-1": "optimizer.lr=-1 must be > 0",
    "optimizer.lr=abc": "optimizer: torch.optim.adam.Adam(lr='abc'",
    "optimizer.weight_decay=-1": "Invalid weight_decay",
    # an on/off setting torch would take any value's truth of (fused=abc ran fused)
    "+optimizer.fused=abc": "optimizer.fused='abc' is not a switch: give true, false or null",
    "optimizer=sgd +optimizer.nesterov=1": "optimizer.nesterov=1 is not a switch: give true or false",
    "scheduler.T_max=0": "scheduler: torch.optim.lr_scheduler.CosineAnnealingLR(T_max=0)",
    "scheduler=step scheduler.step_size=0": "StepLR(step_size=0",
    # values Lightning refuses (or would accept and act on wrongly)
    "trainer.precision=13": "trainer: Precision 13 is invalid",
    "trainer.devices=abc": "trainer:",
    "trainer.max_epochs=abc": "trainer.max_epochs='abc' must be an integer",
    "update.gradient_clip_val=-1": "update.gradient_clip_val=-1 must be a finite number >= 0",
    "trainer.limit_train_batches=0": "0 would train nothing",
    "trainer.log_every_n_steps=0": "trainer.log_every_n_steps=0 must be a positive integer",
    "seed=-1": "seed=-1 must be an integer in [0, 2**32)",
    # the suite's own values
    "dataset.val_fraction=abc": "dataset.val_fraction='abc' must be between 0 and 0.5",
    "dataset.split_seed=abc": "dataset.split_seed='abc' must be an integer >= 0",
    "+dataset.on_device=maybe": "dataset.on_device='maybe' must be true or false",
    "truncation=tbptt truncation.carry_across_batches=maybe": "must be true or false",
    "truncation=tbptt truncation.carry_across_batches=true": "needs a stream data set",
    "task.monitor_mode=min": "the best checkpoint would be the worst epoch; set task.monitor_mode=max",
    "+task.bogus=1": "task: RecurrentTask.__init__() got an unexpected keyword argument 'bogus'",  # (spec handed)
    "embedding=word2vec": "embedding.kind=word2vec sets the initial vectors of tokens",
    "diagnostics=gradients diagnostics.samples=0": "diagnostics.samples=0 must be a positive integer",
    "dataset.eval_batch_size=0": "dataset.eval_batch_size=0 must be a positive integer",
    "dataset=sine dataset.length=abc": "dataset.length='abc' must be an integer >= 2",
    "test=maybe": "test='maybe' must be true or false",
    "train=false": "without one it would test an untrained model",
    "+foo=1": "foo: no such top-level setting",
    # a data set that does not import: the data set's own message, whatever the update groups (8 a step by default)
    "dataset._target_=no.such.Module": "dataset: Error loading 'no.such.Module'",
    "dataset._target_=no.such.Module update=grouped": "dataset: Error loading 'no.such.Module'",
    "callbacks=early_stopping callbacks.early_stopping.patience=abc": "patience='abc' must be an integer >= 0",
    # the update group (conf/update/) and the settings it replaced
    "update.gradient_clip_algorithm=sideways": "update.gradient_clip_algorithm='sideways' must be norm or value",
    "update=grouped update.per_step=0": "update.per_step=0 must be a positive integer",
    "update=truncated": "update=truncated needs truncation=tbptt",
    "update=manual truncation=tbptt": "truncation=tbptt but update=manual runs full-BPTT updates",
    "update=graphed truncation=tbptt": "truncation=tbptt but update=graphed runs full-BPTT updates",
    "update=grouped update.gradient_clip_val=0.5 update.inner.gradient_clip_val=0.2": "set it once, as update.gradient_clip_val",
    "update=manual trainer.accumulate_grad_batches=2": "trainer.accumulate_grad_batches=2 cannot be combined with update=manual",
    "+updates_per_step=4": "updates_per_step is no longer a setting",
    "+trainer.gradient_clip_val=1": "trainer.gradient_clip_val is no longer a setting",
    # the documented ranges (src/runs/ranges.py, issue 25 class 4): refused before the run dir is claimed
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


@pytest.mark.parametrize("override", sorted(REFUSED))
def test_bad_value_is_one_config_error_naming_it(cfg_factory, tmp_path, override):
    with pytest.raises(UserError) as refused:
        train(cfg_factory(*QUICK, *override.split()))
    message = str(refused.value)
    assert REFUSED[override] in message and "\n" not in message, message
    record = json.loads((tmp_path / "metrics.json").read_text())  # the dir was free: the failure is recorded
    assert record["status"] == "failed" and REFUSED[override] in record["error"]
    assert "epochs" not in record  # refused before training: nothing recorded as trained


@pytest.mark.parametrize("override", ["trainer=gpu", "trainer.accelerator=cuda", "trainer=gpu_pool"])
def test_a_gpu_asked_for_where_torch_sees_none_is_one_line_naming_the_fix(cfg_factory, tmp_path, monkeypatch, override):
    """(Lightning's own words, "No supported gpu backend found!", name neither the setting nor the way out.) The
    machine is made GPU-less for torch, so this runs the same on a GPU machine."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError) as refused:
        train(cfg_factory(*QUICK, override))
    message = str(refused.value)
    assert message.startswith("trainer.accelerator=") and "torch sees no GPU" in message, message
    assert "run on the CPU with trainer=cpu" in message and "\n" not in message
    assert json.loads((tmp_path / "metrics.json").read_text())["status"] == "failed"


def test_a_checkpoint_of_other_data_is_refused_when_resuming(cfg_factory, tmp_path):
    """Same config, other data (here: another number of classes): the weights would load into a model of
    another shape, or silently mean something else."""
    train(cfg_factory(*QUICK, "callbacks=default", out=tmp_path / "a"))
    datamodule, model, trainer = build(cfg_factory(*QUICK, out=tmp_path / "b"))
    model.spec = type(model.spec)(**{**model.spec.__dict__, "num_classes": 7})
    with pytest.raises(ConfigError, match=r"trained on other data: num_classes: checkpoint 10, this run's data 7"):
        trainer.fit(
            model, datamodule=datamodule, ckpt_path=str(tmp_path / "a" / "checkpoints" / "last.ckpt"), weights_only=True
        )


def test_the_command_line_says_one_line_and_exits_2(tmp_path):
    for args, expected in (
        (["cell=nope"], "Could not find 'cell/nope'; Available options in 'cell': "),
        (["cell.nope=1"], "Could not override 'cell.nope'"),
        (["optimizer.lr=-1"], "optimizer.lr=-1 must be > 0"),
        (["trainer.gradient_clip_val=1"], "use update.gradient_clip_val"),
        ([f"hydra.run.dir={tmp_path / 'file' / 'x'}"], "cannot be created or written"),
        (["--bogus"], "unrecognized arguments: --bogus (--help lists the options)"),
        (["cell=gru", "-m", "--cfg", "job"], "Only one of --run, --multirun, --cfg"),
        (["cell=gru", "--cfg"], "argument --cfg/-c: invalid choice: 'debug=limit'"),  # the next word is its value
    ):
        (tmp_path / "file").write_text("a file where a folder should be")
        done = run_cli(
            *args, "debug=limit", *([] if "hydra.run.dir" in args[0] else [f"hydra.run.dir={tmp_path / 'run'}"])
        )
        lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], (args, done.stderr[-2000:])
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "typed, read",
    [
        ("cell=gru -m seed=1,2", "-m cell=gru seed=1,2"),
        ("-m seed=1,2", "-m seed=1,2"),
        ("a=1 --cfg job b=2", "--cfg job a=1 b=2"),
        ("a=1 --cfg=job b=2", "--cfg=job a=1 b=2"),
        ("a=1 --config-name x --multirun b=1,2", "--config-name x --multirun a=1 b=1,2"),
        ("a=1 --info defaults b=2", "--info defaults a=1 b=2"),
        ("--info a=1 b=2", "a=1 b=2 --info"),  # bare: last, so that it takes no override for its value
        ("a=1 --cfg", "a=1 --cfg"),  # no value: argparse says so
        ("a=1 --nope b=2", "--nope a=1 b=2"),
    ],
)
def test_hydras_options_are_read_wherever_they_stand(typed, read):
    assert options_first(typed.split()) == read.split()


def test_a_multirun_flag_after_overrides_runs_the_multirun(tmp_path):
    # what `make train ARGS="cell=gru -m seed=1,2"` types: Hydra's argparse alone would leave seed=1,2 unread
    done = run_cli("logger=csv", "debug=limit", "-m", "seed=1,2", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
        "debug=limit,logger=csv,seed=1",
        "debug=limit,logger=csv,seed=2",
    ]


def test_hydras_report_is_joined_into_one_line():
    report = (
        "In 'config': Could not find 'cell/nope'\n\nAvailable options in 'cell':\n\tgru\n\tlstm\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf\n\n"
        "Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.\n"
    )
    assert one_line(report) == "In 'config': Could not find 'cell/nope'; Available options in 'cell': gru, lstm"


def test_a_long_list_of_options_is_cut_to_the_closest_names():
    cells = ["attention", "gru", "gru_ref", "indrnn", "lru", "lstm", "lstm_ref", "lstmp", "mamba", "rnn", "slstm"]
    report = "In 'config': Could not find 'cell/lstn'\nAvailable options in 'cell':\n" + "\n".join(cells) + "\n"
    line = one_line(report)
    assert line.startswith("In 'config': Could not find 'cell/lstn'; Available options in 'cell': lstm, ")
    assert "the closest of 11; --help lists them all" in line and "attention" not in line
    nothing_close = one_line(report.replace("cell/lstn", "cell/zzzzzz"))
    assert nothing_close.endswith(
        "Available options in 'cell': attention, gru, gru_ref, indrnn, lru, lstm, lstm_ref, lstmp, ... (11; --help "
        "lists them all)"
    )
