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


def check_per_step(name: str, value: object) -> None:
    """update.<name>: batches per Lightning step, a positive integer."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"update.{name}={value!r} must be a positive integer (batches per Lightning step)")


class Grouped(Wrapper):
    name = "grouped"

    def __init__(
        self,
        inner: Update,
        per_step: int,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        check_per_step("per_step", per_step)
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
            losses.append((self.inner.train_on(one), len(one.x)))
            samples += len(one.x)
        if not samples:
            return {"samples": 0}
        self.log_losses(losses, internals.is_last_batch(trainer))
        trained = [loss for loss, _ in losses if loss is not None]
        if not trained:
            return {"samples": samples}
        # "samples": what Throughput counts (the `batch` Lightning passes callbacks is the whole group); the
        # loss returned is the group's mean, in which any batch's NaN shows
        return {"loss": torch.stack(trained).mean(), "samples": samples}

    def log_losses(self, losses: list[tuple[torch.Tensor | None, int]], last_of_epoch: bool) -> None:
        """train/loss as one update per step logs it: each batch counts in the loggers' step (Lightning counts
        one per step), the loggers get the loss of each batch at which they write (every
        trainer.log_every_n_steps batches: the loader keeps that count), and the progress bar and metrics.json
        the group's last batch's."""
        trainer = self.task.trainer
        first = internals.logger_step(trainer)  # the group's first batch
        internals.count_batches(trainer, len(losses) - 1)
        loader = trainer.train_dataloader  # BatchGroups keeps the interval in batches (the Trainer's is in steps)
        every = loader.log_every() if hasattr(loader, "log_every") else trainer.log_every_n_steps
        written = False
        for index, (loss, _) in enumerate(losses, start=first):
            if loss is not None and every and (index + 1) % every == 0:
                for logger in trainer.loggers:
                    logger.log_metrics({"train/loss": float(loss), "epoch": trainer.current_epoch}, step=index)
                    logger.save()
                written = True
        last, size = next(((loss, size) for loss, size in reversed(losses) if loss is not None), (None, 0))
        if last is not None and (written or last_of_epoch):
            self.task.log("train/loss", last, prog_bar=True, logger=False, batch_size=size)
