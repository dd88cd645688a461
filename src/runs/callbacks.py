"""Callbacks of the suite's own; everything else comes from Lightning's."""

from __future__ import annotations

import atexit
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelSummary as LightningModelSummary

from src.common.errors import UserError
from src.common.lightning_internals import model_summary_table

log = logging.getLogger(__name__)


def step_samples(outputs, batch) -> int:
    """Samples a training step took: a step of several batches (update=grouped, graphed) says how many, since the
    `batch` Lightning passes callbacks then is only its last one."""
    return outputs["samples"] if isinstance(outputs, dict) and "samples" in outputs else len(batch[0])


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
        self.samples += step_samples(outputs, batch) * trainer.world_size

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
            pl_module.log("perf/train_samples_per_s", self.samples / self.seconds, sync_dist=False, batch_size=1)


class ModelSummary(LightningModelSummary):
    """Lightning's model summary, as a plain table on the console and in train.log, without the FLOPs column and
    total: Lightning counts FLOPs only for a module with an example_input_array (the suite's have none), so they
    would all read 0. A stacked job's (src/runs/seeds.py StackedTask: its members in `tasks`) is the summary of
    one member, headed as each member's: the job's own would be one row, the list of S tasks."""

    members = 0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        tasks = getattr(pl_module, "tasks", None)
        self.members = len(tasks) if isinstance(tasks, torch.nn.ModuleList) else 0
        super().on_fit_start(trainer, tasks[0] if self.members else pl_module)

    def summarize(
        self,
        summary_data: list[tuple[str, list[str]]],
        total_parameters: int,
        trainable_parameters: int,
        model_size: float,
        total_training_modes: dict[str, int],
        total_flops: int,
        **summarize_kwargs,
    ) -> None:
        columns = [(name, values) for name, values in summary_data if total_flops or name != "FLOPs"]
        table = model_summary_table(
            columns, total_parameters, trainable_parameters, model_size, total_training_modes, total_flops
        )
        each = f" (each of the {self.members} members)" if self.members else ""
        log.info(f"model summary{each}:\n" + table)


class FiniteLoss(L.Callback):
    """Stops the run with a clear message once the training loss is NaN or inf.

    The check reads the loss on the host only every `every` batches of an epoch (a sync on GPUs), however many
    a Lightning step trains (update=grouped hands a list of them); in between, a device-side flag remembers any
    non-finite loss. The epoch's last.ckpt is never overwritten by a diverged model, because the run stops
    before the epoch ends.
    """

    def __init__(self, every: int = 20):
        self.every, self.bad, self.first_step, self.batches = every, None, None, 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.batches = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        before, self.batches = self.batches, self.batches + (len(batch) if isinstance(batch, list) else 1)
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        finite = torch.isfinite(loss.detach()).all()
        self.bad = ~finite if self.bad is None else self.bad | ~finite
        if self.batches // self.every > before // self.every:
            self.check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.check(trainer)

    def check(self, trainer) -> None:
        if self.bad is not None and bool(self.bad):
            kept = _last_good(trainer)
            raise TrainingDiverged(
                f"the training loss became NaN or inf in epoch {trainer.current_epoch} (detected by step "
                f"{trainer.global_step}){kept}. Lower optimizer.lr, set update.gradient_clip_val (e.g. 1.0), "
                f"or use a gated cell"
            )


class TrainingDiverged(UserError):
    pass


class EndProcessGroup(L.Callback):
    """Ends torch.distributed's process group when a DDP process exits. Lightning ends only NCCL's; a gloo group
    (DDP on CPUs) left to the interpreter's teardown can abort a process that finished its training ("terminate
    called without an active exception", SIGABRT), failing the run."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # in each DDP process
            atexit.unregister(end_process_group)  # once per process, however many fits
            atexit.register(end_process_group)


def end_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _last_good(trainer) -> str:
    """The checkpoints written before the loss diverged, as files that exist (a folder named before any
    checkpoint was saved does not: in the first epoch there is none)."""
    saved = []
    for callback in trainer.checkpoint_callbacks:
        for path in (getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")):
            if path and Path(path).is_file() and path not in saved:
                saved.append(path)
    if not saved:
        return "; no checkpoint was saved before it diverged"
    return f"; the last good checkpoint{'s are' if len(saved) > 1 else ' is'} {', '.join(saved)}"


class WandbSummary(L.Callback):
    """Tells W&B to keep the best of the monitored validation metric (max or min, as the task says) beside its last
    value in the run summary (val/acc.max, val/acc.last). Does nothing without W&B."""

    def on_fit_start(self, trainer, pl_module) -> None:
        from lightning.pytorch.loggers import WandbLogger

        from src.runs.loggers import each_logger

        for logger in each_logger(trainer.loggers):  # a stacked job's members' runs too
            if isinstance(logger, WandbLogger) and trainer.is_global_zero:
                run = logger.experiment
                # <monitor>_best (logged each epoch) and test/* keep W&B's default, their last value, as plain
                # summary columns: a W&B sweep's metric (val/acc_best) is looked up there.
                run.define_metric(pl_module.monitor, summary=f"{pl_module.monitor_mode},last")


class LearningCurve(L.Callback):
    """The monitored validation value after every validation (not the sanity check), per key: the monitor, and a
    stacked job's `seed=<s>/<monitor>` for each member. With `stop_at` (budget.updates) it also asks the Trainer
    to stop once that many updates are done, so the epoch cut short by the budget is validated (Lightning
    validates a part-epoch only when asked to stop, not at max_steps)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.history: dict[str, list[float]] = {}
        self.stop_at = stop_at

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking:
            return
        monitor = pl_module.monitor
        for key, value in trainer.callback_metrics.items():
            if key == monitor or key.endswith("/" + monitor):
                self.history.setdefault(key, []).append(float(value))

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.stop_at is not None and trainer.global_step >= self.stop_at:
            trainer.should_stop = True

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {k: list(v) for k, v in state.get("history", {}).items()}
