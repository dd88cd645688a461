"""The documented ranges of the settings a run is made of, checked before the run dir is claimed and before any
data is loaded: a value torch or Lightning would accept and then act on wrongly (an epoch count that trains
nothing, a learning rate of 0, a seed that another seed silently replaces) is a ConfigError naming the value and
the fix, not a run recorded as if it were fine. Values that need the data (truncation longer than the sequence)
are checked by `check_truncation_length` once the data is set up."""

from __future__ import annotations

import math
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, ListConfig, OmegaConf

from src.common.errors import ConfigError
from src.runs.learning import check_budget


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def override_key(override: str) -> str:
    """The key an override sets (`+optimizer.betas=[...]` -> optimizer.betas, `~x` -> x)."""
    return str(override).split("=", 1)[0].lstrip("+~")


def command_line_keys() -> set[str]:
    """The keys the command line set (`seed=1`, `+tags=[a]`, `~x`), for a job of a multirun too."""
    if not HydraConfig.initialized():
        return set()
    return {override_key(o) for o in HydraConfig.get().overrides.task}


def sweep_params() -> set[str]:
    """The keys a multirun's sweep config sweeps (hydra.sweeper.params)."""
    if not HydraConfig.initialized():
        return set()
    return set((HydraConfig.get().sweeper.get("params") or {}).keys())


def check_ranges(cfg: DictConfig) -> None:
    check_budget(cfg, command_line_keys())
    trainer = cfg.get("trainer") or {}
    max_epochs, max_steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if cfg.get("train", True) is True:
        for key, value in (("max_epochs", max_epochs), ("max_steps", max_steps)):
            if value == 0 and not isinstance(value, bool):
                raise ConfigError(
                    f"trainer.{key}=0 trains nothing, and the untrained model would be recorded as this run's "
                    f"result; give trainer.{key} >= 1 (or train=false ckpt_path=<a .ckpt file> to only evaluate)"
                )
        early_stopping = bool((cfg.get("callbacks") or {}).get("early_stopping"))
        if max_epochs == -1 and max_steps == -1 and not early_stopping:
            raise ConfigError(
                "trainer.max_epochs=-1 with trainer.max_steps=-1 and no early stopping never ends; give "
                "trainer.max_epochs=<n>, trainer.max_steps=<n> or callbacks=early_stopping"
            )
    min_epochs = trainer.get("min_epochs")
    if _int(min_epochs) and _int(max_epochs) and max_epochs >= 1 and min_epochs > max_epochs:
        raise ConfigError(
            f"trainer.min_epochs={min_epochs} is more than trainer.max_epochs={max_epochs}; one of them would be "
            f"ignored: lower trainer.min_epochs or raise trainer.max_epochs"
        )
    every = trainer.get("check_val_every_n_epoch")
    if _int(every) and _int(max_epochs) and max_epochs >= 1 and every > max_epochs:
        raise ConfigError(
            f"trainer.check_val_every_n_epoch={every} is more than trainer.max_epochs={max_epochs}: validation "
            f"would never run, so no best epoch could be chosen or tested; set it to at most {max_epochs}"
        )
    lr = (cfg.get("optimizer") or {}).get("lr")
    if _number(lr) and lr <= 0:
        raise ConfigError(
            f"optimizer.lr={lr!r} must be > 0 (0 trains nothing, a negative rate climbs the loss), e.g. "
            f"optimizer.lr=0.002"
        )
    scheduler = cfg.get("scheduler") or {}
    gamma = scheduler.get("gamma")
    if str(scheduler.get("_target_", "")).endswith("StepLR") and _number(gamma) and gamma <= 0:
        raise ConfigError(
            f"scheduler.gamma={gamma!r} must be > 0 (each step multiplies the learning rate by it: 0 stops "
            f"training, a negative one flips it), e.g. scheduler.gamma=0.5"
        )
    stack = cfg.get("stack") or {}
    dropout = stack.get("dropout", 0.0)
    if _number(dropout) and dropout > 0 and cfg.get("depth") == 1:
        raise ConfigError(
            f"stack.dropout={dropout} acts between stacked layers, and depth=1 has none, so it would do nothing; "
            f"use depth >= 2, or task.head_dropout={dropout} for dropout before the output layer"
        )
    proj = (cfg.get("task") or {}).get("input_proj")
    if proj is not None and (not _int(proj) or proj < 1):
        raise ConfigError(
            f"task.input_proj={proj!r} must be null (the features as they are) or a positive integer (their "
            f"projected size)"
        )
    tags = cfg.get("tags")
    if tags is not None and (
        not isinstance(tags, (list, ListConfig)) or not all(isinstance(t, (str, int)) for t in tags)
    ):
        raise ConfigError(
            f"tags={OmegaConf.to_container(tags) if isinstance(tags, DictConfig) else tags!r} must "
            f"be a list of labels, e.g. tags=[baseline] or tags=[a,b]"
        )
    # A sweep config's seeds=[...] (hydra.sweeper.params) give way to a seed= on the command line, as documented
    # (`make sweep SWEEP=quick ARGS="seed=3"`: one single run per job, src/runs/seeds.py wanted); both typed by
    # the user, one would silently win.
    if cfg.get("seeds") is not None and {"seed", "seeds"} <= command_line_keys() and "seeds" not in sweep_params():
        raise ConfigError(
            f"seeds={OmegaConf.to_container(cfg.seeds) if isinstance(cfg.seeds, ListConfig) else cfg.seeds} and "
            f"seed={cfg.seed} were both given, and one would silently win; give seeds=[...] (every seed, trained "
            f"at once) or seed=<n> (one run)"
        )


def sequence_length(datamodule: Any) -> int | None:
    """Steps per training sequence: a stream's window (dataset.bptt), else the train split's time dimension."""
    bptt = getattr(datamodule, "bptt", None)
    if _int(bptt):
        return bptt
    splits = getattr(datamodule, "splits", None) or {}
    x = splits.get("train", (None,))[0]
    return int(x.shape[1]) if x is not None and getattr(x, "ndim", 0) >= 2 else None


def check_truncation_length(cfg: DictConfig, datamodule: Any, dataset: str) -> None:
    """truncation.steps longer than the data's sequences would run full BPTT while recording tbptt."""
    truncation = cfg.get("truncation") or {}
    steps = truncation.get("steps")
    if truncation.get("mode") != "tbptt" or not _int(steps):
        return
    length = sequence_length(datamodule)
    if length is not None and steps > length:
        raise ConfigError(
            f"truncation.steps={steps} is longer than dataset={dataset}'s sequences ({length} steps), so every "
            f"update would be full BPTT while the run is recorded as truncated; give truncation.steps=<at most "
            f"{length}> (e.g. truncation.steps={max(1, length // 2)}) or truncation=none"
        )
