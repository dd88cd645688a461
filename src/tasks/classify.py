"""Many-to-one: a whole sequence -> one class (sequential MNIST, text classification)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.models.stack import last_step
from src.tasks.base import RecurrentTask

POOLS = ("last", "mean", "max")


def pool_steps(outputs: torch.Tensor, lengths: torch.Tensor | None, how: str) -> torch.Tensor:
    """Mean or max of the outputs over each sequence's real steps (padding never enters)."""
    if lengths is None:
        return outputs.mean(1) if how == "mean" else outputs.amax(1)
    lengths = lengths.to(outputs.device)
    real = (torch.arange(outputs.shape[1], device=outputs.device) < lengths[:, None])[..., None]
    if how == "mean":
        return (outputs * real).sum(1) / lengths[:, None].clamp(min=1)
    return outputs.masked_fill(~real, float("-inf")).amax(1)


class SequenceClassifier(RecurrentTask):
    """encoder -> recurrent stack -> last real step (fwd and bwd ends for bi), or the mean or max over the real
    steps (task.pool) -> MLP head -> logits."""

    kind = "classify"

    def __init__(
        self,
        head_hidden: int = 64,
        head_dropout: float = 0.0,
        pool: str = "last",
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        **kwargs,
    ):
        if pool not in POOLS:
            raise ConfigError(f"task.pool={pool!r} is not one of {POOLS}")
        self.pool = pool  # before the base class attaches the update strategy, which asks truncation_refusal()
        super().__init__(monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        classes = self.spec.num_classes
        if head_hidden < 0:
            raise ConfigError(f"task.head_hidden={head_hidden} must be >= 0 (0 = a single linear layer)")
        size = self.stack.output_size
        self.classifier = (
            nn.Sequential(
                nn.Linear(size, head_hidden), nn.ReLU(), nn.Dropout(head_dropout), nn.Linear(head_hidden, classes)
            )
            if head_hidden
            else nn.Linear(size, classes)
        )
        metrics = MetricCollection(
            {"acc": MulticlassAccuracy(classes, average="micro"), "f1": MulticlassF1Score(classes, average="macro")}
        )
        self.val_metrics, self.test_metrics = (metrics.clone(prefix=f"{s}/") for s in ("val", "test"))
        # Training accuracy as two running counts on the device: the metric objects' per-step update (acc and
        # macro F1) cost about 4% of a small model's training speed on CPU (python -m src.bench overhead).
        self.register_buffer("train_right", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("train_seen", torch.zeros((), dtype=torch.long), persistent=False)
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def truncation_refusal(self) -> str | None:
        if self.spec.padded:
            return (
                "truncation=tbptt needs equal-length sequences for classification: in a padded batch each "
                "sequence's last step falls in a different chunk; use truncation=none"
            )
        if self.pool != "last":
            return f"task.pool={self.pool} summarises every step; it needs truncation=none"
        return super().truncation_refusal()

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.pool == "last":
            return self.classifier(last_step(outputs, lengths, self.stack.bidirectional))
        return self.classifier(pool_steps(outputs, lengths, self.pool))

    def loss(self, logits: torch.Tensor, batch: Batch, t0: int, t1: int):
        if t1 < batch.x.shape[1]:
            return None  # the one target sits after the last step
        if self.training:  # read (a sync) once per epoch
            self.train_right += (logits.detach().argmax(-1) == batch.y).sum()
            self.train_seen += len(batch.y)
        return F.cross_entropy(logits, batch.y), len(batch.y)

    def epoch_values(self, split: str, sanity_checking: bool = False) -> dict:
        if split != "train":
            return super().epoch_values(split, sanity_checking)
        values = {"train/acc": self.train_right / self.train_seen} if self.train_seen > 0 else {}
        self.train_right.zero_()
        self.train_seen.zero_()
        return values

    def evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        logits = self(batch.x, batch.lengths)
        getattr(self, f"{split}_metrics").update(logits, batch.y)
        getattr(self, f"{split}_loss").update(F.cross_entropy(logits, batch.y), weight=len(batch.y))

    def eval_values(self, split: str) -> dict:
        metrics, loss = getattr(self, f"{split}_metrics"), getattr(self, f"{split}_loss")
        values = {**metrics.compute(), f"{split}/loss": loss.compute()}
        metrics.reset()
        loss.reset()
        return values
