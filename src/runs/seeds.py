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
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn

from src.common.errors import ConfigError
from src.common.files import atomic_write_json
from src.common.paths import CONF_DIR
from src.data.tensors import Batch
from src.models.stacking import Members, loopable
from src.records import rundir
from src.records.checkpoints import AtomicCheckpointIO
from src.records.record import RECORD
from src.updates.automatic import Automatic
from src.updates.stacked import NotStackable, Stacked
from src.updates.truncated import Truncation

log = logging.getLogger(__name__)
AUTO_UPDATE = CONF_DIR / "update" / "auto.yaml"


def wanted(cfg: DictConfig) -> bool:
    """Whether this run is seeds=[...]: `seeds` set and no `seed=` on the command line (an explicit seed, e.g.
    `make sweep SWEEP=quick ARGS="seed=1,2,3"`, wins over a sweep config's seeds: one single run per job)."""
    if cfg.get("seeds") is None:
        return False
    given = HydraConfig.get().overrides.task if HydraConfig.initialized() else []
    return not any(str(o).split("=", 1)[0].lstrip("+~") == "seed" for o in given)


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


class StackedTask(L.LightningModule):
    """The module the Trainer runs for S members: their stacked parameters, their update, their evaluation."""

    def __init__(self, tasks: list[L.LightningModule], seeds: list[int], update: Stacked) -> None:
        super().__init__()
        self.seeds = seeds
        for module in tasks[0].modules():
            rate = module.p if isinstance(module, nn.Dropout) else 0.0
            if isinstance(module, nn.RNNBase) and module.num_layers > 1:
                rate = module.dropout
            if rate:
                raise NotStackable(f"dropout {rate}: the members' random masks cannot be those of their single runs")
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
                if name in state:  # (not a task's running counts, which are no part of its checkpoint)
                    value[s].copy_(state[name])

    # -- Lightning hooks: the update's, and every member's ---------------------------------------------------
    def on_fit_start(self) -> None:
        for task in self.tasks:
            task.trainer = self.trainer

    on_test_start = on_fit_start

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
                raise NotStackable(
                    f"seeds: the members' batches have different shapes {sorted(shapes)} (batches padded to their "
                    f"own longest sequence); this data set cannot be stacked: train the seeds one by one"
                )
            yield Batch(*(None if b[0] is None else torch.stack(b) for b in zip(*batches)))


def stacked_update(cfg: DictConfig) -> tuple[Stacked, DictConfig]:
    """The stacked update for cfg, and the trainer config the members run under: update=stacked with its own
    settings; any other update group's clipping (update.gradient_clip_*, which every strategy has) and cfg's
    truncation otherwise."""
    trainer_cfg = cfg.trainer.copy()
    with open_dict(trainer_cfg):
        trainer_cfg.default_root_dir = str(cfg.paths.output_dir)
    if cfg.trainer.get("accumulate_grad_batches", 1) != 1:
        raise NotStackable("gradient accumulation")
    if cfg.trainer.get("devices", 1) not in (1, "1", "auto") or cfg.trainer.get("strategy") == "ddp":
        raise NotStackable("several devices (the members train in one process on one device)")
    node = cfg["update"]  # not cfg.update: that is the mapping's update() method
    if is_stacked(node):  # update=stacked: its own settings
        return instantiate(node, _convert_="all"), trainer_cfg
    truncation = Truncation.from_config(OmegaConf.to_container(cfg.truncation, resolve=True))
    clip, algorithm = node.get("gradient_clip_val"), node.get("gradient_clip_algorithm") or "norm"
    return Stacked(clip, algorithm, truncation), trainer_cfg


def is_stacked(node: Any) -> bool:
    return bool(node) and str(node.get("_target_", "")).endswith(".Stacked")


