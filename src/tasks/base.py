"""What every task shares: input layer -> recurrent stack, the training step, optimizer and LR schedule.

A task module implements two things and inherits the rest:

    head(outputs, lengths)              -> predictions from the stack's outputs [B, T, H]
    loss(predictions, batch, t0, t1)    -> (loss, n) for the targets at time steps [t0, t1), or None if that
                                           window holds no target (a many-to-one task before its last step)

Full BPTT calls them once over the whole sequence (t0=0, t1=T). Truncated BPTT (src/tasks/truncation.py)
calls them once per window, carrying the detached state between windows, so every task gets truncation for
free. With `truncation.carry_across_batches`, `carried_state(split)` / `keep_state(split, state)` let a stream
task's evaluation carry its state from batch to batch too (training does it here).

`updates_per_step` = K > 1 takes K batches per Lightning training step, one optimizer update each, in the order
the loader gives them: the same updates as K = 1, with the Trainer's per-step host cost (hooks, progress,
logging; measured in docs/speed.md) paid once per K updates instead of once per update.
"""
from __future__ import annotations

import dataclasses
import logging
import re
import warnings
from typing import Any, Callable, Optional

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from src.checkpoints import check_spec
from src.data.tensors import Batch, DataSpec
from src.errors import ConfigError
from src.models.embedding import token_embedding
from src.models.stack import RecurrentStack, detach_state
from src.tasks.schedules import follow_config
from src.tasks.truncation import Truncation, tbptt_training_step
from src.tasks.update_graph import UpdateGraph, check_mode as check_graph_mode, portable_optimizer_states

log = logging.getLogger(__name__)
# Metric names whose direction is known: a monitor_mode against it would keep the worst epoch as the best.
LOWER_IS_BETTER = re.compile(r"^(loss|mse|mae|rmse|ppl|perplexity|bpc|nll|error|cer|wer)(_|$)")
HIGHER_IS_BETTER = re.compile(r"^(acc|f1|exact_match|accuracy)(_|$)")


def check_optimization(optimizer: Callable[..., torch.optim.Optimizer], scheduler: Optional[Callable],
                       step: bool = False) -> None:
    """Build the optimizer and scheduler once on a probe parameter: a value torch refuses (optimizer.lr=-1, a
    string where a number belongs) is a ConfigError naming the group now, not a traceback inside fit. With
    `step` (src.train, for a run that will train), the schedule is also stepped, which some settings fail only
    then (T_max=0, step_size=0)."""
    scheduler = scheduler or None  # scheduler=none is an empty config
    for group, factory in (("optimizer", optimizer), ("scheduler", scheduler)):
        if factory is not None and not callable(factory):
            raise ConfigError(f"{group}={factory!r} is not a config of the {group} group; choose one of "
                              f"conf/{group}/")
    probe_param = torch.zeros(1, requires_grad=True)
    try:
        probe = optimizer(params=[probe_param])
    except (ValueError, TypeError, KeyError) as e:
        raise ConfigError(f"optimizer: {_described(optimizer)} refused its settings ({type(e).__name__}: {e}); "
                          f"fix the optimizer.* value") from None
    if scheduler is not None:
        try:
            schedule = scheduler(optimizer=probe)
            for _ in range(2 if step else 0):
                probe.step()
                schedule.step(*([0.0] if isinstance(schedule, torch.optim.lr_scheduler.ReduceLROnPlateau) else []))
        except (ValueError, TypeError, KeyError, ZeroDivisionError) as e:
            raise ConfigError(f"scheduler: {_described(scheduler)} refused its settings ({type(e).__name__}: "
                              f"{e}); fix the scheduler.* value") from None


def _described(factory: Callable) -> str:
    func = getattr(factory, "func", factory)
    settings = ", ".join(f"{k}={v!r}" for k, v in getattr(factory, "keywords", {}).items())
    return f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', func)}({settings})"


