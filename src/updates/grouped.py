"""K batches per Lightning training step, one optimizer update each, in the order the loader gives them.

The same updates as K = 1, bit for bit, with the Trainer's per-step host cost (hooks, progress, logging) paid once
per K updates instead of once per update. Each batch is trained by the inner strategy (manual, truncated or
graphed: the `inner` node of conf/update/grouped.yaml and graphed.yaml); this one only takes the batches and keeps
Lightning's counts in batches.
"""

from __future__ import annotations

import warnings
from typing import Any

import lightning as L
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
        self._preparation_changes: bool | None = None  # see batch_ready

    def describe(self) -> str:
        return f"grouped({self.inner.describe()}, K={self.per_step})"

    def attach(self, task: L.LightningModule) -> None:
        super().attach(task)
        # Lightning hands a step the loader's iterator, to take several batches, when the training_step it finds
        # has a `dataloader_iter` parameter: this instance's training_step is the grouped one.
        task.training_step = self.training_step
        warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument")  # Lightning's "experimental"

    def training_step(self, dataloader_iter) -> dict:
        """The next (up to) K batches, each trained on as the inner strategy's training_step would."""
        trainer, losses, samples, taken = self.task.trainer, [], 0, 0
        for _ in range(self.per_step):
            if dataloader_iter.done or 0 <= trainer.max_steps <= trainer.global_step:
                break
            try:
                batch, _, _ = next(dataloader_iter)
            except StopIteration:  # a resumed epoch's loader yields fewer batches than its length says
                break
            if not self.batch_ready(batch):
                batch = internals.prepare_batch(self.task, batch)
            loss = self.inner.train_on(batch)
            if loss is not None:
                losses.append(loss)
            samples, taken = samples + len(batch.x), taken + 1
        if taken > 1:  # Lightning counted this step as one batch
            internals.count_extra_batches(trainer, taken - 1)
        if not samples:
            return {"samples": 0}
        loss = torch.stack(losses).mean() if losses else None
        self.log_loss(loss, samples, dataloader_iter.done)
        # "samples": what Throughput counts (the `batch` Lightning passes callbacks here is only the last one)
        return {"loss": loss, "samples": samples} if loss is not None else {"samples": samples}

    def batch_ready(self, batch: Any) -> bool:
        """True when Lightning's per-batch preparation would leave `batch` as it is: its tensors already on this
        device (the in-memory data sets put them there), a precision that does not convert inputs, no transfer
        hook of the module's or the data module's own. Walking a batch through that preparation costs host
        time that matters next to a small model's update on a GPU (docs/speed.md)."""
        if self._preparation_changes is None:
            self._preparation_changes = internals.preparation_changes_batches(self.task)
        device = self.task.device
        return not self._preparation_changes and all(t is None or t.device == device for t in batch)
