"""Whether a run's learning had ended: a comparison budget equal for every architecture, and the verdict
metrics.json records at the end of fitting.

    budget.updates=N     the run trains N optimizer updates (trainer.max_steps=N, trainer.max_epochs=-1): one per
                         batch in full BPTT, one per window with truncation=tbptt, one per batch of a group with
                         update=grouped; a stacked job's members get N each. An LR schedule that spans the run
                         (cosine's T_max: ${trainer.max_epochs}) spans the N updates instead, stepped per update.
    plateau.*            the rule of the verdict (`learning_verdict`):
                         plateau        the best of the last `patience` validations is not better than the best
                                        before them by more than max(min_delta x |that best|, min_delta_abs)
                         budget         it is: the budget (or trainer.max_epochs) ran out while still improving
                         early_stopped  EarlyStopping ended the run (callbacks=early_stopping)
                         unknown        `patience` validations or fewer: too few to tell

The history the verdict reads is the run's own monitored validation values, one per validation, kept by the
LearningCurve callback (src/runs/callbacks.py; for a stacked job each member's, under its prefix) and stored in
checkpoints, so a resumed run keeps the values before it.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from src.common.errors import ConfigError

# The verdicts, and the leaderboard's words for them (src/compare/leaderboard.py ended_text).
SHOWN = {"plateau": "plateau", "budget": "still learning", "early_stopped": "early stopped", "unknown": "unknown"}
# A schedule that spans the run reads its length from trainer.max_epochs; under a budget of updates it spans those.
SPANS_THE_RUN = "${trainer.max_epochs}"
PLATEAU = {"patience": 3, "min_delta": 1e-3, "min_delta_abs": 0.0}  # conf/config.yaml's, for a config without them


def _int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def budget_updates(cfg: DictConfig) -> int | None:
    return (cfg.get("budget") or {}).get("updates")


def check_budget(cfg: DictConfig, given: set[str]) -> None:
    """The budget and plateau settings, checked before the run dir is claimed; `given`: the command line's keys
    (a budget given together with the trainer limit it sets would silently replace it)."""
    budget = cfg.get("budget") or {}
    unknown = sorted(set(budget) - {"updates"})
    if unknown:
        raise ConfigError(
            f"budget.{unknown[0]}: no such budget; the comparison budget is budget.updates=<optimizer updates>"
        )
    updates = budget.get("updates")
    if updates is not None and (not _int(updates) or updates < 1):
        raise ConfigError(
            f"budget.updates={updates!r} must be a positive integer (optimizer updates, the same for every "
            f"architecture), e.g. budget.updates=600; or null for trainer.max_epochs"
        )
    if updates is not None and cfg.get("train", True):
        for key in ("trainer.max_steps", "trainer.max_epochs"):
            if key in given:
                raise ConfigError(
                    f"budget.updates={updates} sets trainer.max_steps={updates} and trainer.max_epochs=-1, and "
                    f"{key} was given too: one would silently win; drop {key} (or budget.updates)"
                )
    plateau = {**PLATEAU, **(cfg.get("plateau") or {})}
    if unknown := sorted(set(plateau) - set(PLATEAU)):
        raise ConfigError(f"plateau.{unknown[0]}: no such setting; the plateau rule's are {', '.join(PLATEAU)}")
    patience = plateau["patience"]
    if not _int(patience) or patience < 1:
        raise ConfigError(
            f"plateau.patience={patience!r} must be a positive integer (the last validations that must improve "
            f"on the best before them), e.g. plateau.patience=3"
        )
    for key in ("min_delta", "min_delta_abs"):
        value = plateau[key]
        if not _number(value) or value < 0:
            raise ConfigError(
                f"plateau.{key}={value!r} must be a number >= 0 (the improvement that counts as learning: "
                f"relative for min_delta, in the metric's units for min_delta_abs), e.g. plateau.{key}=0.001"
            )


def budgeted(cfg: DictConfig) -> DictConfig:
    """cfg, or with budget.updates a copy whose trainer limits and run-long schedule are the budget's. Pure: the
    model and the Trainer are built from the same copy however often it is asked for."""
    updates = budget_updates(cfg)
    if updates is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.trainer.max_steps = updates
        cfg.trainer.max_epochs = -1
        scheduler = cfg.get("scheduler")
        if scheduler and OmegaConf.to_container(scheduler, resolve=False).get("T_max") == SPANS_THE_RUN:
            scheduler.T_max = updates
            cfg.task.scheduler_interval = "step"
    return cfg


def learning_verdict(
    values: Sequence[float], higher: bool, patience: int = 3, min_delta: float = 1e-3, min_delta_abs: float = 0.0
) -> tuple[str, float | None]:
    """(verdict, gain) of a history of validation values, oldest first: plateau, budget (still improving) or
    unknown (not more than `patience` finite values); gain: how much better the best of the last `patience` is
    than the best before them, in the metric's units (negative: worse), or None."""
    values = [float(v) for v in values if _number(v)]
    if len(values) <= patience:
        return "unknown", None
    before, recent = values[:-patience], values[-patience:]
    best = max if higher else min
    gain = best(recent) - best(before) if higher else best(before) - best(recent)
    tolerance = max(min_delta * abs(best(before)), min_delta_abs)
    return ("plateau" if gain <= tolerance else "budget"), gain


def early_stopped(trainer: Any) -> bool:
    from lightning.pytorch.callbacks import EarlyStopping

    return any(isinstance(c, EarlyStopping) and c.stopped_epoch > 0 for c in trainer.callbacks)


def ended(trainer: Any, cfg: DictConfig, prefix: str = "") -> dict[str, Any]:
    """metrics.json's `budget` (kind, value, used, set_by), `learning` (the verdict) and `plateau` (the rule's
    settings and what it measured) for the run fitted by `trainer` (`prefix`: a stacked member's, seed=<s>/)."""
    from src.runs.callbacks import LearningCurve

    module = trainer.lightning_module
    curve = next((c for c in trainer.callbacks if isinstance(c, LearningCurve)), None)
    values = curve.history.get(prefix + module.monitor, []) if curve else []
    plateau = {**PLATEAU, **(cfg.get("plateau") or {})}
    verdict, gain = learning_verdict(values, module.monitor_mode == "max", **plateau)
    if early_stopped(trainer):
        verdict = "early_stopped"
    updates = budget_updates(cfg)
    if updates is not None:
        budget = {"kind": "updates", "value": updates, "used": trainer.global_step, "set_by": "budget.updates"}
    elif trainer.max_steps not in (None, -1):
        budget = {
            "kind": "updates",
            "value": trainer.max_steps,
            "used": trainer.global_step,
            "set_by": "trainer.max_steps",
        }
    else:
        budget = {
            "kind": "epochs",
            "value": trainer.max_epochs,
            "used": trainer.current_epoch,
            "set_by": "trainer.max_epochs",
        }
    return {
        "budget": budget,
        "learning": verdict,
        "plateau": {**plateau, "validations": len(values), "gain": gain},
    }
