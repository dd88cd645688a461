"""Lightning's automatic optimization: the task returns the loss, Lightning's loop runs backward, the optimizer
step and the LR schedulers. Clipping (update.gradient_clip_val / gradient_clip_algorithm) goes through Lightning's
public hook for it, LightningModule.configure_gradient_clipping, which the loop calls after the fp16 GradScaler has
unscaled the gradients and after the on_before_optimizer_step hooks (where src/diagnostics/report.py measures the norms
before clipping): the same place as the manual strategies clip."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from src.updates.base import Update


class Automatic(Update):
    automatic = True
    name = "automatic"

    def attach(self, task: L.LightningModule) -> None:
        super().attach(task)
        # The task's hook, as grouped.py replaces its training_step: the task itself knows nothing of clipping.
        task.configure_gradient_clipping = self.configure_gradient_clipping

    def train_on(self, batch: Any) -> torch.Tensor:
        return self.task.batch_loss(batch)  # not detached: Lightning's loop runs its backward

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        # The Trainer's own settings (the arguments) stay unset: clipping is this strategy's (src/train.py refuses
        # trainer.gradient_clip_*).
        if self.gradient_clip_val:
            self.task.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