def build_stacked(
    cfg: DictConfig, seeds: list[int], members: list[DictConfig] | None = None
) -> tuple[StackedData, StackedTask, L.Trainer]:
    """The members of `seeds` (their configs: `members`, default member_config(cfg, seed)), each built as its
    single run builds its model, stacked; and the Trainer (cfg's, with cfg's callbacks and loggers)."""
    from src.runs.build import build

    update, trainer_cfg = stacked_update(cfg)
    datamodules, tasks = [], []
    trainer = None
    for i, seed in enumerate(seeds):
        member = copy.deepcopy(members[i]) if members else member_config(cfg, seed)
        with open_dict(member):
            member.trainer = trainer_cfg
            if is_stacked(member.get("update")):  # each member is built as its single run (update=auto) builds it
                member.update = OmegaConf.load(AUTO_UPDATE)
            # Only the first member's build makes the Trainer that runs: cfg's callbacks and loggers, in cfg's dir.
            member.callbacks = (cfg.get("callbacks") or None) if not i else None
            member.logger = _resolved(cfg.get("logger")) if not i else None
        datamodule, task, member_trainer = build(member)
        trainer = trainer or member_trainer
        task.update = Automatic()  # the host's update runs; a member's own hooks must not step anything
        task.update.attach(task)
        datamodules.append(datamodule)
        tasks.append(task)
    host = StackedTask(tasks, seeds, update)
    return StackedData(datamodules), host, trainer


def _resolved(node: Any) -> Any:
    return OmegaConf.create(OmegaConf.to_container(node, resolve=True)) if node else None


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


# -- seeds=[...] from the command line: S ordinary run dirs ---------------------------------------------------------


