"""Lightning's automatic optimization: the task returns the loss, Lightning's loop runs backward, the optimizer
step and the LR schedulers. Clipping (update.gradient_clip_val / gradient_clip_algorithm) goes through Lightning's
public hook for it, LightningModule.configure_gradient_clipping, which the loop calls after the fp16 GradScaler has
unscaled the gradients and after the on_before_optimizer_step hooks (where src/diagnostics/report.py measures the norms
before clipping): the same place as the manual strategies clip."""

from __future__ import annotations

from typing import Any

import torch

from src.updates.base import Update


class Automatic(Update):
    automatic = True
    name = "automatic"

    def train_on(self, batch: Any) -> torch.Tensor:
        return self.task.batch_loss(batch)  # not detached: Lightning's loop runs its backward

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer) -> None:
        if self.gradient_clip_val:
            self.task.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)
