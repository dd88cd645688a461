"""Truncated backpropagation through time, BPTT(k1, k2) after Williams & Peng (1990), for Lightning 2.

Lightning 2 dropped its built-in truncated BPTT, so this strategy runs it under manual optimization:

    every k1 = `stride` steps an optimizer update; its loss covers the targets of those k1 new steps and its
    backward pass reaches k2 = `steps` steps back (k2 >= k1 re-runs the overlap from a detached state).

The recurrent state is detached at every window start (the whole state: tuples for LSTM-like cells, per layer
and direction), and with `carry_across_batches` it also flows from one batch to the next (stream tasks: each
row of a batch continues the same row of the previous batch), reset at the start of every epoch (evaluation
carries its own state: src/tasks/streams.py). Every task gets truncation through its `encode`, `head` and
`loss(predictions, batch, t0, t1)`; clipping and schedulers are the manual strategy's (src/updates/manual.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch

from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.models.stack import detach_state
from src.updates.manual import Manual


@dataclass(frozen=True)
class Truncation:
    steps: int  # k2: how far back one backward pass reaches
    stride: int  # k1: steps between optimizer updates
    carry_across_batches: bool = False

    @classmethod
    def from_config(cls, cfg: dict | None) -> Truncation | None:
        """None for full BPTT (truncation=none)."""
        cfg = dict(cfg or {})
        mode = cfg.pop("mode", "none")
        if mode == "none":
            return None
        if mode != "tbptt":
            raise ConfigError(f"truncation.mode={mode!r} must be 'none' or 'tbptt'")
        steps, stride = cfg.pop("steps", None), cfg.pop("stride", None)
        carry = cfg.pop("carry_across_batches", False)
        if cfg:
            raise ConfigError(
                f"unknown truncation settings {sorted(cfg)}; allowed: steps, stride, carry_across_batches"
            )
        if not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"truncation.steps={steps!r} must be a positive integer (k2: steps per backward)")
        if not isinstance(carry, bool):
            raise ConfigError(f"truncation.carry_across_batches={carry!r} must be true or false")
        stride = steps if stride is None else stride
        if not isinstance(stride, int) or not 1 <= stride <= steps:
            raise ConfigError(
                f"truncation.stride={stride!r} must be an integer in [1, truncation.steps={steps}] "
                f"(k1: steps between updates; stride < steps gives overlapping windows)"
            )
        return cls(steps=steps, stride=stride, carry_across_batches=carry)

    def windows(self, total: int) -> list[tuple[int, int, int]]:
        """(start, t0, t1) per update: loss on the targets in [t0, t1) (the stride's new steps), backward from
        t1 to start = t0 - (steps - stride). With stride == steps the windows are plain consecutive chunks."""
        t0s = range(0, total, self.stride)
        return [(max(0, t0 - (self.steps - self.stride)), t0, min(t0 + self.stride, total)) for t0 in t0s]


def check_truncatable(task: L.LightningModule) -> None:
    """Refuse a task that cannot train on windows of its sequences, before any data is trained on."""
    if task.stack.bidirectional:
        raise ConfigError(
            "truncation=tbptt cannot be combined with direction=bi: the backward direction "
            "would read across chunk boundaries; use direction=uni or truncation=none"
        )
    if (refusal := task.truncation_refusal()) is not None:
        raise ConfigError(refusal)


def continuing(state: Any, batch_size: int, carry: bool, batch_dim: int) -> Any:
    """`state` if it carries into a batch of `batch_size` rows (its first tensor's batch at `batch_dim`), else None."""
    if state is None or not carry:
        return None
    first = state
    while isinstance(first, (tuple, list)):
        first = first[0]
    return state if first.shape[batch_dim] == batch_size else None


class Truncated(Manual):
    """Manual updates, one per window of `truncation.stride` steps (several per batch). `truncation`: the
    truncation group's settings (conf/update/truncated.yaml takes them as `${truncation}`) or a Truncation."""

    name = "truncated"

    def __init__(
        self,
        truncation: Truncation | dict,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
    ) -> None:
        super().__init__(gradient_clip_val, gradient_clip_algorithm)
        if not isinstance(truncation, Truncation):
            truncation = Truncation.from_config(truncation)
        if truncation is None:
            raise ConfigError(
                "update=truncated needs truncation=tbptt (its steps/stride settings are k2/k1); with "
                "truncation=none use update=auto, automatic or manual"
            )
        self.truncation = truncation
        self.state: Any = None  # the previous training batch's final state (carry_across_batches)

    def describe(self) -> str:
        t = self.truncation
        return f"truncated(k2={t.steps}, k1={t.stride}{', carried' if t.carry_across_batches else ''})"

    def attach(self, task: L.LightningModule) -> None:
        check_truncatable(task)
        super().attach(task)

    def train_on(self, batch: Batch) -> torch.Tensor | None:
        loss, state = self.windows(batch, self.carried_state(len(batch.x)))
        if self.truncation.carry_across_batches:
            self.state = detach_state(state)
        return loss

    def carried_state(self, batch_size: int) -> Any:
        """The state the previous training batch ended with, or None (no carry, new epoch, other size)."""
        # A batch of another size (a stream's short last batch) has no rows that continue the previous ones. The
        # batch is dim -2 of a fused stack's [layers x directions, B, H] state and dim 0 of every layered cell's
        # (whose states may have 3 dims too: LRU's [B, N, 2], Mamba's [B, E*D, N]).
        batch_dim = -2 if getattr(self.task.stack, "fused", False) else 0
        return continuing(self.state, batch_size, self.truncation.carry_across_batches, batch_dim)

    def on_train_epoch_start(self) -> None:
        self.state = None

    def windows(self, batch: Batch, state: Any = None) -> tuple[torch.Tensor | None, Any]:
        """Run one batch as BPTT(k1, k2) updates; returns (mean loss over the updates or None, final state)."""
        task = self.task
        return train_windows(self.truncation, batch, state, task.encode, task.head, task.loss, self.step)


def train_windows(
    trunc: Truncation,
    batch: Batch,
    state: Any,
    encode: Callable,
    head: Callable,
    loss_of: Callable,
    step: Callable[[torch.Tensor], None],
    time_dim: int = 1,
) -> tuple[torch.Tensor | None, Any]:
    """One batch as BPTT(k1, k2) updates: `encode(x, lengths, state)`, `head(outputs, lengths)` and
    `loss_of(predictions, batch, t0, t1)` of each window (a task's, or a stacked job's members' with the member
    dim first: `time_dim` 2), `step(loss)` after each. Returns (the mean loss over the updates, weighted by their
    targets, or None where no window held a target; the final state)."""
    total = batch.x.shape[time_dim]
    # Detached states at the positions where later windows will start.
    saved: dict[int, Any] = {0: detach_state(state)}
    losses, counts = [], []
    for start, t0, t1 in trunc.windows(total):
        state = saved[start]  # a window starts where an earlier one kept its state (or at 0)
        outputs, pieces = [], [start]
        # The next window starts inside this one when windows overlap: split the forward there to keep that state.
        next_start = max(0, t1 + trunc.stride - trunc.steps)
        if start < next_start < t1:
            pieces.append(next_start)
        pieces.append(t1)
        for a, b in zip(pieces, pieces[1:]):
            out, state = encode(batch.x.narrow(time_dim, a, b - a), None, state)
            outputs.append(out)
            if b == next_start:
                saved[next_start] = detach_state(state)
        saved[t1] = detach_state(state)
        out = torch.cat(outputs, dim=time_dim) if len(outputs) > 1 else outputs[0]
        result = loss_of(head(out.narrow(time_dim, t0 - start, t1 - t0), None), batch, t0, t1)
        if result is None:
            continue  # no target in this window (many-to-one before its last step): nothing to learn from
        loss, n = result
        step(loss)
        losses.append(loss.detach() * n)
        counts.append(n)
    final = saved[total]
    if not losses:
        return None, final
    return torch.stack(losses).sum(0) / sum(counts), final
