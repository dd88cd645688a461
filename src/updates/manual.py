"""Manual optimization: one optimizer update per batch, run by the strategy, with the clipping and LR schedulers
that Lightning only runs under automatic optimization.

Clipping (update.gradient_clip_val / gradient_clip_algorithm, the base class's settings) runs in
on_before_optimizer_step, i.e. after Lightning's fp16 GradScaler has unscaled the gradients. Schedulers are
stepped at their interval ("step" or "epoch"); ReduceLROnPlateau reads the monitored metric itself.
"""

from __future__ import annotations

from typing import Any

import torch

from src.updates.base import Update


class Manual(Update):
    name = "manual"

    def train_on(self, batch: Any) -> torch.Tensor:
        loss = self.task.batch_loss(batch)
        self.step(loss)
        return loss.detach()

    def step(self, loss: torch.Tensor) -> None:
        """One optimizer update from `loss`."""
        optimizer = self.task.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.task.manual_backward(loss)
        optimizer.step()  # clipping happens in on_before_optimizer_step, after fp16 unscaling
        self.step_schedulers("step")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.gradient_clip_val:
            self.task.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

    def step_schedulers(self, interval: str) -> None:
        task = self.task
        if not task.scheduler_factory or task.scheduler_interval != interval:
            return
        scheduler = task.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = task.trainer.callback_metrics.get(task.monitor)
            if value is not None:
                scheduler.step(value)
        else:
            scheduler.step()

    def on_train_epoch_end(self) -> None:
        self.step_schedulers("epoch")
