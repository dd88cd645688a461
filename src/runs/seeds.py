"""seeds=[s1,s2,...]: the same configuration trained once per seed, in one process, as one stacked computation.

    build_stacked(cfg, seeds)  -> (data, host, trainer): each member built by src/runs/build.py's build_model from
                                  its own config (the single run `python -m src.train seed=<s>` it equals), with its
                                  own seeded batch order; the host is the one LightningModule the Trainer runs, the
                                  Trainer the job's (build_trainer)
    train_members(job, members)-> fit, one test pass for all members, and one ordinary run dir per member (each
                                  Member's own config and dir: metrics.json by src/runs/recorder.py as src.train
                                  writes it, checkpoints/best.ckpt and last.ckpt in src.train's layout)
    train_seeds(cfg)           -> seeds=[...]: train_members of cfg's seeds, in <run dir>/seed=<s>/
A packed multirun (src/runs/packing.py) trains its jobs through train_members too, each member a job's own config,
Hydra config and run dir.

The update is src/updates/stacked.py's; the stacked call, src/models/stacking.py's. Each member keeps its own
parameters, optimizer and schedule; the host holds the members (so Lightning's device moves reach them) and logs
what each member's own hooks would log (its epoch_values), under `seed=<s>/`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class, instantiate
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from src.common import allocator
from src.common.errors import ConfigError, described
from src.common.files import atomic_write_json
from src.common.paths import CONF_DIR
from src.data.tensors import Batch, cut
from src.models.stacking import Members
from src.records import identity, rundir
from src.records.checkpoints import AtomicCheckpointIO
from src.records.checkpoints import load as load_checkpoint
from src.records.record import RECORD
from src.runs import console, stacked_resume
from src.runs.learning import ended
from src.runs.loggers import MemberLoggers, split_by_member
from src.runs.ranges import override_key
from src.updates.stacked import NotStackable, Stacked, member_optimizers
from src.updates.truncated import Truncation

log = logging.getLogger(__name__)
AUTO_UPDATE = CONF_DIR / "update" / "auto.yaml"


def wanted(cfg: DictConfig) -> bool:
    """Whether this run is seeds=[...]: `seeds` set and no `seed=` on the command line (an explicit seed, e.g.
    `make sweep SWEEP=quick ARGS="seed=1,2,3"`, wins over a sweep config's seeds: one single run per job)."""
    if cfg.get("seeds") is None:
        return False
    given = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return not any(override_key(o) == "seed" for o in given)


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
    """The config of the single run this member equals (so the same config_hash): `seed` set, `seeds` null."""
    member = copy.deepcopy(cfg)
    with open_dict(member):
        member.seed = seed
        member.seeds = None
    return member


def member_dir(job_dir: str | Path, seed: int) -> Path:
    """A seeds=[...] member's run dir: <the job's run dir>/seed=<s>."""
    return Path(job_dir) / f"seed={seed}"


def member_in_its_dir(cfg: DictConfig, seed: int) -> DictConfig:
    """member_config, its run dir member_dir (paths.output_dir)."""
    member = member_config(cfg, seed)
    with open_dict(member):
        member.paths.output_dir = str(member_dir(cfg.paths.output_dir, seed))
    return member


@dataclass
class Member:
    """One member of a stacked job: the single run it equals."""

    cfg: DictConfig  # its config, paths.output_dir its own run dir
    name: str  # its prefix in the job's logged values: seed=<s>, or its job's dir name
    overrides: list[str] | None = None  # its .hydra/overrides.yaml (None: the command line's)
    hydra: Any = None  # its own Hydra config (HydraConfig's, a packed multirun's job); None: the process's
    dir: Path | None = None  # its run dir (None: cfg's paths.output_dir, read here)

    def __post_init__(self) -> None:
        if self.dir is None:
            with job_hydra(self.hydra):
                self.dir = Path(self.cfg.paths.output_dir)


@contextlib.contextmanager
def job_hydra(hydra: Any) -> Iterator[None]:
    """HydraConfig.get() is `hydra` (a job's, as HydraConfig holds it) inside: what a member's identity, checks,
    loggers and .hydra/ files read is its own job's. None: unchanged."""
    if hydra is None:
        yield
        return
    instance = HydraConfig.instance()
    before, instance.cfg = instance.cfg, hydra
    try:
        yield
    finally:
        instance.cfg = before


def not_stackable(cfg: DictConfig) -> str | None:
    """Why cfg's members would not train stacked as their single runs, seen in the config alone; None: nothing
    seen (the build still checks the modules and batches: dropout inside a cell, padded batches)."""
    if (cfg.get("callbacks") or {}).get("early_stopping"):
        return "early stopping"  # each member would stop at its own epoch
    if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
        return "gradient accumulation"
    if cfg.trainer.get("devices", 1) not in (1, "1", "auto") or cfg.trainer.get("strategy") == "ddp":
        return "several devices (the members train in one process on one device)"
    if cfg.get("diagnostics"):
        return "diagnostics (they watch one model's updates)"
    if (cfg.get("stack") or {}).get("dropout"):
        return f"dropout {cfg.stack.dropout}: the members' random masks cannot be those of their single runs"
    return None


class StackedTask(L.LightningModule):
    """The module the Trainer runs for S members: their update, and their evaluation and logging, each member's
    values under its own prefix (`names`: seed=<s> by default). `dirs`: each member's run dir, for the files its
    task leaves (write_files); None: none written."""

    def __init__(
        self, tasks: list[L.LightningModule], names: list[str], update: Stacked, dirs: list[Path] | None = None
    ) -> None:
        super().__init__()
        for module in tasks[0].modules():
            rate = module.p if isinstance(module, nn.Dropout) else 0.0
            if isinstance(module, nn.RNNBase) and module.num_layers > 1:
                rate = module.dropout
            if rate:
                raise NotStackable(f"dropout {rate}: the members' random masks cannot be those of their single runs")
        self.tasks = nn.ModuleList(tasks)  # each member's own parameters, metric states and buffers
        self.members = Members(tasks)
        self.names, self.dirs = names, dirs
        first = tasks[0]
        self.monitor, self.monitor_mode, self.spec = first.monitor, first.monitor_mode, first.spec
        self.update = update
        update.attach(self)

    def prefix(self, s: int) -> str:
        return f"{self.names[s]}/"

    @property
    def num_params(self) -> int:
        return self.tasks[0].num_params  # per member

    def member_values(self, s: int, values: dict[str, Any]) -> dict[str, Any]:
        return {f"{self.prefix(s)}{k}": v for k, v in values.items()}

    def write_files(self, stage: str) -> None:
        if self.dirs is not None and self.trainer.is_global_zero:
            for task, out in zip(self.tasks, self.dirs):
                task.write_files(stage, out, [])

    # -- Lightning hooks: the update's, and every member's ---------------------------------------------------
    def on_fit_start(self) -> None:
        self.write_files("fit")

    def training_step(self, batch: Batch, batch_idx: int):
        loss = self.update.training_step(batch, batch_idx)
        # samples per member (what Throughput counts): each of the S members trained on B of them
        return {"loss": loss, "samples": batch.x.shape[1]} if loss is not None else None

    def on_train_start(self) -> None:
        self.update.on_train_start()

    def on_train_epoch_start(self) -> None:
        self.update.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        self.update.on_train_epoch_end()
        for s, task in enumerate(self.tasks):
            self.log_dict(self.member_values(s, task.epoch_values("train")), sync_dist=True, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.update.on_before_optimizer_step(optimizer)

    def configure_optimizers(self):
        return member_optimizers(list(self.tasks))

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        for task in self.tasks:  # one pass over the data: every member evaluates each batch
            task.evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        for s, task in enumerate(self.tasks):
            self.log_dict(self.member_values(s, task.epoch_values("val", self.trainer.sanity_checking)))

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        for task in self.tasks:
            task.evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        for s, task in enumerate(self.tasks):
            self.log_dict(self.member_values(s, task.epoch_values("test")))
        self.write_files("test")


class StackedData(L.LightningDataModule):
    """The members' data: member 0's data module for evaluation (the splits do not depend on the seed); training
    batches from every member's own seeded sampler, stacked. Each member's loaders are those its data module makes
    for a Trainer (its batches(split, train, trainer)), here for the job's."""

    def __init__(self, datamodules: list[L.LightningDataModule]) -> None:
        super().__init__()
        self.datamodules = datamodules

    def train_dataloader(self) -> ZippedBatches:
        return ZippedBatches([dm.batches("train", True, self.trainer) for dm in self.datamodules])

    def val_dataloader(self):
        return self.datamodules[0].batches("val", False, self.trainer)

    def test_dataloader(self):
        return self.datamodules[0].batches("test", False, self.trainer)


class ZippedBatches:
    """One batch of each member's loader, stacked: Batch(x [S, B, ...], lengths [S, B] | None, y [S, ...]).

    Batches that a data set cuts to their own longest sequence (text: src/data/text.py TrimmedBatches) are cut
    here to the members' common longest instead, so that they stack: a member then sees more padding steps than
    its single run, which change nothing of its outputs or loss (the cells, poolings and losses leave steps past a
    sequence's length out: tests/test_text.py, tests/test_models.py), so it still trains exactly as its single run
    (tests/test_stacked.py)."""

    batch_sampler = None

    def __init__(self, loaders: list) -> None:
        self.loaders = loaders
        self.trimmed = all(hasattr(loader, "untrimmed") for loader in loaders)  # cut here instead

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
        for batches in zip(*(loader.untrimmed() if self.trimmed else loader for loader in self.loaders)):
            if self.trimmed:
                steps = max(int(b.lengths.max()) for b in batches)
                batches = [cut(b, steps) for b in batches]
            shapes = {tuple(b.x.shape) for b in batches}
            if len(shapes) > 1:
                raise NotStackable(
                    f"seeds: the members' batches have different shapes {sorted(shapes)}; this data set cannot be "
                    f"stacked: train the seeds one by one"
                )
            yield Batch(*(None if b[0] is None else torch.stack(b) for b in zip(*batches)))


def stacked_update(cfg: DictConfig) -> Stacked:
    """The stacked update for cfg: update=stacked with its own settings, or cfg's truncation."""
    if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
        raise NotStackable("gradient accumulation")
    if cfg.trainer.get("devices", 1) not in (1, "1", "auto") or cfg.trainer.get("strategy") == "ddp":
        raise NotStackable("several devices (the members train in one process on one device)")
    node = cfg["update"]  # not cfg.update: that is the mapping's update() method
    if is_stacked(node):  # update=stacked: its own settings
        return instantiate(node, _convert_="all")
    return Stacked(truncation=Truncation.from_config(OmegaConf.to_container(cfg.truncation, resolve=True)))


def is_stacked(node: Any) -> bool:
    return bool(node) and str(node.get("_target_", "")).endswith(".Stacked")


def single_run_update(member: DictConfig) -> DictConfig:
    """A member's config as its single run has it: with update=stacked, the update=auto that single run would
    have, with update=stacked's clipping (each member clips as its own update says)."""
    if not is_stacked(member.get("update")):
        return member
    member = copy.deepcopy(member)
    auto = OmegaConf.load(AUTO_UPDATE)
    with open_dict(member):
        auto.gradient_clip_val = member["update"].get("gradient_clip_val")
        auto.gradient_clip_algorithm = member["update"].get("gradient_clip_algorithm") or "norm"
        member.update = auto
    return member


def build_stacked(
    cfg: DictConfig,
    seeds: list[int] | None = None,
    members: list[DictConfig] | None = None,
    names: list[str] | None = None,
    dirs: list[Path] | None = None,
    callbacks: list[L.Callback] = (),
    hydra: list[Any] | None = None,
) -> tuple[StackedData, StackedTask, L.Trainer]:
    """The members (their configs: `members`, default member_config(cfg, seed) for each of `seeds`), each built as
    its single run builds its data and model, stacked; and the job's Trainer (cfg's, with cfg's callbacks and
    loggers but W&B, and `callbacks`). With `dirs`, each member's own loggers (MemberLoggers: its CSV and
    TensorBoard curves in its run dir; its W&B run once train_members starts it). `hydra`: each member's own Hydra
    config (job_hydra), where they differ."""
    allocator.start_up_done()  # as src/runs/build.py build: before any member is built
    from src.runs.build import build_loggers, build_model, build_trainer

    update = stacked_update(cfg)
    members = members or [member_config(cfg, seed) for seed in seeds]
    hydra = hydra or [None] * len(members)
    built, set_up = [], {}  # members whose data settings differ only in their loaders' share one load
    for i, member in enumerate(members):
        with job_hydra(hydra[i]), console.lines_of_member(dirs[i] if dirs else None):  # its `Seed set to <s>`
            built.append(build_model(single_run_update(member), set_up, stacked=True))
        if (i + 1) % max(1, len(members) // 10) == 0 or i + 1 == len(members):  # progress, ten lines at most
            log.info(f"built {i + 1} of {len(members)} members")
    names = names or [f"seed={m.seed}" for m in members]
    if len(set(names)) != len(names):
        raise ConfigError(f"the stacked members' names {names} repeat one; each member needs its own")
    host = StackedTask([task for _, task in built], names, update, dirs)
    loggers = []
    if dirs is not None:  # each member's own CSV (and TensorBoard) curves in its run dir, as its single run's
        own = []
        for member, its_hydra in zip(members, hydra):
            with job_hydra(its_hydra):
                own.append(build_loggers(member, wandb=False))
        loggers.append(MemberLoggers(names, own))
    # member 0's data module: the Trainer's step counts follow the members' training loader, as a single run's do
    # (its logging interval no longer than an epoch, so every member's train/ curves have their points)
    trainer = build_trainer(without_wandb(cfg), callbacks=callbacks, datamodule=built[0][0], loggers=loggers)
    return StackedData([dm for dm, _ in built]), host, trainer


def without_wandb(cfg: DictConfig) -> DictConfig:
    """cfg without its W&B logger: a stacked job logs to W&B only as its members, one run each (MemberLoggers)."""
    from src.runs.build import is_wandb

    loggers = cfg.get("logger") or {}
    if not any(c and is_wandb(c) for c in loggers.values()):
        return cfg
    job = copy.deepcopy(cfg)
    with open_dict(job):
        job.logger = {k: c for k, c in loggers.items() if not (c and is_wandb(c))}
    return job


def member_loggers(trainer: L.Trainer) -> MemberLoggers | None:
    return next((logger for logger in trainer.loggers if isinstance(logger, MemberLoggers)), None)


# -- seeds=[...] from the command line: S ordinary run dirs ---------------------------------------------------------


def plan(host: StackedTask) -> str:
    """The job's plan, said at its start: the members, how they run, the memory their weights take."""
    floats = sum(
        sum(p.numel() * p.element_size() for p in task.parameters()) * (2 + optimizer_state_per_weight(task))
        for task in host.tasks
    )
    how = "vmapped" if host.members.vmapped else "once per member"
    return (
        f"{len(host.tasks)} members stacked in one process ({', '.join(host.names[:3])}"
        f"{', ...' if len(host.tasks) > 3 else ''}), the cell run {how}: {host.num_params:,} parameters each, "
        f"about {floats / 2**20:.1f} MB of weights, gradients and optimizer state for all (activations besides)"
    )


def optimizer_state_per_weight(task: L.LightningModule) -> int:
    """The tensors the size of the weights that a member's optimizer keeps: Adam's two moments (three with amsgrad),
    SGD's momentum buffer; two for an optimizer not known here."""
    factory = task.optimizer_factory
    target, settings = getattr(factory, "func", factory), getattr(factory, "keywords", {})
    if isinstance(target, type) and issubclass(target, torch.optim.SGD):
        return 1 if settings.get("momentum", 0) else 0
    if isinstance(target, type) and issubclass(target, torch.optim.Adam | torch.optim.AdamW):
        return 3 if settings.get("amsgrad") else 2
    return 2


def member_checkpoint(trainer: L.Trainer, host: StackedTask, s: int) -> dict:
    """Member s's checkpoint in a single run's layout, written through its task's own on_save_checkpoint: its
    weights, its optimizer's and scheduler's state, the loop's progress."""
    optimizers = host.optimizers(use_pl_optimizer=False)
    scheduler = optimizers.schedulers[s]
    task = host.tasks[s]
    checkpoint = {
        "epoch": trainer.current_epoch,
        "global_step": trainer.global_step,
        "pytorch-lightning_version": L.__version__,
        "state_dict": task.state_dict(),
        "loops": {
            f"{k}_loop": getattr(trainer, f"{k}_loop").state_dict() for k in ("fit", "validate", "test", "predict")
        },
        "optimizer_states": [optimizers.optimizers[s].state_dict()],
        "lr_schedulers": [scheduler.state_dict()] if scheduler is not None else [],
    }
    task.on_save_checkpoint(checkpoint)
    return checkpoint


class MemberCheckpoints(Checkpoint):
    """Each member's best (by its own monitored metric) and last checkpoint, in its own run dir's checkpoints/ as
    src.train's checkpoints are (member_checkpoint); `best`, `last`: which of them its single run writes (its
    callbacks model_checkpoint and last_checkpoint; without a best one it tests its final weights). A Checkpoint
    for Lightning, so that its epoch-end save comes after the host's own epoch-end hook (which steps the members'
    epoch schedules), as ModelCheckpoint's does. `own`: each member's single run's ModelCheckpoints
    (single_run_checkpoints), whose state its checkpoints carry (with_callback_states)."""

    def __init__(
        self, dirs: list[Path], best: bool = True, last: bool = True, own: list[list[ModelCheckpoint]] | None = None
    ) -> None:
        self.dirs, self.keep_best, self.keep_last = dirs, best, last
        self.best: list[float | None] = [None] * len(dirs)
        self.best_path: list[str] = [""] * len(dirs)
        self.best_state: list[dict | None] = [None] * len(dirs)
        self.own = own or [[] for _ in dirs]

    def save(self, checkpoint: dict, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        AtomicCheckpointIO().save_checkpoint(checkpoint, path)

    def with_callback_states(self, checkpoint: dict, s: int, current: float | None) -> dict:
        """Member s's checkpoint with the state its single run's ModelCheckpoints would store in it (the best so
        far and where it is, the last checkpoint), so that the member resumed alone keeps its best checkpoint as
        that run would, instead of taking its first epoch as the best."""
        states = {}
        for callback in self.own[s]:
            path = os.path.join(callback.dirpath, callback.filename + callback.FILE_EXTENSION)
            if callback.monitor is None:  # last_checkpoint: the checkpoint just written
                callback.best_model_path = path
            elif self.best[s] is not None:
                score = torch.tensor(self.best[s])
                callback.best_model_score, callback.best_model_path = score, path
                callback.kth_value, callback.kth_best_model_path = score, path
                callback.best_k_models = {path: score}
                callback.current_score = torch.tensor(current) if current is not None else None
            states[callback.state_key] = callback.state_dict()
        checkpoint["callbacks"] = states
        return checkpoint

    def on_train_start(self, trainer: L.Trainer, host: StackedTask) -> None:
        """Resumed: each member's best so far is the one its weights remember (its task's val_best, restored with
        them), its best checkpoint the one already in its run dir."""
        if not trainer.ckpt_path:
            return
        for s, (task, run_dir) in enumerate(zip(host.tasks, self.dirs)):
            # its one state (max_value / min_value): compute() would warn that it was never updated in this process
            (best,) = task.val_best.metric_state.values()
            path = run_dir / "checkpoints" / "best.ckpt"
            if torch.isfinite(best) and path.is_file():
                self.best[s], self.best_path[s] = float(best), str(path)

    def best_weights(self, s: int) -> dict | None:
        """Member s's best weights (None: it never had a best epoch): kept from this fit, or, resumed without a
        better epoch since, its best checkpoint's."""
        if self.best_state[s] is None and self.best_path[s]:
            return load_checkpoint(self.best_path[s], f"{self.best_path[s]}")["state_dict"]
        return self.best_state[s]

    def on_validation_end(self, trainer: L.Trainer, host: StackedTask) -> None:
        if trainer.sanity_checking or not self.keep_best:
            return
        higher = host.monitor_mode == "max"
        metrics = trainer.callback_metrics  # (built anew at each read: once, not once per member)
        for s, run_dir in enumerate(self.dirs):
            value = metrics.get(f"{host.prefix(s)}{host.monitor}")
            if value is None or not torch.isfinite(value):
                continue
            value = float(value)
            best = self.best[s]
            if best is None or (value > best if higher else value < best):
                self.best[s] = value
                checkpoint = self.with_callback_states(member_checkpoint(trainer, host, s), s, value)
                # a copy: a state_dict shares the storage of the weights that train on
                self.best_state[s] = {k: v.detach().clone() for k, v in checkpoint["state_dict"].items()}
                self.best_path[s] = str(run_dir / "checkpoints" / "best.ckpt")
                self.save(checkpoint, Path(self.best_path[s]))

    def on_train_epoch_end(self, trainer: L.Trainer, host: StackedTask) -> None:
        if not self.keep_last:
            return
        metrics = trainer.callback_metrics
        for s, run_dir in enumerate(self.dirs):
            value = metrics.get(f"{host.prefix(s)}{host.monitor}")
            value = float(value) if value is not None else None
            checkpoint = self.with_callback_states(member_checkpoint(trainer, host, s), s, value)
            self.save(checkpoint, run_dir / "checkpoints" / "last.ckpt")


def single_run_checkpoints(member: DictConfig) -> list[ModelCheckpoint]:
    """The ModelCheckpoints the member's single run has (its callbacks: model_checkpoint, last_checkpoint)."""
    from src.runs.build import make

    return [
        make(c, f"callbacks.{k}")
        for k, c in (member.get("callbacks") or {}).items()
        if c and issubclass(get_class(c._target_), ModelCheckpoint)
    ]


def member_overrides(seed: int) -> list[str] | None:
    """The member's .hydra/overrides.yaml: seed=<s> where the job's said seeds=[...]."""
    if not HydraConfig.initialized():
        return None
    given = HydraConfig.get().overrides.task
    return [*(o for o in given if not o.lstrip("+~").startswith(("seeds=", "seed="))), f"seed={seed}"]


def train_seeds(cfg: DictConfig, single: Callable[[DictConfig], dict] | None = None) -> list[dict[str, Any]]:
    """Fit the members of cfg.seeds stacked, test each on its best checkpoint in one pass, and leave one ordinary
    run dir per member: <run dir>/seed=<s>/ with metrics.json (status ok, or failed for a member that diverged),
    checkpoints/best.ckpt and last.ckpt, .hydra/ (its overrides name seed=<s>, as a single run's would). A seed
    whose dir its claim would refuse (another config's run) is a failed record with the refusal, its dir untouched;
    the others train."""
    from src.runs.sweeps import config_hash

    seeds = check_seeds(OmegaConf.to_container(cfg.seeds) if OmegaConf.is_config(cfg.seeds) else cfg.seeds)
    if not cfg.train:
        raise ConfigError(
            "seeds=[...] train=false: to evaluate one member, run it alone: "
            "seed=<s> hydra.run.dir=<run dir>/seed=<s> train=false ckpt_path=..."
        )
    if (cfg.get("callbacks") or {}).get("early_stopping"):  # each member would stop at its own epoch
        return one_by_one(cfg, seeds, "early stopping", single)
    out, resuming = Path(cfg.paths.output_dir), stacked_resume.wanted(cfg)
    members, refused, first_refusal = [], {}, None
    for seed in seeds:
        member = member_in_its_dir(cfg, seed)
        try:  # a member whose dir is not its own (another config's run) fails alone, its dir untouched
            rundir.check_claimable(member_dir(out, seed), config_hash(member), resuming=resuming)
        except ConfigError as e:
            first_refusal = first_refusal or e
            refused[seed] = {"seed": seed, "status": "failed", "error": described(e)}
            log.error(f"seed={seed}: not trained: {e}")
            continue
        # its config_hash is its single run's: the hash leaves paths out
        members.append(Member(member, f"seed={seed}", member_overrides(seed)))
    if not members:
        raise first_refusal
    try:
        trained = train_members(cfg, members, {"seeds": seeds, "dir": str(out)}, "seeds=[...]: members stacked")
    except NotStackable as e:
        log.warning(f"seeds={seeds}: not stacked ({e}); the seeds train one after another")
        return one_by_one(cfg, seeds, str(e), single)
    return sorted([*trained, *refused.values()], key=lambda r: seeds.index(r["seed"]))


# Files a member keeps open while its job runs (counted in /proc/<pid>/fd of a running job): its log and its run
# dir's lock, and per logger of its own W&B's debug log, TensorBoard's event file and its writer thread's pipe.
OPEN_PER_MEMBER = 2
OPEN_PER_LOGGER = {"WandbLogger": 1, "TensorBoardLogger": 3}


def make_room_for_open_files(members: list[Member]) -> None:
    """A thousand members keep more files open than the 1,024 many systems allow a process by default, and the job
    would fail halfway ("Too many open files") with every member's dir claimed: the limit is raised up to what
    the system allows a process (its hard limit), and a job that would need more is refused in one line before
    any member claims its dir."""
    try:
        import resource
    except ImportError:  # (Windows: no such limit)
        return
    loggers = [str(c.get("_target_", "")) for c in (members[0].cfg.get("logger") or {}).values() if c]
    each = OPEN_PER_MEMBER + sum(n for name, n in OPEN_PER_LOGGER.items() for t in loggers if t.endswith(name))
    already = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else 64
    needed = already + each * len(members) + 32  # (and some for the data, checkpoints and libraries)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if needed <= soft:
        return
    if hard != resource.RLIM_INFINITY and needed > hard:
        raise ConfigError(
            f"{len(members)} members stacked keep about {each} files open each (log, run dir lock, loggers): "
            f"{needed} in all, more than this system lets a process open (ulimit -n: {soft}, at most {hard}); "
            f"stack fewer members at once (a multirun's hydra.launcher.max_members=N, or several seeds=[...] "
            f"jobs) or raise the hard limit (ulimit -Hn {needed}, as root)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


def train_members(job: DictConfig, members: list[Member], stacked: dict[str, Any], reason: str) -> list[dict[str, Any]]:
    """Fit `members` stacked (the job's Trainer: `job`'s settings, its loggers beside each member's own), test each
    on its best checkpoint in one pass, and leave each its ordinary run dir (Member.dir): metrics.json (status ok,
    or failed for a member that diverged; `stacked` recorded in it, `reason` in its update_reason), checkpoints,
    .hydra/, its CSV (and TensorBoard) curves. NotStackable (nothing written yet) where they cannot stack exactly;
    the members' records otherwise. Lightning's table of the test values is not printed (a row per member and
    metric: 6,000 rows for 1,000 seeds, the names cut short); the caller logs each member's result line."""
    from src.models.sizing import sequence_steps, state_floats
    from src.runs.build import _floats, check_config
    from src.runs.recorder import Recorder

    members, resumed_from, done = resumed_members(job, members)
    if not members:
        return done
    make_room_for_open_files(members)
    dirs = [m.dir for m in members]
    recorders, own_checkpoints = [], []
    for m in members:
        with job_hydra(m.hydra):
            check_config(m.cfg)
            # started now, as a single run's record starts before its data is loaded
            recorders.append(Recorder(m.cfg, m.overrides))
            own_checkpoints.append(single_run_checkpoints(m.cfg))  # its paths, as its own job resolves them
    job = copy.deepcopy(job)
    own = job.get("callbacks") or {}
    checkpoints = MemberCheckpoints(
        dirs,
        best=bool(own.get("model_checkpoint")),
        last=bool(own.get("last_checkpoint")),
        own=own_checkpoints,
    )
    with open_dict(job):
        job.callbacks = None  # MemberCheckpoints writes each member's checkpoints
    data, host, trainer = build_stacked(
        job,
        members=[m.cfg for m in members],
        names=[m.name for m in members],
        dirs=dirs,
        callbacks=[checkpoints],
        hydra=[m.hydra for m in members],
    )
    probe(data, host.update)
    log.info(plan(host))
    own_loggers = None
    try:
        for recorder, m in zip(recorders, members):
            recorder.record["stacked"] = stacked
            with job_hydra(m.hydra):
                recorder.claim(resuming=resumed_from is not None)
        sizes = [  # as a single run records them (src/train.py fit_and_test), before training
            {
                "state_floats": state_floats(task, sequence_steps(dm)),
                "width": task.run_config.get("cell", {}).get("hidden_size"),
            }
            for task, dm in zip(host.tasks, data.datamodules)
        ]
        own_loggers = member_loggers(trainer)  # each member's W&B run, its config logged as its single run's
        for s, (m, recorder, task) in enumerate(zip(members, recorders, host.tasks)):
            with job_hydra(m.hydra):
                own_loggers.start(s, m.cfg, m.overrides, recorder.record.get("wandb_id"), task)
        with tempfile.TemporaryDirectory(prefix="rnn-bench-resume-") as folder:
            resumed = stacked_resume.job_checkpoint(resumed_from, Path(folder)) if resumed_from else None
            trainer.fit(host, datamodule=data, ckpt_path=resumed, weights_only=True)
        fitted = _floats(trainer.callback_metrics)
        diverged = host.update.diverged()
        for s, task in enumerate(host.tasks):  # each member tested on its own best weights
            if (state := checkpoints.best_weights(s)) is not None:
                task.load_state_dict(state)
        if job.test:
            trainer.test(host, datamodule=data, verbose=False)
        tested = _floats(trainer.callback_metrics)
        prefixes = [host.prefix(s) for s in range(len(members))]
        fitted_own, tested_own = (split_by_member(values, prefixes)[1] for values in (fitted, tested))
        for s, (recorder, m) in enumerate(zip(recorders, members)):
            prefix = host.prefix(s)
            mine = {**fitted_own[s], **{k: v for k, v in tested_own[s].items() if k.startswith("test/")}}
            recorder.record.update(
                task=host.spec.task,
                params=host.num_params,
                **sizes[s],
                monitor=host.monitor,
                monitor_mode=host.monitor_mode,
                epochs=trainer.current_epoch,
                **mine,
                **ended(trainer, m.cfg, prefix),
                tested_checkpoint=checkpoints.best_path[s] or "final weights" if job.test else None,
                train_samples_per_s=fitted.get("perf/train_samples_per_s"),
                update=host.update.describe(),
                update_reason="; ".join([reason, *host.update.notes()]),
                device=str(trainer.strategy.root_device),
            )
            if s in diverged:
                recorder.record["error"] = (  # a single run's words (src/runs/callbacks.py FiniteLoss), and where
                    f"TrainingDiverged: the training loss became NaN or inf at optimizer step {diverged[s]} "
                    f"({m.name}, stacked: frozen there while the other members trained on). Lower optimizer.lr, "
                    f"set update.gradient_clip_val (e.g. 1.0), or use a gated cell"
                )
            else:
                recorder.record["status"] = "ok"
    except BaseException as e:
        for recorder, m in zip(recorders, members):
            with job_hydra(m.hydra):
                recorder.fail(e)
        raise
    finally:
        for recorder in recorders:
            recorder.close()
        if own_loggers is not None:  # the members end: their W&B runs finished
            own_loggers.finish([r.record for r in recorders], trainer.global_step)
    return done + [recorder.record for recorder in recorders]


def resumed_members(job: DictConfig, members: list[Member]) -> tuple[list[Member], list[Path] | None, list[dict]]:
    """ckpt_path=last (the job resumed as a whole, src/runs/stacked_resume.py): the members that resume, each one's
    last.ckpt, and the records of those already finished, which stay as they are (each said). Without ckpt_path:
    (members, None, [])."""
    if not stacked_resume.wanted(job):
        return members, None, []
    kept, paths, done = [], [], []
    for m in members:
        with job_hydra(m.hydra):
            path, finished = stacked_resume.member_resume(m.cfg, m.name)
        if finished:
            done.append(json.loads((m.dir / RECORD).read_text()))
            log.info(f"{m.name}: already trained to this job's limit (status ok); not trained again")
        else:
            kept.append(m)
            paths.append(path)
    stacked_resume.check_one_point([m.name for m in kept], paths)
    return kept, paths, done


def probe(data: StackedData, update: Stacked) -> None:
    """NotStackable unless the members' first batches stack (a loss that does not run under vmap runs once per
    member: src/models/stacking.py); and for padded batches under truncated BPTT: a member's batch, cut to the
    members' common longest, then has windows of padding alone, which its single run never trains."""
    loader = data.train_dataloader()
    if loader.trimmed and update.truncation is not None:
        raise NotStackable(
            "padded batches under truncation=tbptt: the members' batches would run windows past some member's "
            "longest sequence"
        )
    try:
        next(iter(loader))
    except ConfigError as e:
        raise NotStackable(str(e)) from None


def one_by_one(
    cfg: DictConfig, seeds: list[int], why: str, single: Callable[[DictConfig], dict] | None
) -> list[dict[str, Any]]:
    """The members as the single runs they are (`single`: src.train's train, which calls this module), one after
    another, each in its own run dir. A member whose run failed before it wrote its own metrics.json (a refused
    dir: another run's, left as it is) is a failed record here only, with its error."""
    from src.runs.sweeps import config_hash

    if single is None:
        raise NotStackable(f"{why}; and no single-run trainer was handed to run the seeds one after another")
    records, error, own = [], None, 0
    for seed in seeds:
        member = member_in_its_dir(cfg, seed)
        run_dir = Path(member.paths.output_dir)
        started, raised = time.time(), None
        try:
            single(member)
        except Exception as e:  # recorded in its metrics.json by train() once it claimed the dir; the others run on
            error, raised = error or e, e
        path = run_dir / RECORD
        record = json.loads(path.read_text()) if path.is_file() and not path.is_symlink() else {}
        if record.get("config_hash") != config_hash(member) or record.get("finished_at", 0) < started:
            error_text = described(raised) if raised is not None else "it wrote no metrics.json"
            records.append({"seed": seed, "status": "failed", "error": error_text})
            continue
        own += 1
        _write_member_hydra_files(run_dir, member, seeds)
        record["stacked"] = {"seeds": seeds, "dir": str(cfg.paths.output_dir), "not_stacked": why}
        atomic_write_json(path, record, within=run_dir)
        records.append(record)
    if error is not None and not own:
        raise error
    return records


def run(cfg: DictConfig, single: Callable[[DictConfig], dict] | None = None) -> float | None:
    """src.train's main for seeds=[...]: train_seeds (its errors raised, for src.train to say). Returns the
    mean over the members of their best monitored value (for Optuna-style sweepers); outside a multirun, exits 1
    once a member failed, naming each."""
    from src.runs.sweeps import completed_record, log_job

    done = []  # a sweep run again: the members that already finished (skip_completed)
    seeds = check_seeds(OmegaConf.to_container(cfg.seeds) if OmegaConf.is_config(cfg.seeds) else cfg.seeds)
    out = Path(cfg.paths.output_dir)
    console.hold_run_log()  # the job's log: not a line in a dir that is another run's
    try:
        rundir.check_dir_of_runs(out, "seeds=[...] would put its members' dirs and its log", "hydra.run.dir")
    except ConfigError:
        console.release_run_log(keep=False)
        raise
    console.release_run_log(keep=True, within=out)
    for seed in seeds if identity.in_multirun() else ():  # (completed_record: only a multirun's jobs are skipped)
        if (record := completed_record(member_in_its_dir(cfg, seed))) is not None:
            done.append(record)
    if len(done) == len(seeds):
        print(f"run dir: {cfg.paths.output_dir} (skipped: its seeds hold completed runs of this config)")
        log_job(cfg, "skipped")
        return _mean_best(done)
    if done:
        cfg = copy.deepcopy(cfg)
        with open_dict(cfg):
            cfg.seeds = [s for s in seeds if s not in {r["seed"] for r in done}]
    # each member's own log, held until it claims its dir: none for a member that is skipped or refused
    console.hold_member_logs([member_dir(out, s) for s in cfg.seeds])
    try:
        records = train_seeds(cfg, single)
    finally:
        console.release_run_log(keep=False)  # still held: a member's that never claimed its dir (refused, done)
    from src.runs.recorder import result_line, spread_line

    for record in records:
        if record["status"] == "ok":
            with console.lines_of_member(member_dir(out, record["seed"])):
                log.info(f"result of seed={record['seed']}: {result_line(record)}")
    if len(ok := [r for r in done + records if r["status"] == "ok"]) > 1:
        log.info(f"over {len(ok)} seeds: {spread_line(ok)}")
    failed = [r for r in records if r["status"] != "ok"]
    log_job(cfg, "failed" if failed else "ok")
    for record in records:
        print(f"run dir: {cfg.paths.output_dir}/seed={record['seed']} ({record['status']})")
    if failed and not identity.in_multirun():
        # as a multirun ends: non-zero once any run failed, each failure said (a multirun's sweep says them at its end)
        for record in failed:
            print(f"error: seed={record['seed']} failed: {record.get('error')}", file=sys.stderr)
        sys.exit(1)
    return _mean_best(done + records)


def _mean_best(records: list[dict]) -> float | None:
    values = [r.get(f"{r['monitor']}_best") for r in records if r.get("status") == "ok"]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _write_member_hydra_files(run_dir: Path, member: DictConfig, seeds: list[int]) -> None:
    """The member's .hydra/: its overrides say seed=<s> where the job's said seeds=[...]."""
    if HydraConfig.initialized():
        rundir.write_hydra_files(run_dir, member, HydraConfig.get(), member_overrides(member.seed))
