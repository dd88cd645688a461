"""seeds=[s1,s2,...]: the same configuration trained once per seed, in one process, as one stacked computation.

    build_stacked(cfg)  -> (data, host, trainer): each member built as `python -m src.train seed=<s>` builds its
                           model (src/train.py's make, after seed_everything(s)), each with its own seeded batch
                           order; the host is the one LightningModule the Trainer runs
    train_seeds(cfg)    -> fit, one test pass for all members, and one ordinary run dir per member
                           (<run dir>/seed=<s>/: metrics.json, checkpoints/best.ckpt and last.ckpt)

The update is src/updates/stacked.py's; the stacking, src/models/stacking.py. The host's parameters are the
members' stacked ones, so Lightning's optimizer, checkpoint and device moves act on all members at once; each
member module keeps evaluating itself (its tensors are views of its slice), and logs through the host under
`seed=<s>/`.
"""

from __future__ import annotations

import copy
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from src.data.tensors import Batch
from src.errors import ConfigError
from src.models.stacking import Members, loopable
from src.updates.automatic import Automatic
from src.updates.stacked import Stacked
from src.updates.truncated import Truncation


def check_seeds(seeds: Any) -> list[int]:
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"seeds={seeds!r} must be a non-empty list of integers, e.g. seeds=[1,2,3]")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**32:
            raise ConfigError(f"seeds: {s!r} must be an integer in [0, 2**32)")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds={list(seeds)} names a seed twice; each member needs its own seed")
    return list(seeds)


def member_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of the single run this member equals: `seed` set, `seeds` dropped."""
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.seed = seed
        member.pop("seeds", None)
    return member


class StackedTask(L.LightningModule):
    """The module the Trainer runs for S members: their stacked parameters, their update, their evaluation."""

    def __init__(self, tasks: list[L.LightningModule], seeds: list[int], update: Stacked) -> None:
        super().__init__()
        self.seeds = seeds
        self.notes = loopable(tasks[0])
        for task in tasks[1:]:
            loopable(task)
        self.members = Members(tasks)
        self.tasks = nn.ModuleList(tasks)  # their train/eval mode and metric states follow the host; no parameters
        for name, p in self.members.params.items():
            self.register_parameter(_mangle(name), p)
        for name, b in self.members.buffers.items():
            self.register_buffer(_mangle(name), b)
        first = tasks[0]
        self.monitor, self.monitor_mode = first.monitor, first.monitor_mode
        self.optimizer_factory, self.scheduler_factory = first.optimizer_factory, first.scheduler_factory
        self.scheduler_interval = first.scheduler_interval
        self.spec = first.spec
        for s, task in enumerate(tasks):  # a member logs through the host, under its own prefix
            task.log = _prefixed(self.log, self.prefix(s))
            task.log_dict = _prefixed(self.log_dict, self.prefix(s))
        self.update = update
        update.attach(self)

    def prefix(self, s: int) -> str:
        return f"seed={self.seeds[s]}/"

    @property
    def num_params(self) -> int:
        return sum(p[0].numel() for p in self.members.params.values())  # per member

    def _apply(self, fn, *args, **kwargs):
        module = super()._apply(fn, *args, **kwargs)
        # A device move replaces buffers (and parameters' data): the members' views follow.
        self.members.buffers = {name: self._buffers[_mangle(name)] for name in self.members.buffers}
        self.members.bind()
        return module

    def load_member(self, s: int, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, value in [*self.members.params.items(), *self.members.buffers.items()]:
                value[s].copy_(state[name])

    # -- Lightning hooks: the update's, and every member's ---------------------------------------------------
    def on_fit_start(self) -> None:
        for task in self.tasks:
            task.trainer = self.trainer

    on_test_start = on_fit_start

    def training_step(self, batch: Batch, batch_idx: int):
        return self.update.training_step(batch, batch_idx)

    def on_train_start(self) -> None:
        self.update.on_train_start()

    def on_train_epoch_start(self) -> None:
        self.update.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        self.update.on_train_epoch_end()
        for task in self.tasks:  # their own epoch-end logging (classify's train/acc)
            type(task).on_train_epoch_end(task)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.update.on_before_optimizer_step(optimizer)

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": self.scheduler_interval}
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        for task in self.tasks:  # one pass over the data: every member evaluates each batch
            task.evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        for task in self.tasks:
            task.on_validation_epoch_end()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        for task in self.tasks:
            task.evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        for task in self.tasks:
            task.on_test_epoch_end()


class StackedData(L.LightningDataModule):
    """The members' data: member 0's data module for evaluation (the splits do not depend on the seed) and
    everything a task reads from it; training batches from every member's own seeded sampler, stacked."""

    def __init__(self, datamodules: list[L.LightningDataModule]) -> None:
        super().__init__()
        self.datamodules = datamodules

    def __getattr__(self, name: str) -> Any:  # stream, baselines, rollout, generation info: member 0's
        if name == "datamodules" or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.datamodules[0], name)

    def setup(self, stage: str | None = None) -> None:
        for dm in self.datamodules:  # their loaders read the Trainer's progress (a resumed epoch's batches)
            dm.trainer = self.trainer

    def train_dataloader(self) -> ZippedBatches:
        return ZippedBatches([dm.train_dataloader() for dm in self.datamodules])

    def val_dataloader(self):
        return self.datamodules[0].val_dataloader()

    def test_dataloader(self):
        return self.datamodules[0].test_dataloader()


