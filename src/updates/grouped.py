"""K batches per Lightning training step, one optimizer update each, in the order the loader gives them.

The same updates as K = 1, bit for bit, with the Trainer's per-step host cost (hooks, progress, logging) paid once
per K updates instead of once per update. Each batch is trained by the inner strategy (manual, truncated or
graphed: the `inner` node of conf/update/grouped.yaml and graphed.yaml). The groups are made where batches are
made: src/runs/build.py hands K to the data module, whose training loader yields lists of K batches
(src/data/tensors.py BatchGroups), so Lightning's step is a group and training_step keeps its signature. The
Trainer's counts in batches (limit_train_batches, val_check_interval, log_every_n_steps) are turned into steps
there too.
"""

from __future__ import annotations

import torch

from src.common import lightning_internals as internals
from src.common.errors import ConfigError
from src.updates.base import Update, Wrapper


class Grouped(Wrapper):
    name = "grouped"

    def __init__(
        self,
        inner: Update,
        per_step: int,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        if not isinstance(per_step, int) or isinstance(per_step, bool) or per_step < 1:
            raise ConfigError(f"update.per_step={per_step!r} must be a positive integer (batches per Lightning step)")
        super().__init__(inner, gradient_clip_val, gradient_clip_algorithm)
        if inner.automatic:
            raise ConfigError(
                "update=grouped runs its updates itself: its inner strategy must step the optimizer (manual, "
                "truncated or graphed), not automatic"
            )
        self.per_step = per_step

    def describe(self) -> str:
        return f"grouped({self.inner.describe()}, K={self.per_step})"

    def training_step(self, batch: list, batch_idx: int) -> dict:
        """A group of up to K batches (the training loader hands groups: src/data/tensors.py BatchGroups), each
        trained on as the inner strategy's training_step would."""
        trainer, losses, samples = self.task.trainer, [], 0
        for one in batch:
            if 0 <= trainer.max_steps <= trainer.global_step:
                break
            loss = self.inner.train_on(one)
            if loss is not None:
                losses.append((loss, len(one.x)))
            samples += len(one.x)
        if not samples:
            return {"samples": 0}
        # train/loss is the group's last batch's, the value one update per step logs at that batch (and what
        # metrics.json reports at an epoch's end), so grouping changes no record; the step returns the mean,
        # in which any batch's NaN shows
        if not losses:
            return {"samples": samples}
        self.log_loss(*losses[-1], internals.is_last_batch(trainer))
        loss = torch.stack([value for value, _ in losses]).mean()
        # "samples": what Throughput counts (the `batch` Lightning passes callbacks is the whole group)
        return {"loss": loss, "samples": samples}
