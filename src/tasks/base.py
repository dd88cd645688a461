"""What every task shares: the model (encoder -> recurrent stack -> the task's head), its optimizer, evaluation.

A task module implements the model's head, its loss and its evaluation, and inherits the rest:

    head(outputs, lengths)              -> predictions from the stack's outputs [B, T, H]
    loss(predictions, batch, t0, t1)    -> (loss, n) for the targets at time steps [t0, t1), or None if that
                                           window holds no target (a many-to-one task before its last step)
    evaluate(batch, batch_idx, split)   update the split's metric objects; eval_values(split) -> their values

How an optimizer update runs (Lightning's loop, manual with clipping, truncated BPTT, K updates per step, a CUDA
graph per update) is the `update` strategy's business (src/updates/, chosen by src/train.py): the training step
and the hooks around updates are delegated to it. Full BPTT calls head and loss once over the whole sequence
(t0=0, t1=T); truncated BPTT once per window, so every task gets truncation for free.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MaxMetric, MinMetric

from src.common.errors import ConfigError
from src.common.metrics import better as metric_direction
from src.data.tensors import Batch, DataSpec, check_spec
from src.models.embedding import token_embedding
from src.models.stack import RecurrentStack
from src.updates.automatic import Automatic
from src.updates.base import Update
from src.updates.schedules import check_optimization, fused_on_cpu


class RecurrentTask(L.LightningModule):
    kind = "task"  # the task kind a data set names (DataSpec.task) to be trained by this module
    supports_truncation = True  # False for tasks where chunking time means nothing (encoder-decoder)

    def __init__(
        self,
        spec: DataSpec,
        stack: Callable[..., RecurrentStack],
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., Any] | None = None,
        scheduler_interval: str = "epoch",
        embedding_dim: int = 64,
        freeze_embedding: bool = False,
        input_proj: int | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        update: Update | None = None,
        run_config: dict | None = None,
    ):
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
        # a monitor_mode against the metric's known direction would keep the worst epoch as the best
        better = metric_direction(str(monitor))
        if better and better != monitor_mode:
            raise ConfigError(
                f"task.monitor={monitor} with task.monitor_mode={monitor_mode}: the best checkpoint "
                f"would be the worst epoch; set task.monitor_mode={better}"
            )
        self.val_best = MaxMetric() if monitor_mode == "max" else MinMetric()
        self.val_best.persistent(True)  # kept in checkpoints, so a resumed run still knows its best epoch
        # The resolved config, stored in checkpoints so that commands can rebuild the model (src/records/rebuild.py).
        self.run_config: dict = run_config or {}
        self.update = update or Automatic()
        self.update.attach(self)

    # -- what a task implements ------------------------------------------------------------------------------
    def head(self, outputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def loss(self, predictions: torch.Tensor, batch: Batch, t0: int, t1: int) -> tuple[torch.Tensor, int] | None:
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

    # -- the model ----------------------------------------------------------------------------------------------
    @property
    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None):
        """encoder + recurrent stack over x (the whole sequence, or one chunk of it) -> (outputs, state)"""
        return self.stack(self.encoder(x), lengths, state)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None):
        outputs, state = self.encode(x, lengths, state)
        return self.head(outputs, lengths)

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """The loss of one batch over its whole sequence (full BPTT)."""
        loss, _ = self.loss(self(batch.x, batch.lengths), batch, 0, batch.x.shape[1])
        return loss

    # -- training: the update strategy's ----------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        return self.update.training_step(batch, batch_idx)

    def on_train_start(self) -> None:
        self.update.on_train_start()

    def on_train_epoch_start(self) -> None:
        self.update.on_train_epoch_start()

    def on_train_epoch_end(self) -> None:
        self.update.on_train_epoch_end()
        self.log_dict(self.epoch_values("train"), sync_dist=True, batch_size=1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.update.on_before_optimizer_step(optimizer)

    def configure_gradient_clipping(
        self, optimizer: torch.optim.Optimizer, gradient_clip_val: Any = None, gradient_clip_algorithm: Any = None
    ) -> None:
        # Lightning's loop calls this under automatic optimization only; the Trainer's own clipping arguments stay
        # unset (src/runs/build.py refuses trainer.gradient_clip_*): clipping is the update strategy's setting.
        self.update.configure_gradient_clipping(optimizer)

    def truncation_refusal(self) -> str | None:
        """Why this task cannot train on windows of its sequences (truncation=tbptt), or None: asked when a truncating
        strategy attaches, so the refusal comes before any data is trained on."""
        if not self.supports_truncation:
            return f"truncation=tbptt means nothing for the {type(self).__name__} task; use truncation=none"
        return None

    def configure_optimizers(self):
        params = list(self.parameters())
        optimizer = self.optimizer_factory(params=params, **fused_on_cpu(self.optimizer_factory, params))
        if not self.scheduler_factory:  # none, or scheduler=none (an empty config)
            return optimizer
        scheduler = {"scheduler": self.scheduler_factory(optimizer=optimizer), "interval": self.scheduler_interval}
        if self.automatic_optimization:  # (otherwise the update strategy reads the monitor itself)
            scheduler["monitor"] = self.monitor
        return {"optimizer": optimizer, "lr_scheduler": scheduler}

    # -- evaluation -----------------------------------------------------------------------------------------------
    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.epoch_values("val", self.trainer.sanity_checking), prog_bar=True)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self.evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.epoch_values("test"))
        if self.trainer.is_global_zero:
            self.write_files("test", Path(self.trainer.default_root_dir), self.trainer.loggers)

    def on_fit_start(self) -> None:
        if self.trainer.is_global_zero:
            self.write_files("fit", Path(self.trainer.default_root_dir), self.trainer.loggers)

    # -- what the hooks above log and write: also what a stacked job logs and writes for each member --------------
    def epoch_values(self, split: str, sanity_checking: bool = False) -> dict[str, Any]:
        """What the task logs at the end of an epoch of `split` (train, val, test), its metric objects then reset:
        the split's metrics, and for val `<monitor>_best` so far (not while Lightning's sanity check runs)."""
        if split == "train":
            return {}
        values = self.eval_values(split)
        if split == "val" and not sanity_checking and self.monitor in values:
            self.val_best.update(values[self.monitor])
            values[f"{self.monitor}_best"] = self.val_best.compute()
        if split == "test" and self.spec.baselines:
            # `test/baseline_<metric>`: what a trivial predictor scores on the test split (src/data/baselines.py)
            values.update({f"test/baseline_{k}": float(v) for k, v in self.spec.baselines.items()})
        return values

    def write_files(self, stage: str, out: Path, loggers: list) -> None:
        """Files the task leaves in its run dir `out` at the start of fitting (`stage` fit) or after testing
        (test), shown to `loggers` where they take files: none by default."""

    # -- checkpoints ----------------------------------------------------------------------------------------------
    def on_load_checkpoint(self, checkpoint: dict) -> None:
        check_spec(checkpoint, self.spec)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        self.update.on_save_checkpoint(checkpoint)
        checkpoint["rnn_bench"] = {"config": self.run_config, "spec": self.spec.shape()}