class MemberCheckpoints(L.Callback):
    """Each member's best (by its own monitored metric) and last weights, in its own run dir's checkpoints/ as
    src.train's checkpoints are: the task's state_dict and the `rnn_bench` entry (config, data spec)."""

    def __init__(self, dirs: list[Path]) -> None:
        self.dirs = dirs
        self.best: list[float | None] = [None] * len(dirs)
        self.best_path: list[str] = [""] * len(dirs)
        self.best_state: list[dict | None] = [None] * len(dirs)

    def checkpoint(self, trainer: L.Trainer, host: StackedTask, s: int) -> dict:
        task = host.tasks[s]
        state = {**task.state_dict(), **host.members.state_dict(s)}
        return {
            "state_dict": state,
            "epoch": trainer.current_epoch,
            "global_step": trainer.global_step,
            "pytorch-lightning_version": L.__version__,
            "rnn_bench": {"config": task.run_config, "spec": dataclasses.asdict(task.spec)},
            "stacked": {"seeds": host.seeds, "member": s},
        }

    def save(self, checkpoint: dict, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        AtomicCheckpointIO().save_checkpoint(checkpoint, path)

    def on_validation_end(self, trainer: L.Trainer, host: StackedTask) -> None:
        if trainer.sanity_checking:
            return
        higher = host.monitor_mode == "max"
        for s, run_dir in enumerate(self.dirs):
            value = trainer.callback_metrics.get(f"{host.prefix(s)}{host.monitor}")
            if value is None or not torch.isfinite(value):
                continue
            value = float(value)
            best = self.best[s]
            if best is None or (value > best if higher else value < best):
                self.best[s] = value
                checkpoint = self.checkpoint(trainer, host, s)
                self.best_state[s] = checkpoint["state_dict"]
                self.best_path[s] = str(run_dir / "checkpoints" / "best.ckpt")
                self.save(checkpoint, Path(self.best_path[s]))

    def on_train_epoch_end(self, trainer: L.Trainer, host: StackedTask) -> None:
        for s, run_dir in enumerate(self.dirs):
            self.save(self.checkpoint(trainer, host, s), run_dir / "checkpoints" / "last.ckpt")


def train_seeds(cfg: DictConfig, single: Callable[[DictConfig], dict] | None = None) -> list[dict[str, Any]]:
    """Fit the members of cfg.seeds stacked, test each on its best checkpoint in one pass, and leave one ordinary
    run dir per member: <run dir>/seed=<s>/ with metrics.json (status ok, or failed for a member that diverged),
    checkpoints/best.ckpt and last.ckpt, .hydra/ (its overrides name seed=<s>, as a single run's would)."""
    from src.common.errors import user_error
    from src.runs.build import _floats, check_config, run_fields
    from src.runs.sweeps import config_hash

    started = time.perf_counter()
    seeds = check_seeds(OmegaConf.to_container(cfg.seeds) if OmegaConf.is_config(cfg.seeds) else cfg.seeds)
    if cfg.ckpt_path or not cfg.train:
        raise ConfigError(
            "seeds=[...] trains its members from scratch; to resume or evaluate one member, run it alone: "
            "seed=<s> hydra.run.dir=<run dir>/seed=<s> ckpt_path=..."
        )
    if (cfg.get("callbacks") or {}).get("early_stopping"):  # each member would stop at its own epoch
        return one_by_one(cfg, seeds, "early stopping", single)
    out = Path(cfg.paths.output_dir)
    members, dirs = [], []
    for seed in seeds:
        member = member_config(cfg, seed)
        with open_dict(member):
            member.paths.output_dir = str(out / f"seed={seed}")
            member.callbacks = None  # the host's MemberCheckpoints writes each member's checkpoints
        check_config(member)
        members.append(member)
        dirs.append(Path(member.paths.output_dir))
    job = copy.deepcopy(cfg)
    with open_dict(job):
        job.callbacks = None
    try:
        data, host, trainer = build_stacked(job, seeds, members)
        probe(host, data)
    except NotStackable as e:
        log.warning(f"seeds={seeds}: not stacked ({e}); the seeds train one after another")
        return one_by_one(cfg, seeds, str(e), single)
    records = [
        {
            **run_fields(m),
            "config_hash": config_hash(member_config(cfg, m.seed)),  # a single run's (callbacks as given)
            "status": "failed",
            "stacked": {"seeds": seeds, "dir": str(out)},
        }
        for m in members
    ]
    claims = []
    try:
        for member, record, run_dir in zip(members, records, dirs):
            claim = rundir.claim(run_dir, record["config_hash"], resuming=False, fields=run_fields(member))
            claims.append(claim)
            record.update(wandb_id=claim.record["wandb_id"], started_at=claim.record["started_at"])
            _write_member_hydra_files(run_dir, member, seeds)
        checkpoints = MemberCheckpoints(dirs)
        trainer.callbacks.append(checkpoints)
        trainer.fit(host, datamodule=data)
        fitted = _floats(trainer.callback_metrics)
        diverged = host.update.diverged()
        for s, state in enumerate(checkpoints.best_state):  # each member tested on its own best weights
            if state is not None:
                host.load_member(s, state)
        if cfg.test:
            trainer.test(host, datamodule=data)
        tested = _floats(trainer.callback_metrics)
        for s, (record, seed) in enumerate(zip(records, seeds)):
            prefix = host.prefix(s)
            mine = {k[len(prefix) :]: v for k, v in fitted.items() if k.startswith(prefix)}
            mine.update({k[len(prefix) :]: v for k, v in tested.items() if k.startswith(prefix + "test/")})
            record.update(
                task=host.spec.task,
                params=host.num_params,
                monitor=host.monitor,
                monitor_mode=host.monitor_mode,
                epochs=trainer.current_epoch,
                **mine,
                tested_checkpoint=checkpoints.best_path[s] or "final weights" if cfg.test else None,
                train_samples_per_s=fitted.get("perf/train_samples_per_s"),
                update=host.update.describe(),
                update_reason="; ".join(["seeds=[...]: members stacked", *host.notes]),
                device=str(trainer.strategy.root_device),
            )
            if s in diverged:
                record["error"] = (
                    f"TrainingDiverged: the training loss of seed={seed} became NaN or inf at optimizer step "
                    f"{diverged[s]}; it was frozen there while the other seeds trained on"
                )
            else:
                record["status"] = "ok"
    except BaseException as e:
        for record in records:
            record["error"] = record.get("error") or f"{type(e).__name__}: {user_error(e) or e}"
        raise
    finally:
        for record, claim, run_dir in zip(records, claims, dirs):
            record["wall_s"] = round(time.perf_counter() - started, 3)
            record["finished_at"] = time.time()
            atomic_write_json(run_dir / RECORD, record, within=run_dir)
            claim.release()
    return records


def probe(host: StackedTask, data: StackedData) -> None:
    """NotStackable unless the members' first batches stack and their loss runs under vmap (evaluation mode: a
    task's running training counts stay untouched)."""
    try:
        batch = next(iter(data.train_dataloader()))
    except ConfigError as e:
        raise NotStackable(str(e)) from None
    if batch.lengths is not None:
        raise NotStackable("padded batches: each member's batches are padded to their own longest sequence")
    host.eval()
    try:
        with torch.no_grad():
            host.members.call("batch_loss", batch)
    except (RuntimeError, ValueError, TypeError, NotImplementedError) as e:
        raise NotStackable(f"the loss does not run under vmap: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    finally:
        host.train()


def one_by_one(
    cfg: DictConfig, seeds: list[int], why: str, single: Callable[[DictConfig], dict] | None
) -> list[dict[str, Any]]:
    """The members as the single runs they are (`single`: src.train's train, which calls this module), one after
    another, each in its own run dir."""
    if single is None:
        raise NotStackable(f"{why}; and no single-run trainer was handed to run the seeds one after another")
    train = single

    records, error = [], None
    for seed in seeds:
        member = member_config(cfg, seed)
        run_dir = Path(cfg.paths.output_dir) / f"seed={seed}"
        with open_dict(member):
            member.paths.output_dir = str(run_dir)
        try:
            train(member)
        except Exception as e:  # recorded in its metrics.json by train(); the other seeds still run
            error = error or e
        _write_member_hydra_files(run_dir, member, seeds)
        path = run_dir / RECORD
        if path.is_file():
            record = json.loads(path.read_text())
            record["stacked"] = {"seeds": seeds, "dir": str(cfg.paths.output_dir), "not_stacked": why}
            atomic_write_json(path, record, within=run_dir)
            records.append(record)
    if error is not None and not records:
        raise error
    return records


def run(cfg: DictConfig, single: Callable[[DictConfig], dict] | None = None) -> float | None:
    """src.train's main for seeds=[...]: train_seeds, with its errors said as src.train says them. Returns the
    mean over the members of their best monitored value (for Optuna-style sweepers)."""
    from src.common.errors import user_error
    from src.runs.sweeps import completed_record, log_job

    done = []  # a sweep run again: the members that already finished (skip_completed)
    try:
        seeds = check_seeds(OmegaConf.to_container(cfg.seeds) if OmegaConf.is_config(cfg.seeds) else cfg.seeds)
        for seed in seeds:
            member = member_config(cfg, seed)
            with open_dict(member):
                member.paths.output_dir = str(Path(cfg.paths.output_dir) / f"seed={seed}")
            if (record := completed_record(member)) is not None:
                done.append(record)
        if len(done) == len(seeds):
            print(f"run dir: {cfg.paths.output_dir} (skipped: its seeds hold completed runs of this config)")
            log_job(cfg, "skipped")
            return _mean_best(done)
        if done:
            cfg = copy.deepcopy(cfg)
            with open_dict(cfg):
                cfg.seeds = [s for s in seeds if s not in {r["seed"] for r in done}]
        records = train_seeds(cfg, single)
    except Exception as e:
        bad = user_error(e)
        if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
            log_job(cfg, "failed", f"{type(e).__name__}: {bad or e}")
            log.error(f"job failed: {bad or e} (run dir {cfg.paths.output_dir})")
            return float("-inf") if cfg.task.get("monitor_mode") == "max" else float("inf")
        if bad is not None:
            print(f"error: {bad}", file=sys.stderr)
            sys.exit(2)
        raise
    log_job(cfg, "ok" if all(r["status"] == "ok" for r in records) else "failed")
    for record in records:
        print(f"run dir: {cfg.paths.output_dir}/seed={record['seed']} ({record['status']})")
    return _mean_best(done + records)


def _mean_best(records: list[dict]) -> float | None:
    values = [r.get(f"{r['monitor']}_best") for r in records if r.get("status") == "ok"]
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _write_member_hydra_files(run_dir: Path, member: DictConfig, seeds: list[int]) -> None:
    """The member's .hydra/: its overrides say seed=<s> where the job's said seeds=[...]."""
    if not HydraConfig.initialized():
        return
    hydra_cfg = HydraConfig.get()
    overrides = [o for o in hydra_cfg.overrides.task if not o.lstrip("+~").startswith(("seeds=", "seed="))]
    rundir.write_hydra_files(run_dir, member, hydra_cfg, [*overrides, f"seed={member.seed}"])
