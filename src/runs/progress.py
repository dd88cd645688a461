"""The progress bars of progress=tqdm and progress=rich (conf/progress/): Lightning's, without the `v_num` entry,
which holds the loggers' versions (the W&B run id, an empty CSV version) and tells nothing about the run that the
run's first console line does not, and counting batches where a Lightning step trains a group of them
(update=grouped, update=auto's default): the bar's total, position and rate are those of one batch per step."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.callbacks import TQDMProgressBar as LightningTQDMProgressBar

from src.data.tensors import BatchGroups


class CountsBatches:
    """Lightning's bars count training steps; where a step is a group of batches (the training loader hands
    BatchGroups), the total and the position are turned into batches."""

    def _groups(self) -> BatchGroups | None:
        loader = self.trainer.train_dataloader
        return loader if isinstance(loader, BatchGroups) else None

    @property
    def total_train_batches(self) -> int | float:
        groups = self._groups()
        if groups is None:
            return super().total_train_batches
        total = groups.epoch_batches()
        if self.trainer.max_epochs == -1 and self.trainer.max_steps is not None and self.trainer.max_steps > 0:
            return min(total, self.trainer.max_steps - self.trainer.global_step)
        return total

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        groups = self._groups()
        if groups is not None:  # the batches trained this epoch, counted from 0 as Lightning's batch_idx is
            batch_idx = min((batch_idx + 1) * groups.per_step, groups.epoch_batches()) - 1
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class TQDMProgressBar(CountsBatches, LightningTQDMProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class RichProgressBar(CountsBatches, LightningRichProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
