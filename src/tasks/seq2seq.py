"""Encoder-decoder (Sutskever et al. 2014): source tokens -> target tokens of another length.

The configured stack encodes the source; its final state starts a decoder, a second stack of the same cell and
depth, which reads <bos> + the target shifted by one step (teacher forcing) while training and its own previous
token (greedy decoding) while evaluating. Batches: x [B, S] source ids (0 = padding, lengths for variable
sources), y [B, T] target ids ending in <eos>, padded with 0.

training_step is overridden: the decoder reads the targets, which the head/loss protocol's forward (inputs
-> stack -> head) cannot express. So truncated BPTT does not apply to this task.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from src.common.errors import ConfigError
from src.data.seq2seq import BOS_ID
from src.data.tensors import Batch
from src.data.tokens import PAD_ID
from src.models.stack import RecurrentStack
from src.tasks.base import RecurrentTask


class Seq2Seq(RecurrentTask):
    kind = "seq2seq"
    supports_truncation = False  # the decoder reads the encoder's final state: no chunks in time

    def __init__(
        self,
        stack: Callable[..., RecurrentStack],
        monitor: str = "val/exact_match",
        monitor_mode: str = "max",
        **kwargs,
    ):
        super().__init__(stack=stack, monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        if self.stack.bidirectional:
            raise ConfigError(
                "seq2seq hands the encoder's final state to a unidirectional decoder of the same cell "
                "and depth; use direction=uni"
            )
        if self.spec.input_kind != "tokens":
            raise ConfigError("seq2seq needs token inputs")
        # The decoder reads target tokens through the same embedding (source and target share one vocabulary).
        self.decoder = stack(input_size=self.encoder.embedding_dim)
        self.out = nn.Linear(self.decoder.output_size, self.spec.num_classes)
        for split in ("val", "test"):
            for name in ("loss", "acc", "exact_match"):
                setattr(self, f"{split}_{name}", MeanMetric())

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        return self.out(outputs)

    def loss(self, logits: torch.Tensor, batch: Batch, t0: int, t1: int):
        targets = batch.y[:, t0:t1]
        n = int((targets != PAD_ID).sum())
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=PAD_ID), n

    def decode(self, tokens: torch.Tensor, state: Any):
        outputs, state = self.decoder(self.encoder(tokens), None, state)
        return self.head(outputs, None), state

    def teacher_forced(self, batch: Batch) -> torch.Tensor:
        _, state = self.encode(batch.x, batch.lengths)
        bos = torch.full_like(batch.y[:, :1], BOS_ID)
        logits, _ = self.decode(torch.cat([bos, batch.y[:, :-1]], dim=1), state)
        return logits

    def batch_loss(self, batch: Batch) -> torch.Tensor:
        loss, _ = self.loss(self.teacher_forced(batch), batch, 0, batch.y.shape[1])
        return loss

    @torch.no_grad()
    def greedy(self, x: torch.Tensor, lengths: torch.Tensor | None, steps: int) -> torch.Tensor:
        """Decode `steps` tokens, each the most likely given the ones before -> [B, steps]."""
        _, state = self.encode(x, lengths)
        token = torch.full((len(x), 1), BOS_ID, dtype=torch.long, device=x.device)
        tokens = []
        for _ in range(steps):
            logits, state = self.decode(token, state)
            token = logits[:, -1].argmax(-1, keepdim=True)
            tokens.append(token)
        return torch.cat(tokens, dim=1)

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        loss, n = self.loss(self.teacher_forced(batch), batch, 0, batch.y.shape[1])
        predicted = self.greedy(batch.x, batch.lengths, batch.y.shape[1])
        real = batch.y != PAD_ID  # the target tokens, <eos> included
        right = (predicted == batch.y) & real
        getattr(self, f"{split}_loss").update(loss, weight=n)
        getattr(self, f"{split}_acc").update(right.sum() / real.sum(), weight=int(real.sum()))
        # Exact: every target token and the <eos> that ends it (what is decoded after <eos> is not read).
        getattr(self, f"{split}_exact_match").update((right == real).all(dim=1).float().mean(), weight=len(batch.y))

    def eval_values(self, split: str) -> dict:
        return self.computed(split, ("loss", "acc", "exact_match"))
