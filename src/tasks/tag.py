"""Many-to-many, aligned: one tag per input token (part-of-speech tagging).

encoder -> recurrent stack -> per-step classifier (emission scores [B, T, tags]) -> softmax, or a linear-chain
CRF over the emissions (task.head=crf, pytorch-crf). Targets are IGNORE (-100) on padded steps, so the loss and
every metric skip padding. Metrics: acc (token accuracy), f1 (macro over tags), oov_acc (accuracy on tokens
outside the training vocabulary, i.e. input id <unk>) and oov_tokens (how many such tokens were scored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection, SumMetric
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score

from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.data.tokens import IGNORE, UNK_ID
from src.tasks.base import RecurrentTask

HEADS = ("softmax", "crf")


class SequenceTagger(RecurrentTask):
    kind = "tag"

    def __init__(
        self,
        head: str = "softmax",
        head_hidden: int = 0,
        head_dropout: float = 0.0,
        monitor: str = "val/acc",
        monitor_mode: str = "max",
        **kwargs,
    ):
        super().__init__(monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        if head not in HEADS:
            raise ConfigError(f"task.head={head!r} is not one of {HEADS}")
        if head_hidden < 0:
            raise ConfigError(f"task.head_hidden={head_hidden} must be >= 0 (0 = a single linear layer)")
        tags, size = self.spec.num_classes, self.stack.output_size
        self.head_kind = head
        layers: list[nn.Module] = [nn.Dropout(head_dropout)]
        if head_hidden:
            layers += [nn.Linear(size, head_hidden), nn.ReLU(), nn.Dropout(head_dropout)]
            size = head_hidden
        self.emissions = nn.Sequential(*layers, nn.Linear(size, tags))
        self.crf = None
        if head == "crf":
            try:
                from torchcrf import CRF
            except ImportError:
                raise ConfigError("task.head=crf needs the pytorch-crf package: pip install pytorch-crf") from None
            self.crf = CRF(tags, batch_first=True)
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(tags, average="micro", ignore_index=IGNORE),
                "f1": MulticlassF1Score(tags, average="macro", ignore_index=IGNORE),
            }
        )
        self.train_metrics, self.val_metrics, self.test_metrics = (
            metrics.clone(prefix=f"{s}/") for s in ("train", "val", "test")
        )
        for split in ("val", "test"):
            setattr(self, f"{split}_oov", MulticlassAccuracy(tags, average="micro", ignore_index=IGNORE))
            setattr(self, f"{split}_oov_tokens", SumMetric())
            setattr(self, f"{split}_loss", MeanMetric())

    # -- the task protocol ------------------------------------------------------------------------------------
    def head(self, outputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.emissions(outputs)

    def loss(self, emissions: torch.Tensor, batch: Batch, t0: int, t1: int):
        """Mean loss over the real tokens of steps [t0, t1) and their count (None if the window has none)."""
        targets = batch.y[:, t0:t1]
        n = int((targets != IGNORE).sum())
        if n == 0:
            return None
        if self.crf is not None:
            if t0 > 0 or t1 < batch.y.shape[1]:
                raise ConfigError("task.head=crf scores whole sequences; it needs truncation=none")
            mask = targets != IGNORE
            loss = -self.crf(emissions, targets.masked_fill(~mask, 0), mask=mask, reduction="token_mean")
        else:
            loss = F.cross_entropy(emissions.flatten(0, 1), targets.flatten(), ignore_index=IGNORE)
            if self.training:  # Metric objects: updated on the device every step, computed once per epoch
                self.train_metrics.update(emissions.detach().flatten(0, 1), targets.flatten())
        return loss, n

    # -- evaluation -------------------------------------------------------------------------------------------
    def predict_tags(self, emissions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Tag ids [B, T]: the best path under the CRF, else each step's argmax."""
        if self.crf is None:
            return emissions.argmax(-1)
        mask = targets != IGNORE
        paths = self.crf.decode(emissions, mask=mask)
        tags = torch.zeros_like(targets)
        for i, path in enumerate(paths):
            tags[i, : len(path)] = torch.as_tensor(path, device=tags.device)
        return tags

    def evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        emissions = self(batch.x, batch.lengths)
        loss, n = self.loss(emissions, batch, 0, batch.y.shape[1])
        preds, targets = self.predict_tags(emissions, batch.y).flatten(), batch.y.flatten()
        getattr(self, f"{split}_metrics").update(preds, targets)
        getattr(self, f"{split}_loss").update(loss, weight=n)
        oov = batch.x[:, : batch.y.shape[1]].flatten() == UNK_ID
        getattr(self, f"{split}_oov").update(preds, targets.masked_fill(~oov, IGNORE))
        getattr(self, f"{split}_oov_tokens").update(((targets != IGNORE) & oov).sum())

    def eval_values(self, split: str) -> dict:
        values = {
            **getattr(self, f"{split}_metrics").compute(),
            f"{split}/loss": getattr(self, f"{split}_loss").compute(),
        }
        oov_tokens = getattr(self, f"{split}_oov_tokens").compute()
        values[f"{split}/oov_tokens"] = oov_tokens.float()
        if oov_tokens > 0:  # else there is no accuracy to report (not 0)
            values[f"{split}/oov_acc"] = getattr(self, f"{split}_oov").compute()
        for name in ("metrics", "loss", "oov", "oov_tokens"):
            getattr(self, f"{split}_{name}").reset()
        return values

    def epoch_values(self, split: str, sanity_checking: bool = False) -> dict:
        if split != "train":
            return super().epoch_values(split, sanity_checking)
        # (with a CRF, training would need a Viterbi pass per step just for this)
        values = self.train_metrics.compute() if self.crf is None else {}
        self.train_metrics.reset()
        return values
