"""Many-to-many, aligned: a class for every time step (the copy-memory problem, the memory tasks; the base of
language models). Targets are IGNORE where a step has no answer; `acc` is over the answer steps, `exact_match` the
share of sequences whose answer steps are all right."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.data.tokens import IGNORE
from src.tasks.base import RecurrentTask
from src.tasks.streams import StreamEval


class StepClassifier(StreamEval, RecurrentTask):
    """encoder -> dropout -> recurrent stack -> dropout -> linear decoder -> logits at every step.

    `tie_weights` shares the embedding matrix with the decoder (Press & Wolf 2017; Inan et al. 2017): it needs
    token inputs whose vocabulary is also the output classes, and embedding_dim equal to the stack's output.
    `init_range`, if set, initialises embedding and decoder uniformly in +-init_range with a zero bias (as
    word_language_model does).
    """

    kind = "steps"
    metric_names: tuple[str, ...] = ("loss", "acc", "exact_match")  # per split: val/<name>, test/<name>

    def __init__(
        self,
        dropout: float = 0.0,
        tie_weights: bool = False,
        init_range: float | None = None,
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        **kwargs,
    ):
        super().__init__(monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"task.dropout={dropout} must be in [0, 1)")
        classes, size = self.spec.num_classes, self.stack.output_size
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(size, classes)
        if init_range:
            if isinstance(self.encoder, nn.Embedding):
                nn.init.uniform_(self.encoder.weight, -init_range, init_range)
            nn.init.uniform_(self.decoder.weight, -init_range, init_range)
            nn.init.zeros_(self.decoder.bias)
        if tie_weights:
            if not isinstance(self.encoder, nn.Embedding) or self.spec.input_size != classes:
                raise ConfigError("task.tie_weights=true needs token inputs whose vocabulary is the output classes")
            if self.encoder.embedding_dim != size:
                raise ConfigError(
                    f"task.tie_weights=true needs task.embedding_dim ({self.encoder.embedding_dim}) "
                    f"equal to the recurrent output size ({size}: cell.hidden_size x directions)"
                )
            self.decoder.weight = self.encoder.weight
        for split in ("val", "test"):
            for name in self.metric_names:
                setattr(self, f"{split}_{name}", MeanMetric())

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None):
        return self.stack(self.drop(self.encoder(x)), lengths, state)

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.decoder(self.drop(outputs))

    def loss(self, logits: torch.Tensor, batch: Batch, t0: int, t1: int):
        targets = batch.y[:, t0:t1]
        n = int((targets != IGNORE).sum())
        if n == 0:
            return None
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE), n

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        """The loss over the whole sequence, without loss()'s count of answer steps: that count is read on the
        host, which a vmapped call (stacked members, src/models/stacking.py) cannot do; a whole sequence of the
        steps data sets always has answer steps."""
        logits = self(batch.x, batch.lengths)
        return F.cross_entropy(logits.flatten(0, 1), batch.y.flatten(), ignore_index=IGNORE)

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        logits = self.head(self.eval_outputs(batch, batch_idx), batch.lengths)
        result = self.loss(logits, batch, 0, batch.x.shape[1])
        if result is None:
            return
        loss, n = result
        valid = batch.y != IGNORE
        right = logits.argmax(-1) == batch.y
        getattr(self, f"{split}_loss").update(loss, weight=n)
        getattr(self, f"{split}_acc").update(right[valid].float().mean(), weight=n)
        if "exact_match" in self.metric_names:
            # A sequence counts if it has answer steps and every one of them is right.
            answered = valid.any(dim=1)
            whole = (right | ~valid).all(dim=1)[answered]
            getattr(self, f"{split}_exact_match").update(whole.float().mean(), weight=len(whole))

    def eval_values(self, split: str) -> dict[str, torch.Tensor]:
        """This split's metrics over the whole evaluation (synced across processes); resets them."""
        return self.computed(split, self.metric_names)
