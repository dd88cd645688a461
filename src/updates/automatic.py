"""Lightning's automatic optimization: the task returns the loss, Lightning's loop runs backward, the optimizer
step, clipping (trainer.gradient_clip_val / gradient_clip_algorithm) and the LR schedulers."""

from __future__ import annotations

from typing import Any

import torch

from src.updates.base import Update


class Automatic(Update):
    automatic = True
    name = "automatic"

    def train_on(self, batch: Any) -> torch.Tensor:
        return self.task.batch_loss(batch)  # not detached: Lightning's loop runs its backward
