"""Callbacks of the suite's own; everything else comes from Lightning's."""
from __future__ import annotations

import time

import lightning as L
import torch


class Throughput(L.Callback):
    """Logs `perf/train_samples_per_s`: training samples over time spent in training epochs, validation excluded.

    Logged (not kept on the callback) so it survives ddp_spawn and reaches CSV, W&B and metrics.json alike.
    """

    def __init__(self):
        self.samples, self.seconds, self.started, self.paused = 0, 0.0, None, False

    def _sync(self, trainer: L.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize(trainer.strategy.root_device)

    def _start(self, trainer: L.Trainer) -> None:
        self._sync(trainer)
        self.started = time.perf_counter()

    def _stop(self, trainer: L.Trainer) -> None:
        if self.started is not None:
            self._sync(trainer)
            self.seconds += time.perf_counter() - self.started
            self.started = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.samples += len(batch[0]) * trainer.world_size

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        if self.started is not None:  # validation inside a training epoch: pause the clock
            self._stop(trainer)
            self.paused = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if self.paused:
            self.paused = False
            self._start(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._stop(trainer)
        if self.seconds > 0:
            pl_module.log("perf/train_samples_per_s", self.samples / self.seconds, sync_dist=False)
