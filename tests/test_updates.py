"""The update group (conf/update/): every option composes and trains, update=auto records what it picked and why,
clipping is the strategy's and the same under automatic and manual optimization, the settings it replaced are
refused by name, and a new strategy is one Python file plus one yaml, found through Hydra's search path."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from src.common.errors import ConfigError
from src.runs.build import build, moved_setting, update_choice
from src.train import train
from src.updates.schedules import fused_on_cpu
from tests.conftest import run_cli

SMALL = ["dataset=digits", "cell.hidden_size=16", "trainer.limit_val_batches=1", "test=false"]


@pytest.mark.parametrize(
    "overrides, update, reason",
    [
        ([], "grouped(manual, K=8)", "update=auto: 8 off a GPU"),
        (
            ["truncation=tbptt", "truncation.steps=4"],
            "grouped(truncated(k2=4, k1=4), K=8)",
            "update=auto: 8 off a GPU; truncation=tbptt",
        ),
        (["+update.per_step_off_gpu=1"], "automatic", "update=auto: 1 off a GPU"),
        (["diagnostics=gradients"], "automatic", "update=auto: 1 with diagnostics"),
        (["update=automatic"], "automatic", "update=automatic"),
        (["update=manual"], "manual", "update=manual"),
        (["update=truncated", "truncation=tbptt", "truncation.steps=4"], "truncated(k2=4, k1=4)", "update=truncated"),
        (["update=grouped", "update.per_step=2"], "grouped(manual, K=2)", "update=grouped"),
        (
            ["update=grouped", "update.per_step=2", "truncation=tbptt", "truncation.steps=4"],
            "grouped(truncated(k2=4, k1=4), K=2)",
            "update=grouped",
        ),
        (
            ["update=graphed", "update.per_step=2"],
            "grouped(graphed(manual), K=2)",
            "update=graphed; graphs off: not on a GPU",
        ),
    ],
    ids=[
        "auto",
        "auto-tbptt",
        "auto-one",
        "auto-diagnostics",
        "automatic",
        "manual",
        "truncated",
        "grouped",
        "grouped-tbptt",
        "graphed",
    ],
)
def test_each_update_option_composes_trains_and_is_recorded(cfg_factory, tmp_path, overrides, update, reason):
    """Each option trains 4 updates (a step of 2 batches counts 2) with clipping on, and metrics.json says which
    strategy ran and why (update=auto: what it picked from the device and the truncation group)."""
    cfg = cfg_factory(*SMALL, *overrides, "update.gradient_clip_val=0.5", "trainer=cpu", "trainer.max_steps=4")
    record = train(cfg)
    stored = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == stored["status"] == "ok"
    assert stored["update"] == update and stored["update_reason"] == reason, stored
    assert "gradient_clip_val" not in cfg.trainer  # the composed trainer config is what the Trainer got


def test_auto_groups_batches_only_where_the_data_module_can(cfg_factory):
    """update=auto on a GPU groups batches only with a data module whose loader hands groups (the suite's
    TensorDataModule); another data module gets one update per step and the reason, not update=grouped's error.
    (Composed for a GPU, nothing trained: picking reads only the config.)"""
    from src.runs.build import groups_batches, update_strategy

    assert groups_batches(cfg_factory("dataset=digits")) and groups_batches(cfg_factory("dataset=news_zh"))
    assert update_strategy(cfg_factory("trainer=gpu", "dataset=digits")).describe().startswith("grouped(")
    own = ["dataset=digits", "dataset._target_=lightning.pytorch.demos.boring_classes.BoringDataModule"]
    assert not groups_batches(cfg_factory(*own))
    strategy = update_strategy(cfg_factory("trainer=gpu", *own))
    assert strategy.describe() == "automatic"
    assert strategy.reason == "update=auto: 1: the data module hands single batches, not groups"
    assert groups_batches(cfg_factory("dataset=digits", "dataset._target_=no.such.Module"))  # its build reports it
    assert update_strategy(cfg_factory("trainer=cpu", *own)).reason.endswith("hands single batches, not groups")


@pytest.mark.parametrize(
    "overrides, update, because",
    [
        (["+trainer.val_check_interval=10"], "automatic", "trainer.val_check_interval=10 would fall inside a step"),
        (["+trainer.val_check_interval=0.5"], "automatic", "trainer.val_check_interval=0.5 would fall inside"),
        (["+callbacks.last_checkpoint.every_n_train_steps=100"], "automatic", "every_n_train_steps=100 would"),
        (["+trainer.val_check_interval=16"], "automatic", "val_check_interval=16 would fall inside"),  # 31 = 3x8+7
        (["+trainer.val_check_interval=1.0"], "grouped(manual, K=8)", "8 off a GPU"),
        (["trainer=gpu", "+trainer.val_check_interval=12"], "automatic", "val_check_interval=12 would fall inside"),
    ],
)
def test_auto_takes_one_batch_per_step_where_a_count_in_batches_would_fall_inside_a_group(
    cfg_factory, overrides, update, because
):
    """Validating after batch 16 where the config says 10 (or after an epoch's last, shorter group) would silently
    be another run: update=auto keeps one update per step then, and says why (update=grouped, chosen, rounds:
    docs/running.md). A whole epoch's interval (1.0, the default) groups."""
    from src.runs.build import update_strategy

    strategy = update_strategy(cfg_factory("dataset=digits", *overrides))
    assert strategy.describe() == update and because in strategy.reason, strategy.reason


def test_auto_groups_batches_off_a_gpu_too_and_refuses_bad_group_sizes():
    from src.updates.auto import pick

    assert pick(accelerator="cpu").describe() == "grouped(manual, K=8)"  # no CUDA graphs off a GPU
    assert pick(accelerator="cpu", per_step_off_gpu=3).describe() == "grouped(manual, K=3)"
    assert pick(accelerator="cpu", per_step_off_gpu=1).describe() == "automatic"
    for key in ("per_step_off_gpu", "per_step_on_gpu"):
        for bad in (0, -2, 1.5, True, "8"):
            with pytest.raises(ConfigError, match=rf"update\.{key}=.* must be a positive integer"):
                pick(accelerator="cpu", **{key: bad})


@pytest.mark.parametrize("algorithm", ["norm", "value"])
def test_clipping_is_the_same_under_automatic_and_manual_optimization(cfg_factory, tmp_path, algorithm):
    """One SGD step (no momentum, lr 1): the weights move by exactly the clipped gradient, so equal weights after
    the step are equal gradients after clipping. Lightning's hook (automatic) and the manual strategy clip alike,
    and the clip fired: the step's norm is the clip value (norm) or no entry exceeds it (value)."""
    clip = 1e-3

    def one_step(update: str):
        cfg = cfg_factory(
            *SMALL,
            f"update={update}",
            f"update.gradient_clip_val={clip}",
            f"update.gradient_clip_algorithm={algorithm}",
            "optimizer=sgd",
            "optimizer.lr=1.0",
            "optimizer.momentum=0.0",
            "scheduler=none",
            "trainer=cpu",
            "trainer.max_steps=1",
            out=tmp_path / update,
        )
        datamodule, model, trainer = build(cfg)
        before = [p.detach().clone() for p in model.parameters()]
        trainer.fit(model, datamodule=datamodule)
        return [(b - p.detach()) for b, p in zip(before, model.parameters())]  # lr 1: the clipped gradient

    automatic, manual = one_step("automatic"), one_step("manual")
    for a, m in zip(automatic, manual):
        torch.testing.assert_close(a, m, rtol=0, atol=1e-9)
    if algorithm == "norm":
        assert torch.linalg.vector_norm(torch.stack([g.norm() for g in automatic])) == pytest.approx(clip, rel=1e-4)
    else:
        assert max(float(g.abs().max()) for g in automatic) == pytest.approx(clip, rel=1e-4)


def test_the_settings_the_update_group_replaced_are_refused_by_name(cfg_factory):
    """updates_per_step, graph_updates and the Trainer's clipping: one line naming the replacement, from the
    command line (src.train's __main__ reads the overrides) and from a composed config (check_config)."""
    for override, replacement in (
        ("updates_per_step=3", "update=grouped update.per_step=K"),
        ("+graph_updates=false", "update=graphed (true) or update=grouped (false)"),
        ("trainer.gradient_clip_val=1.0", "update.gradient_clip_val"),
        ("++trainer.gradient_clip_algorithm=value", "update.gradient_clip_algorithm"),
    ):
        error = moved_setting([override])
        assert isinstance(error, ConfigError) and replacement in str(error) and "\n" not in str(error)
    assert moved_setting(["update.gradient_clip_val=1.0", "cell=gru"]) is None
    with pytest.raises(ConfigError, match="trainer.gradient_clip_val is no longer a setting.*update.gradient_clip_val"):
        train(cfg_factory(*SMALL, "+trainer.gradient_clip_val=1.0"))


def test_the_old_keys_on_the_command_line_are_one_line_and_exit_2(tmp_path):
    done = run_cli("updates_per_step=4", "graph_updates=false", f"hydra.run.dir={tmp_path}")
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode == 2 and len(lines) == 1 and "update=grouped update.per_step=K" in lines[0], done.stderr


def test_a_new_strategy_is_one_python_file_and_one_yaml(cfg_factory, tmp_path, monkeypatch):
    """A strategy written outside the repository (a module and conf/update/<name>.yaml in a temporary folder,
    found through hydra.searchpath): `update=<name>` builds and trains it, with no edit of the task, of auto.py or
    of src/train.py; its clipping settings are the update group's like every other strategy's."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "counting_update.py").write_text(
        textwrap.dedent(
            '''
            from src.updates.manual import Manual


            class Counting(Manual):
                """A manual update that counts the batches it trained on."""

                name = "counting"

                def __init__(self, every: int = 1, **clip):
                    super().__init__(**clip)
                    self.every, self.seen = every, 0

                def train_on(self, batch):
                    self.seen += 1
                    return super().train_on(batch)
            '''
        )
    )
    conf = tmp_path / "conf" / "update"
    conf.mkdir(parents=True)
    (conf / "counting.yaml").write_text(
        "_target_: counting_update.Counting\nevery: 2\ngradient_clip_val: null\ngradient_clip_algorithm: norm\n"
    )
    monkeypatch.syspath_prepend(str(code))
    cfg = cfg_factory(
        *SMALL,
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "update=counting",
        "update.gradient_clip_val=0.5",
        "trainer=cpu",
        "trainer.max_steps=3",
        out=tmp_path / "run",
    )
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert type(model.update).__name__ == "Counting" and model.update.every == 2
    assert model.update.seen == trainer.global_step == 3 and not model.automatic_optimization
    assert (
        model.update.setting("gradient_clip_val") == 0.5
        and model.update.explain(update_choice(cfg)) == "update=counting"
    )


@pytest.mark.parametrize(
    "overrides, fused, foreach",
    [
        (["optimizer=adam"], True, None),
        (["optimizer=adamw"], True, None),
        (["optimizer=sgd"], True, None),
        (["optimizer=adam", "+optimizer.fused=false"], False, None),
        (["optimizer=adam", "+optimizer.foreach=true"], None, True),
    ],
    ids=["adam", "adamw", "sgd", "fused-off", "foreach-chosen"],
)
def test_a_cpu_optimizer_is_torchs_fused_one_unless_the_config_chose(cfg_factory, overrides, fused, foreach):
    _, model, _ = build(cfg_factory(*SMALL, *overrides))
    optimizer = model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    group = optimizer.param_groups[0]
    assert (group["fused"], group["foreach"]) == (fused, foreach)


def test_the_fused_cpu_optimizer_updates_as_torchs_default_does(cfg_factory):
    """Same model, same batches: after 20 Adam updates the parameters differ by float rounding only."""
    trained = []
    for extra in ([], ["+optimizer.fused=false"]):
        torch.manual_seed(0)
        datamodule, model, _ = build(cfg_factory(*SMALL, "optimizer=adam", "update=automatic", *extra))
        optimizer = model.configure_optimizers()
        optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
        initial = [p.detach().clone() for p in model.parameters()]
        batch = next(iter(datamodule.train_dataloader()))
        for _ in range(20):
            optimizer.zero_grad()
            model.batch_loss(batch).backward()
            optimizer.step()
        trained.append([p.detach() for p in model.parameters()])
        assert max(float((p - q).abs().max()) for p, q in zip(trained[-1], initial)) > 1e-3  # it did train
    assert max(float((a - b).abs().max()) for a, b in zip(*trained)) < 1e-5


def test_fused_on_cpu_leaves_what_it_cannot_run_to_torch():
    real, complex_ = [torch.zeros(2, requires_grad=True)], [torch.zeros(2, dtype=torch.cfloat, requires_grad=True)]
    assert fused_on_cpu(torch.optim.Adam, real) == {"fused": True}
    assert fused_on_cpu(torch.optim.Adam, complex_) == {}  # the fused kernel takes real floats only
    assert fused_on_cpu(torch.optim.Adagrad, real) == {"fused": True}
    assert fused_on_cpu(torch.optim.RMSprop, real) == {}  # no fused kernel
    assert fused_on_cpu(lambda params: torch.optim.Adam(params), real) == {}  # nothing to read: as configured
