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


class FailOnNonFiniteLoss(L.Callback):
    """Stops the run with an error once the training loss is NaN or inf: the weights are then lost, and a run that
    went on would end with metrics that look like results. In a sweep the error lands in metrics.json.

    Non-finite steps are flagged on the device and the flag is read every `log_every_n_steps` steps and at the end
    of each epoch, so a GPU run is not synchronised on every step."""

    def __init__(self):
        self.bad = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        step_bad = ~torch.isfinite(loss.detach())
        self.bad = step_bad if self.bad is None else self.bad | step_bad
        if trainer.global_step % max(1, trainer.log_every_n_steps) == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)

    def _check(self, trainer) -> None:
        if self.bad is not None and bool(self.bad):
            raise FloatingPointError(
                f"the training loss became NaN or infinite (epoch {trainer.current_epoch}, by step "
                f"{trainer.global_step}); try a lower optimizer.lr or trainer.gradient_clip_val=1.0")


class WandbSummary(L.Callback):
    """Tells W&B to keep the best of the monitored validation metric (max or min, as the task says) beside its last
    value in the run summary (val/acc.max, val/acc.last). Does nothing without W&B."""

    def on_fit_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                run = logger.experiment
                # <monitor>_best (logged each epoch) and test/* keep W&B's default, their last value, as plain
                # summary columns: a W&B sweep's metric (val/acc_best) is looked up there.
                run.define_metric(pl_module.monitor, summary=f"{pl_module.monitor_mode},last")
