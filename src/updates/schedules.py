"""The optimizer and LR schedule settings: checked before a run starts, and followed by a resumed run; on CPU the
optimizer is torch's fused one where the config chooses no implementation (`fused_on_cpu`).

`check_optimization` builds them once on a probe parameter, so that a value torch refuses is a ConfigError.
A resumed run's LR schedule follows the run's config, not the checkpoint's (`follow_config`): Lightning restores a scheduler's whole state from the checkpoint, its settings included: resuming with a larger
`trainer.max_epochs` under the default cosine schedule (T_max = max_epochs) kept the old T_max, so the added
epochs trained at the end of the old schedule (a learning rate of 0 for cosine). Here each restored scheduler
takes the settings the config gives it now, and where a setting changed, its learning rate is recomputed for the
epoch (or step) it has reached from the scheduler's closed form, i.e. as if the run had had the new schedule
from the start. A schedule without a closed form (one that can only be stepped) is refused with the fix.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any

import torch

from src.common.errors import ConfigError

_NOT_SETTINGS = {"self", "optimizer", "last_epoch", "verbose"}


def fused_on_cpu(factory: Callable, params: list[torch.Tensor]) -> dict[str, bool]:
    """{"fused": True} for an optimizer of CPU parameters that has torch's fused kernel (Adam, AdamW, SGD) where
    the config chose no implementation (neither `fused` nor `foreach`); else {}. Left to itself torch steps CPU
    parameters one tensor and one operation at a time, a visible share of a small model's update (docs/speed.md);
    the fused kernel computes the same update, differing in float rounding only. On other devices torch's own
    default stays."""
    keywords = getattr(factory, "keywords", None) or {}
    if "fused" in keywords or "foreach" in keywords or keywords.get("differentiable"):
        return {}
    optimizer = getattr(factory, "func", factory)
    try:
        accepts = "fused" in inspect.signature(optimizer).parameters
    except (TypeError, ValueError):  # no signature to read: leave it as configured
        return {}
    cpu = params and all(p.device.type == "cpu" and torch.is_floating_point(p) for p in params)
    return {"fused": True} if accepts and cpu else {}


def settings(scheduler: Any) -> dict[str, Any]:
    """The constructor settings a scheduler keeps as attributes (T_max, eta_min, step_size, gamma, ...)."""
    names = inspect.signature(type(scheduler).__init__).parameters
    return {n: getattr(scheduler, n) for n in names if n not in _NOT_SETTINGS and hasattr(scheduler, n)}


def follow_config(restored: Any, factory: Callable[..., Any], optimizer: torch.optim.Optimizer) -> list[str]:
    """Give `restored` (a scheduler after a checkpoint's state was loaded) the settings `factory` builds now;
    returns the settings that changed, as `name: old -> new`."""
    probe_params = [torch.zeros(1, requires_grad=True) for _ in optimizer.param_groups]
    probe = torch.optim.SGD(
        [{"params": [p], "lr": g.get("initial_lr", g["lr"])} for p, g in zip(probe_params, optimizer.param_groups)]
    )
    fresh = settings(factory(optimizer=probe))
    old = settings(restored)
    # Functions (a LambdaLR's lambda) cannot be compared: the config rebuilds them, so they are taken as unchanged.
    changed = [f"{k}: {old[k]} -> {v}" for k, v in fresh.items() if k in old and old[k] != v and not callable(v)]
    if not changed:
        return []
    closed_form = getattr(restored, "_get_closed_form_lr", None)  # torch's own formula, where it has one
    if closed_form is None and not isinstance(restored, torch.optim.lr_scheduler.ReduceLROnPlateau):
        raise ConfigError(
            f"the resumed run's scheduler {type(restored).__name__} has other settings than its "
            f"checkpoint ({'; '.join(changed)}) and cannot be recomputed for them; resume with the "
            f"checkpoint's settings, or start afresh without ckpt_path"
        )
    for key, value in fresh.items():
        if not callable(value):
            setattr(restored, key, value)
    if closed_form is not None:
        for group, lr in zip(optimizer.param_groups, closed_form()):
            group["lr"] = lr
        restored._last_lr = [g["lr"] for g in optimizer.param_groups]
    return changed


def check_optimization(
    optimizer: Callable[..., torch.optim.Optimizer], scheduler: Callable | None, step: bool = False
) -> None:
    """Build the optimizer and scheduler once on a probe parameter: a value torch refuses (optimizer.lr=-1, a
    string where a number belongs) is a ConfigError naming the group now, not a traceback inside fit. With
    `step` (src.train, for a run that will train), the schedule is also stepped, which some settings fail only
    then (T_max=0, step_size=0)."""
    scheduler = scheduler or None  # scheduler=none is an empty config
    for group, factory in (("optimizer", optimizer), ("scheduler", scheduler)):
        if factory is not None and not callable(factory):
            raise ConfigError(f"{group}={factory!r} is not a config of the {group} group; choose one of conf/{group}/")
    _check_switches(optimizer)
    probe_param = torch.zeros(1, requires_grad=True)
    try:
        probe = optimizer(params=[probe_param])
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(
            f"optimizer: {_described(optimizer)} refused its settings ({type(e).__name__}: {e}); "
            f"fix the optimizer.* value"
        ) from None
    if scheduler is not None:
        try:
            schedule = scheduler(optimizer=probe)
            for _ in range(2 if step else 0):
                probe.step()
                schedule.step(*([0.0] if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau) else []))
        except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:
            raise ConfigError(
                f"scheduler: {_described(scheduler)} refused its settings ({type(e).__name__}: "
                f"{e}); fix the scheduler.* value"
            ) from None


def _check_switches(optimizer: Callable) -> None:
    """The optimizer's on/off settings (fused, foreach, amsgrad, nesterov, ...: those its __init__ declares bool)
    given as true or false (or null where it declares None too): torch takes any value as its truth, so
    `optimizer.fused=abc` would run as fused=True."""
    try:
        hints = typing.get_type_hints(getattr(optimizer, "func", optimizer).__init__)
    except Exception:  # no hints that resolve: nothing to check against
        return
    for key, value in (getattr(optimizer, "keywords", None) or {}).items():
        allowed = set(typing.get_args(hints.get(key))) or {hints.get(key)}
        if bool not in allowed or not allowed <= {bool, type(None)} or isinstance(value, bool):
            continue
        if value is None and type(None) in allowed:
            continue
        choices = "true, false or null" if type(None) in allowed else "true or false"
        raise ConfigError(f"optimizer.{key}={value!r} is not a switch: give {choices}")


def _described(factory: Callable) -> str:
    func = getattr(factory, "func", factory)
    settings = ", ".join(f"{k}={v!r}" for k, v in getattr(factory, "keywords", {}).items())
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}({settings})"