class ZippedBatches:
    """One batch of each member's loader, stacked: Batch(x [S, B, ...], lengths [S, B] | None, y [S, ...])."""

    batch_sampler = None

    def __init__(self, loaders: list) -> None:
        self.loaders = loaders

    def __len__(self) -> int:
        return min(len(loader) for loader in self.loaders)

    @property
    def sampler(self) -> ZippedBatches:
        return self  # Lightning calls loader.sampler.set_epoch(epoch) every epoch

    def set_epoch(self, epoch: int) -> None:
        for loader in self.loaders:
            sampler = getattr(loader, "sampler", None)
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)

    def __iter__(self):
        for batches in zip(*self.loaders):
            shapes = {tuple(b.x.shape) for b in batches}
            if len(shapes) > 1:
                raise ConfigError(
                    f"seeds: the members' batches have different shapes {sorted(shapes)} (batches padded to their "
                    f"own longest sequence); this data set cannot be stacked: train the seeds one by one"
                )
            yield Batch(*(None if b[0] is None else torch.stack(b) for b in zip(*batches)))


def stacked_update(cfg: DictConfig) -> tuple[Stacked, DictConfig]:
    """The stacked update for cfg (clipping and truncation from the config), and the trainer config without the
    clipping settings (Lightning refuses them under manual optimization)."""
    trainer_cfg = cfg.trainer.copy()
    with open_dict(trainer_cfg):
        clip = trainer_cfg.pop("gradient_clip_val", None)
        algorithm = trainer_cfg.pop("gradient_clip_algorithm", None) or "norm"
    if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
        raise ConfigError("seeds=[...] steps every batch itself: set trainer.accumulate_grad_batches=1")
    if cfg.trainer.get("devices", 1) not in (1, "1", "auto") or cfg.trainer.get("strategy") == "ddp":
        raise ConfigError("seeds=[...] trains its members in one process on one device: set trainer.devices=1")
    truncation = Truncation.from_config(OmegaConf.to_container(cfg.truncation, resolve=True))
    return Stacked(clip, algorithm, truncation), trainer_cfg


def build_stacked(cfg: DictConfig, seeds: list[int]) -> tuple[StackedData, StackedTask, L.Trainer]:
    """The members of `seeds`, each built as its single run builds its model, stacked; and the Trainer."""
    from src.train import build, resolved_config  # src.train calls this module

    update, trainer_cfg = stacked_update(cfg)
    datamodules, tasks = [], []
    trainer = None
    for seed in seeds:
        member = member_config(cfg, seed)
        with open_dict(member):
            member.trainer = trainer_cfg
        datamodule, task, member_trainer = build(member)
        trainer = trainer or member_trainer
        task.run_config = resolved_config(member)
        task.update = Automatic()  # the host's update runs; a member's own hooks must not step anything
        task.update.attach(task)
        datamodules.append(datamodule)
        tasks.append(task)
    host = StackedTask(tasks, seeds, update)
    return StackedData(datamodules), host, trainer


def _mangle(name: str) -> str:
    return "stacked__" + name.replace(".", "__")


def _prefixed(log, prefix: str):
    def member_log(name, value=None, *args, **kwargs):
        if isinstance(name, dict):  # log_dict(values, ...)
            return log(
                {f"{prefix}{k}": v for k, v in name.items()}, *([value] if value is not None else []), *args, **kwargs
            )
        return log(f"{prefix}{name}", value, *args, **kwargs)

    return member_log
