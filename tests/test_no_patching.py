"""Nothing is reassigned at run time: a run's task, Trainer, data module and torch modules keep the methods their
classes give them, and the composed config is only read (src/runs/build.py takes what it needs as arguments)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from torchmetrics import Metric

from src.runs.build import build
from src.train import train

SMALL = [
    "dataset=digits",
    "cell.hidden_size=8",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=1",
    "trainer.max_epochs=1",
]


def instance_callables(obj) -> dict[str, object]:
    """What an instance holds of its own that is callable (a method or function put on it): none of its class's."""
    return {k: v for k, v in vars(obj).items() if callable(v) and not isinstance(v, type) and not hasattr(v, "forward")}


def watched(datamodule, model, trainer) -> dict[str, object]:
    objects = {"datamodule": datamodule, "task": model, "trainer": trainer}
    # torchmetrics wraps each metric's own update and compute on the instance by design: not the suite's doing
    objects |= {f"module {name}": m for name, m in model.named_modules() if name and not isinstance(m, Metric)}
    return objects


@pytest.mark.parametrize(
    "overrides",
    [
        ["update=automatic", "update.gradient_clip_val=0.5"],
        ["update=manual"],
        ["truncation=tbptt", "truncation.steps=4"],
        ["update=grouped", "update.per_step=3"],
    ],
    ids=["automatic-clipped", "manual", "truncated", "grouped"],
)
def test_a_run_replaces_no_method_on_any_instance(cfg_factory, overrides):
    cfg = cfg_factory(*SMALL, *overrides)
    datamodule, model, trainer = build(cfg)
    before = {name: instance_callables(obj) for name, obj in watched(datamodule, model, trainer).items()}
    trainer.fit(model, datamodule=datamodule)
    trainer.test(model, datamodule=datamodule)
    after = {name: instance_callables(obj) for name, obj in watched(datamodule, model, trainer).items()}
    assert after == before
    # and nothing the classes define was shadowed on an instance, before or after
    for name, obj in watched(datamodule, model, trainer).items():
        shadowed = sorted(k for k in instance_callables(obj) if callable(getattr(type(obj), k, None)))
        assert not shadowed, f"{name}: {shadowed}"


def test_the_composed_config_is_only_read_also_when_resuming(cfg_factory):
    assert train(cfg_factory(*SMALL, "callbacks=default"))["status"] == "ok"
    # resumed in the same dir: the checkpoint `last` names and the run dir's W&B id reach the run as arguments
    cfg = cfg_factory(*SMALL, "callbacks=default", "trainer.max_epochs=2", "ckpt_path=last")
    composed = OmegaConf.to_container(cfg, resolve=False)
    record = train(cfg)
    assert record["status"] == "ok" and record["epochs"] == 2 and record.get("resumed")
    assert OmegaConf.to_container(cfg, resolve=False) == composed
