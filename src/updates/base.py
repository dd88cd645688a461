"""What an update strategy provides: the training step of the task it is attached to, and the hooks around it.

The task (src/tasks/base.py) calls, and only calls:

    attach(task)                        once, from the task's constructor: take the task, set
                                        task.automatic_optimization (and anything else Lightning must see)
    training_step(batch, batch_idx)     the task's training_step
    on_train_start(), on_train_epoch_start(), on_train_epoch_end(), on_before_optimizer_step(optimizer),
    on_save_checkpoint(checkpoint),
    configure_gradient_clipping(optimizer)
                                        the task's Lightning hooks of the same names
    describe(), explain()               what metrics.json records as `update` and `update_reason`
    setting(name)                       a setting (`truncation`, `gradient_clip_val`, `per_step`) for src.train's
                                        checks and the callbacks that need it

The strategy uses, of the task: `batch_loss(batch)` (forward and loss over the whole sequence), `encode`,
`head` and `loss` (for windows of it), `optimizers()`, `lr_schedulers()`, `manual_backward`, `clip_gradients`,
`log` and the optimizer/scheduler settings (`scheduler_factory`, `scheduler_interval`, `monitor`): Lightning's
public API plus the task protocol. A strategy never imports the task module.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from src.common import lightning_internals as internals
from src.common.errors import ConfigError
from src.updates.schedules import follow_config

log = logging.getLogger(__name__)


class Update:
    automatic = False  # True: Lightning's loop runs backward, the optimizer step and schedulers
    name = "update"
    reason = ""  # why this strategy was chosen (update=auto says what it picked); metrics.json `update_reason`

    def __init__(self, gradient_clip_val: float | None = None, gradient_clip_algorithm: str = "norm") -> None:
        """Clipping is every strategy's setting (update.gradient_clip_val / update.gradient_clip_algorithm): the
        automatic strategy hands it to Lightning's clipping hook, the others clip before their optimizer steps."""
        self.task: L.LightningModule | None = None
        self.gradient_clip_val, self.gradient_clip_algorithm = check_clipping(
            gradient_clip_val, gradient_clip_algorithm
        )

    def attach(self, task: L.LightningModule) -> None:
        self.task = task
        task.automatic_optimization = self.automatic

    def describe(self) -> str:
        return self.name

    def explain(self, chosen: str = "") -> str:
        """Why this strategy runs as it does: the reason it was chosen (update=auto says what it picked; otherwise
        `chosen`, how the config named it), and what it found out while running (the graphed strategy: why its
        graphs are off). metrics.json `update_reason`."""
        return "; ".join(note for note in (self.reason or chosen, *self.notes()) if note)

    def notes(self) -> list[str]:
        return []

    def setting(self, name: str, default: Any = None) -> Any:
        """A setting of this strategy or of the one it wraps (`truncation`, `gradient_clip_val`, `per_step`): for
        src/train.py's checks and the callbacks that need to know how updates run (src/diagnostics/report.py)."""
        return getattr(self, name, default)

    # -- the step --------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        loss = self.train_on(batch)
        self.log_loss(loss, len(batch.x), internals.is_last_batch(self.task.trainer))
        return loss

    def train_on(self, batch: Any) -> torch.Tensor | None:
        """Forward and loss of one batch, and its update(s) where the strategy runs them; the (detached) loss, or
        None where the batch holds no target."""
        raise NotImplementedError

    def log_loss(self, loss: torch.Tensor | None, batch_size: int, last_of_epoch: bool) -> None:
        # Only on the steps the loggers write (trainer.log_every_n_steps) and on each epoch's last step (what
        # metrics.json reports): each logged value is read back to the host, a sync that on a GPU stalls the
        # queue of kernels.
        if loss is not None and (internals.should_update_logs(self.task.trainer) or last_of_epoch):
            self.task.log("train/loss", loss, prog_bar=True, batch_size=batch_size)

    # -- hooks (the task's, delegated) ------------------------------------------------------------------------
    def on_train_start(self) -> None:
        task = self.task
        if task.trainer.ckpt_path and task.scheduler_factory:  # resumed: the schedule follows this run's config
            for config in task.trainer.lr_scheduler_configs:
                changed = follow_config(config.scheduler, task.scheduler_factory, config.scheduler.optimizer)
                if changed:
                    log.warning(
                        f"resumed with a new LR schedule ({'; '.join(changed)}): the learning rate "
                        f"is now {config.scheduler.optimizer.param_groups[0]['lr']:.3g}, as if the run "
                        f"had had this schedule from the start"
                    )

    def on_train_epoch_start(self) -> None:
        pass

    def on_train_epoch_end(self) -> None:
        pass

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        pass

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer) -> None:
        pass  # Lightning calls it only where its loop steps the optimizer: the automatic strategy's


def check_clipping(value: Any, algorithm: Any) -> tuple[float | None, str]:
    """The clipping settings, checked: a negative value would flip the gradients, an unknown algorithm would
    fail only at the first update."""
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf
    ):
        raise ConfigError(f"update.gradient_clip_val={value!r} must be a finite number >= 0 (or null: no clipping)")
    algorithm = algorithm or "norm"
    if algorithm not in ("norm", "value"):
        raise ConfigError(f"update.gradient_clip_algorithm={algorithm!r} must be norm or value")
    return value, algorithm


class Wrapper(Update):
    """A strategy around another one (grouped around manual, graphed around manual): the hooks are the inner
    strategy's unless the wrapper adds to them. Its clipping settings are the inner strategy's: a wrapper's yaml
    passes update.gradient_clip_* down to its `inner` node by interpolation, and a wrapper given other values
    than its inner strategy has refuses them (one setting, one place)."""

    def __init__(
        self, inner: Update, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ):
        self.task = None
        if not isinstance(inner, Update):
            raise ConfigError(
                f"update.inner={inner!r} is not an update strategy; give a node with a _target_ in src.updates"
            )
        self.inner = inner
        for name, value in (
            ("gradient_clip_val", gradient_clip_val),
            ("gradient_clip_algorithm", gradient_clip_algorithm),
        ):
            if value is not None and value != inner.setting(name):
                raise ConfigError(
                    f"update.{name}={value!r} but its inner strategy has {inner.setting(name)!r}: set it once, as "
                    f"update.{name} (the inner node takes it by interpolation)"
                )

    @property
    def gradient_clip_val(self) -> float | None:
        return self.inner.setting("gradient_clip_val")

    @property
    def gradient_clip_algorithm(self) -> str:
        return self.inner.setting("gradient_clip_algorithm")

    def attach(self, task: L.LightningModule) -> None:
        self.inner.attach(task)
        super().attach(task)
        task.automatic_optimization = self.inner.automatic

    def train_on(self, batch: Any) -> torch.Tensor | None:
        return self.inner.train_on(batch)

    def setting(self, name: str, default: Any = None) -> Any:
        return getattr(self, name) if hasattr(self, name) else self.inner.setting(name, default)

    def notes(self) -> list[str]:
        return self.inner.notes()

    def on_train_start(self) -> None:
        self.inner.on_train_start()

    def on_train_epoch_start(self) -> None:
        self.inner.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        self.inner.on_train_epoch_end()

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.inner.on_before_optimizer_step(optimizer)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.inner.on_save_checkpoint(checkpoint)

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer) -> None:
        self.inner.configure_gradient_clipping(optimizer)
