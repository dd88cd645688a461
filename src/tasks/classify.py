"""Many-to-one: a whole sequence -> one class (sequential MNIST, text classification)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from src.data.tensors import Batch
from src.errors import ConfigError
from src.models.stack import last_step
from src.tasks.base import RecurrentTask


class SequenceClassifier(RecurrentTask):
    """encoder -> recurrent stack -> last real step (fwd and bwd ends for bi) -> MLP head -> logits."""

    def __init__(self, head_hidden: int = 64, head_dropout: float = 0.0, monitor: str = "val/acc",
                 monitor_mode: str = "max", **kwargs):
        super().__init__(monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        classes = self.spec.num_classes
        if head_hidden < 0:
            raise ConfigError(f"task.head_hidden={head_hidden} must be >= 0 (0 = a single linear layer)")
        size = self.stack.output_size
        self.head = (nn.Sequential(nn.Linear(size, head_hidden), nn.ReLU(), nn.Dropout(head_dropout),
                                   nn.Linear(head_hidden, classes)) if head_hidden else nn.Linear(size, classes))
        metrics = MetricCollection({"acc": MulticlassAccuracy(classes, average="micro"),
                                    "f1": MulticlassF1Score(classes, average="macro")})
        self.train_metrics, self.val_metrics, self.test_metrics = (metrics.clone(prefix=f"{s}/")
                                                                   for s in ("train", "val", "test"))
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        outputs, _ = self.encode(x, lengths)
        return self.head(last_step(outputs, lengths, self.stack.bidirectional))

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        logits = self(batch.x, batch.lengths)
        loss = F.cross_entropy(logits, batch.y)
        # Metric objects are updated on the device every step but computed (and synced) once per epoch.
        self.train_metrics.update(logits.detach(), batch.y)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch.y))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.train_metrics.compute())
        self.train_metrics.reset()

    def _evaluate(self, batch: Batch, split: str) -> None:
        logits = self(batch.x, batch.lengths)
        getattr(self, f"{split}_metrics").update(logits, batch.y)
        getattr(self, f"{split}_loss").update(F.cross_entropy(logits, batch.y), weight=len(batch.y))

    def _log_eval(self, split: str) -> dict:
        values = {**getattr(self, f"{split}_metrics").compute(), f"{split}/loss": getattr(self, f"{split}_loss").compute()}
        getattr(self, f"{split}_metrics").reset()
        getattr(self, f"{split}_loss").reset()
        self.log_dict(values, prog_bar=split == "val")
        return values

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        values = self._log_eval("val")
        if not self.trainer.sanity_checking:
            self.val_best.update(values[self.monitor])
            self.log(f"{self.monitor}_best", self.val_best.compute())

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_eval("test")