class RecurrentTask(L.LightningModule):
    kind = "task"  # the task kind a data set names (DataSpec.task) to be trained by this module
    supports_truncation = True  # False for tasks where chunking time means nothing (encoder-decoder)
    # False where the loss reads a value back to the host (a count of targets), which a CUDA graph cannot record
    capturable_loss = True

    def __init__(self, spec: DataSpec, stack: Callable[..., RecurrentStack],
                 optimizer: Callable[..., torch.optim.Optimizer],
                 scheduler: Optional[Callable[..., Any]] = None, scheduler_interval: str = "epoch",
                 embedding_dim: int = 64, freeze_embedding: bool = False, input_proj: Optional[int] = None,
                 monitor: str = "val/loss", monitor_mode: str = "min", truncation: Optional[dict] = None,
                 gradient_clip_val: Optional[float] = None, gradient_clip_algorithm: str = "norm",
                 updates_per_step: int = 1, graph_updates: bool = False):
        super().__init__()
        self.spec, self.monitor, self.monitor_mode = spec, monitor, monitor_mode
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        check_optimization(optimizer, scheduler)
        self.scheduler_interval = scheduler_interval
        if spec.input_kind == "tokens":  # ids, 0 = padding; initial vectors per the `embedding` config group
            self.encoder: nn.Module = token_embedding(spec, embedding_dim, freeze_embedding)
            size = embedding_dim
        elif input_proj:
            self.encoder, size = nn.Linear(spec.input_size, input_proj), input_proj
        else:
            self.encoder, size = nn.Identity(), spec.input_size
        self.stack = stack(input_size=size)
        if monitor_mode not in ("min", "max"):
            raise ConfigError(f"task.monitor_mode={monitor_mode!r} must be 'min' or 'max'")
        name = str(monitor).rsplit("/", 1)[-1]
        better = "min" if LOWER_IS_BETTER.search(name) else "max" if HIGHER_IS_BETTER.search(name) else None
        if better and better != monitor_mode:
            raise ConfigError(f"task.monitor={monitor} with task.monitor_mode={monitor_mode}: the best checkpoint "
                              f"would be the worst epoch; set task.monitor_mode={better}")
        self.val_best = MaxMetric() if monitor_mode == "max" else MinMetric()
        self.val_best.persistent(True)  # kept in checkpoints, so a resumed run still knows its best epoch
        self.run_config: dict = {}  # the resolved config, stored in checkpoints so commands can rebuild the model
        self.truncation = Truncation.from_config(truncation)
        self._states: dict[str, Any] = {}
        if self.truncation is not None:
            if self.stack.bidirectional:
                raise ConfigError("truncation=tbptt cannot be combined with direction=bi: the backward direction "
                                  "would read across chunk boundaries; use direction=uni or truncation=none")
            if not self.supports_truncation:
                raise ConfigError(f"truncation=tbptt means nothing for the {type(self).__name__} task; "
                                  f"use truncation=none")
            # Several optimizer updates per batch: Lightning's automatic loop cannot do that.
            self.automatic_optimization = False
        self.gradient_clip_val, self.gradient_clip_algorithm = gradient_clip_val, gradient_clip_algorithm
        if not isinstance(updates_per_step, int) or isinstance(updates_per_step, bool) or updates_per_step < 1:
            raise ConfigError(f"updates_per_step={updates_per_step!r} must be a positive integer (or auto)")
        self.updates_per_step = updates_per_step
        self._preparation_may_change: Optional[bool] = None  # see batch_ready
        if updates_per_step > 1:
            self.automatic_optimization = False
            # Lightning hands a step the loader's iterator, to take several batches, when the training_step it
            # finds has a `dataloader_iter` parameter: this instance's training_step is the grouped one.
            self.training_step = self.grouped_training_step
            warnings.filterwarnings("ignore", message="Found `dataloader_iter` argument")  # Lightning's "experimental"
        # On a GPU, each of those updates as one CUDA graph where that is exact (src/tasks/update_graph.py).
        self.update_graph = (UpdateGraph(self) if check_graph_mode(graph_updates) and updates_per_step > 1
                             and self.truncation is None else None)

    # -- what a task implements ------------------------------------------------------------------------------
    def head(self, outputs: torch.Tensor, lengths: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, predictions: torch.Tensor, batch: Batch, t0: int, t1: int
             ) -> Optional[tuple[torch.Tensor, int]]:
        raise NotImplementedError

    def evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        """Update the split's metric objects with one evaluation batch ("val" or "test")."""
        raise NotImplementedError

    def eval_values(self, split: str) -> dict:
        """The split's metrics over the whole evaluation (synced across processes); resets them."""
        raise NotImplementedError

    def computed(self, split: str, names: tuple[str, ...]) -> dict:
        """{"<split>/<name>": value} of the metric objects `<split>_<name>`, computed over the whole evaluation
        (synced across processes), then reset: what eval_values returns for tasks whose metrics are plain."""
        values = {}
        for name in names:
            metric = getattr(self, f"{split}_{name}")
            values[f"{split}/{name}"] = metric.compute()
            metric.reset()
        return values

    # -- shared machinery ---------------------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None, state: Any = None):
        """encoder + recurrent stack over x (the whole sequence, or one chunk of it) -> (outputs, state)"""
        return self.stack(self.encoder(x), lengths, state)

    def forward(self, x: torch.Tensor, lengths: Optional[torch.Tensor] = None, state: Any = None):
        outputs, state = self.encode(x, lengths, state)
        return self.head(outputs, lengths)

    def training_step(self, batch: Batch, batch_idx: int) -> Optional[torch.Tensor]:
        loss = self.train_on(batch)
        self.log_train_loss(loss, len(batch.x), self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        return loss

    def grouped_training_step(self, dataloader_iter) -> Optional[dict]:
        """updates_per_step > 1: the next (up to) K batches, each trained on as training_step would."""
        trainer, losses, samples, taken = self.trainer, [], 0, 0
        for _ in range(self.updates_per_step):
            if dataloader_iter.done or 0 <= trainer.max_steps <= trainer.global_step:
                break
            try:
                batch, _, _ = next(dataloader_iter)
            except StopIteration:  # a resumed epoch's loader yields fewer batches than its length says
                break
            if not self.batch_ready(batch):
                # What Lightning does to each batch it hands training_step itself (precision, the hooks, device).
                batch = trainer.precision_plugin.convert_input(batch)
                batch = self._on_before_batch_transfer(batch, dataloader_idx=0)  # the module's or data module's
                batch = trainer.strategy.batch_to_device(batch)
            loss = self.train_on(batch)
            if loss is not None:
                losses.append(loss)
            samples, taken = samples + len(batch.x), taken + 1
        if taken > 1:
            # Lightning counted this step as one batch: count the others too, so that its batch counts (resuming
            # mid-epoch, the end of an epoch, val_check_interval) and the loggers' step stay in batches/updates.
            loop = trainer.fit_loop.epoch_loop
            loop.batch_progress.increment_by(taken - 1)
            loop._batches_that_stepped += taken - 1
        if not samples:
            return {"samples": 0}
        loss = torch.stack(losses).mean() if losses else None
        self.log_train_loss(loss, samples, dataloader_iter.done)
        # "samples": what Throughput counts (the `batch` Lightning passes callbacks here is only the last one)
        return {"loss": loss, "samples": samples} if loss is not None else {"samples": samples}

    def batch_ready(self, batch: Batch) -> bool:
        """True when Lightning's per-batch preparation would leave `batch` as it is: its tensors already on this
        device (the in-memory data sets put them there), a precision that does not convert inputs, no transfer
        hook of the module's or the data module's own. Walking a batch through that preparation costs host
        time that is a few percent of a small model's update on a GPU (docs/speed.md)."""
        if self._preparation_may_change is None:
            hooks = ("on_before_batch_transfer", "transfer_batch_to_device", "on_after_batch_transfer")
            owners = [(type(self), L.LightningModule)]
            if self.trainer.datamodule is not None:
                owners.append((type(self.trainer.datamodule), L.LightningDataModule))
            self._preparation_may_change = not (
                type(self.trainer.precision_plugin).convert_input is Precision.convert_input
                and all(getattr(cls, h) is getattr(base, h) for cls, base in owners for h in hooks))
        return not self._preparation_may_change and all(t is None or t.device == self.device for t in batch)

    def train_on(self, batch: Batch) -> Optional[torch.Tensor]:
        """Forward and loss of one training batch; under manual optimization also its update(s). The loss (or
        None where the batch holds no target)."""
        if self.truncation is not None:
            loss, state = tbptt_training_step(self, batch, self.carried_state("train", len(batch.x)))
            self.keep_state("train", state)
            return loss
        if self.automatic_optimization:
            return self.batch_loss(batch)  # Lightning runs backward and the step
        if self.update_graph is not None and (loss := self.update_graph(batch)) is not None:
            self.step_schedulers("step")
            return loss
        loss = self.batch_loss(batch)
        self.update(loss)
        return loss.detach()

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """The loss of one batch over its whole sequence (full BPTT)."""
        loss, _ = self.loss(self(batch.x, batch.lengths), batch, 0, batch.x.shape[1])
        return loss

    def update(self, loss: torch.Tensor) -> None:
        """One optimizer update from `loss` (manual optimization)."""
        optimizer = self.optimizers()
        optimizer.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        optimizer.step()  # clipping happens in on_before_optimizer_step, after fp16 unscaling
        self.step_schedulers("step")

    def log_train_loss(self, loss: Optional[torch.Tensor], batch_size: int, last_of_epoch: bool) -> None:
        if loss is not None and (self.trainer._logger_connector.should_update_logs or last_of_epoch):
            # Only on the steps the loggers write (trainer.log_every_n_steps) and on each epoch's last step (what
            # metrics.json reports): each logged value is read back to the host, a sync that on a GPU stalls the
            # queue of kernels (ANCHORS.md: logging every step costs more than the model). Lightning has no
            # public switch for the loggers' condition.
            self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)

    # -- state carried from batch to batch (truncation.carry_across_batches) -------------------------------------
    def carried_state(self, split: str, batch_size: int) -> Any:
        """The state the previous batch of this split ended with, or None (no carry, new epoch, other size)."""
        state = self._states.get(split)
        if state is None or not (self.truncation and self.truncation.carry_across_batches):
            return None
        first = state
        while isinstance(first, (tuple, list)):
            first = first[0]
        # A batch of another size (a stream's short last batch) has no rows that continue the previous ones. The
        # batch is dim -2 of a fused stack's [layers x directions, B, H] state and dim 0 of every layered cell's
        # (whose states may have 3 dims too: LRU's [B, N, 2], Mamba's [B, E*D, N]).
        batch_dim = -2 if getattr(self.stack, "fused", False) else 0
        return state if first.shape[batch_dim] == batch_size else None

    def keep_state(self, split: str, state: Any) -> None:
        if self.truncation and self.truncation.carry_across_batches:
            self._states[split] = detach_state(state)

    def on_train_epoch_start(self) -> None:
        self._states.pop("train", None)

    def on_validation_epoch_start(self) -> None:
        self._states.pop("val", None)

    def on_test_epoch_start(self) -> None:
        self._states.pop("test", None)

    # -- manual optimization (truncation): clipping and schedulers, which Lightning only does automatically -----
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.automatic_optimization and self.gradient_clip_val:
            self.clip_gradients(optimizer, self.gradient_clip_val, self.gradient_clip_algorithm)

    def step_schedulers(self, interval: str) -> None:
        if self.automatic_optimization or not self.scheduler_factory or self.scheduler_interval != interval:
            return
        scheduler = self.lr_schedulers()
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            value = self.trainer.callback_metrics.get(self.monitor)
            if value is not None:
                scheduler.step(value)
        else:
            scheduler.step()

    def on_train_epoch_end(self) -> None:
        self.step_schedulers("epoch")

    def on_train_start(self) -> None:
        if self.trainer.ckpt_path and self.scheduler_factory:  # resumed: the schedule follows this run's config
            for config in self.trainer.lr_scheduler_configs:
                changed = follow_config(config.scheduler, self.scheduler_factory, config.scheduler.optimizer)
                if changed:
                    log.warning(f"resumed with a new LR schedule ({'; '.join(changed)}): the learning rate "
                                f"is now {config.scheduler.optimizer.param_groups[0]['lr']:.3g}, as if the run had "
                                f"had this schedule from the start")

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(params=self.parameters())
        if not self.scheduler_factory:  # none, or scheduler=none (an empty config)
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": self.scheduler_interval}
        if self.automatic_optimization:  # (manual optimization: step_schedulers reads the monitor itself)
            scheduler["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        values = self.eval_values("val")
        self.log_dict(values, prog_bar=True)
        self.log_best(values)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.eval_values("test"))

    def log_best(self, values: dict) -> None:
        """Track and log `<monitor>_best` from this validation epoch's values."""
        if not self.trainer.sanity_checking and self.monitor in values:
            self.val_best.update(values[self.monitor])
            self.log(f"{self.monitor}_best", self.val_best.compute())

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_spec(checkpoint, self.spec)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.update_graph is not None:
            portable_optimizer_states(checkpoint)
        checkpoint["rnn_bench"] = {"config": self.run_config, "spec": dataclasses.asdict(self.spec)}
