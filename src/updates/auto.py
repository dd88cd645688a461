"""update=auto (the default) and the inner node of update=grouped: strategies picked from the run's other settings.

`pick` (update=auto) applies these rules and records them as the strategy's `reason` (metrics.json
`update_reason`):

    with diagnostics, with gradient accumulation, with a    -> 1 update per Lightning step:
    data module that cannot group batches                      truncated with truncation=tbptt, else automatic
    on a GPU                                                -> grouped(<inner>, K=per_step_on_gpu), inner =
                                                               truncated with truncation=tbptt, else graphed(manual)
                                                               (manual with graphed=false)
    off a GPU                                               -> grouped(<inner>, K=per_step_off_gpu), inner =
                                                               truncated with truncation=tbptt, else manual
                                                               (per_step_off_gpu=1: automatic, or truncated)

Grouping trains the same updates, bit for bit, and logs the same curves (src/updates/grouped.py); it pays the
Trainer's per-step host cost once per K updates, which a small model's step feels on a CPU as on a GPU
(docs/speed.md, the overhead benchmark). `per_step_off_gpu` is an argument of `pick`, not a key of
conf/update/auto.yaml, so the composed config, and with it every earlier run's config_hash, stays as it was:
`+update.per_step_off_gpu=1` sets it.

Only the update group's own settings are decided here: the truncation, trainer and diagnostics settings it reads
(by interpolation, conf/update/auto.yaml) are left as they are.
"""

from __future__ import annotations

from typing import Any

import torch

from src.common.errors import ConfigError
from src.updates.automatic import Automatic
from src.updates.base import Update
from src.updates.graphed import Graphed
from src.updates.grouped import Grouped, check_per_step
from src.updates.manual import Manual
from src.updates.truncated import Truncated, Truncation


def per_batch(truncation: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm") -> Manual:
    """The update(s) of one batch as the truncation group asks for them: truncated BPTT(k1, k2) with
    truncation=tbptt, else one manual update (update=grouped's default inner node)."""
    clip = {"gradient_clip_val": gradient_clip_val, "gradient_clip_algorithm": gradient_clip_algorithm}
    trunc = Truncation.from_config(truncation)
    return Truncated(trunc, **clip) if trunc is not None else Manual(**clip)


def on_gpu(accelerator: Any) -> bool:
    return accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())


def pick(
    truncation: Any = None,
    accelerator: str = "auto",
    diagnostics: Any = None,
    accumulate_grad_batches: int = 1,
    per_step_on_gpu: int = 8,
    graphed: bool = True,
    per_step_off_gpu: int = 8,
    groups_batches: bool = True,
    counted_in_batches: dict[str, int | float] | None = None,
    gradient_clip_val: float | None = None,
    gradient_clip_algorithm: str = "norm",
) -> Update:
    """The strategy for these settings, with the reason for it. Several updates per Lightning step, so that the
    Trainer's per-step host cost is paid once per several (a small model's step takes milliseconds); one wherever
    something watches single steps (diagnostics, gradient accumulation), where the data module cannot hand groups
    of batches (`groups_batches`: src/runs/build.py tells, from the data set's class), and where the config counts
    batches or updates that a group could only honour rounded (`counted_in_batches`: a validation interval in
    batches or a fraction of the epoch, a checkpoint every N updates; validating after batch 16 where the config
    says 10, or after an epoch's last, shorter group, would silently be another run)."""
    if not isinstance(graphed, bool):
        raise ConfigError(f"update.graphed={graphed!r} must be true or false")
    clip = {"gradient_clip_val": gradient_clip_val, "gradient_clip_algorithm": gradient_clip_algorithm}
    trunc = Truncation.from_config(truncation)
    why = "update=auto: "
    check_per_step("per_step_on_gpu", per_step_on_gpu)
    check_per_step("per_step_off_gpu", per_step_off_gpu)
    gpu = on_gpu(accelerator)
    if diagnostics or accumulate_grad_batches != 1:
        per_step, why = 1, why + f"1 with {'diagnostics' if diagnostics else 'gradient accumulation'}"
    elif not groups_batches:
        per_step, why = 1, why + "1: the data module hands single batches, not groups"
    elif gpu:
        per_step, why = per_step_on_gpu, why + f"{per_step_on_gpu} on a GPU"
    else:
        per_step, why = per_step_off_gpu, why + f"{per_step_off_gpu} off a GPU"
    # validating at each epoch's end (val_check_interval=1.0) any group honours; every other count it could not
    rounded = [f"{k}={v}" for k, v in (counted_in_batches or {}).items() if not (isinstance(v, float) and v == 1.0)]
    if per_step > 1 and rounded:
        per_step, why = 1, f"update=auto: 1: {rounded[0]} would fall inside a step of {per_step} batches"
    if trunc is not None:
        update: Update = Truncated(trunc, **clip)
        why += "; truncation=tbptt"
    elif per_step == 1:
        update = Automatic(**clip)
    elif gpu and graphed:
        update = Graphed(Manual(**clip))
        why += "; graphed"
    else:
        update = Manual(**clip)
    if per_step > 1:
        update = Grouped(update, per_step)
    update.reason = why
    return update
