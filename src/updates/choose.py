"""The one place that turns the config into an update strategy, with the reason metrics.json records.

    truncation=tbptt         -> truncated (manual updates per window)
    updates_per_step=K > 1   -> grouped(<inner>, K), inner = truncated, or graphed(manual) with graph_updates=true,
                                or manual
    otherwise                -> automatic (Lightning's loop)

`updates_per_step=auto` picks K here: 8 on a GPU, 1 on CPU, with diagnostics and with gradient accumulation.
"""

from __future__ import annotations

from typing import Any

from src.errors import ConfigError
from src.updates.automatic import Automatic
from src.updates.base import Update
from src.updates.graphed import Graphed, check_mode
from src.updates.grouped import Grouped
from src.updates.manual import Manual
from src.updates.truncated import Truncated, Truncation

UPDATES_PER_STEP_ON_GPU = 8  # updates_per_step=auto on a GPU (python -m src.bench overhead --updates-per-step)


def resolve_updates_per_step(value: Any, on_gpu: bool, diagnostics: bool, accumulate: int) -> tuple[int, str]:
    """updates_per_step with auto resolved, and why: several updates per Lightning step where the Trainer's
    per-step host cost matters (a GPU, where a small model's step takes a few milliseconds), one elsewhere and
    wherever something watches single steps (diagnostics, gradient accumulation)."""
    if value == "auto":
        if not on_gpu:
            return 1, "updates_per_step=auto: 1 off a GPU"
        if diagnostics or accumulate != 1:
            return 1, f"updates_per_step=auto: 1 with {'diagnostics' if diagnostics else 'gradient accumulation'}"
        return UPDATES_PER_STEP_ON_GPU, f"updates_per_step=auto: {UPDATES_PER_STEP_ON_GPU} on a GPU"
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"updates_per_step={value!r} must be a positive integer or auto")
    if value > 1 and diagnostics:
        raise ConfigError(
            f"updates_per_step={value} cannot be combined with diagnostics, which watch single "
            f"updates; set updates_per_step=1"
        )
    if value > 1 and accumulate != 1:
        raise ConfigError(
            f"updates_per_step={value} cannot be combined with trainer.accumulate_grad_batches="
            f"{accumulate}: each batch gets its own update; set one of them to 1"
        )
    return value, f"updates_per_step={value}"


def choose(
    truncation: dict | None = None,
    per_step: int = 1,
    graph_updates: bool = False,
    gradient_clip_val: float | None = None,
    gradient_clip_algorithm: str = "norm",
    reason: str = "",
) -> Update:
    """The strategy for these settings; `reason` (how per_step was picked) goes into its `reason`. Clipping
    settings are used by the strategies that step the optimizer themselves (for automatic, the Trainer's)."""
    trunc = Truncation.from_config(truncation)
    graphed = check_mode(graph_updates)
    clip = {"gradient_clip_val": gradient_clip_val, "gradient_clip_algorithm": gradient_clip_algorithm}
    why = [reason] if reason else []
    if trunc is not None:
        update: Update = Truncated(trunc, **clip)
        why.append("truncation=tbptt")
    elif per_step > 1 and graphed:
        update = Graphed(Manual(**clip))
        why.append("graph_updates=true")
    elif per_step > 1:
        update = Manual(**clip)
    else:
        update = Automatic()
    if per_step > 1:
        update = Grouped(update, per_step)
    update.reason = "; ".join(why)
    return update
