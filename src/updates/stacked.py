"""S members (the same config, one seed each) updated as one stacked computation: every forward and backward is
one vmap over the members' stacked parameters (src/models/stacking.py), every optimizer step one step of one
optimizer over those stacked tensors.

What makes each member's updates those of a single run with its seed:
- its own initialisation and batch order: the members are built as single runs build their model, and each
  takes its batches from its own seeded sampler (src/runs/seeds.py); a batch here holds S batches, [S, B, ...];
- its own optimizer state: one optimizer over [S, ...] tensors is S optimizers when the optimizer is
  element-wise (Adam, AdamW, SGD, ...; refused otherwise), and the LR schedules are the same closed-form
  schedules for every member (ReduceLROnPlateau, which follows each run's own validation loss, is refused);
- its own gradient clipping: the norm (or value) clip of each member's own gradients, as torch's clip_grad_norm_
  computes it over one model;
- its own divergence: a member whose loss is not finite is frozen (its gradients zeroed, its parameters restored
  after the shared step, so the element-wise optimizer's momentum cannot move it) and recorded as diverged with the
  step; the others' slices are never touched by it. All of this stays on the device: no host read per step.

Full BPTT (truncation=None) or BPTT(k1, k2) windows (src/updates/truncated.py's Truncation) per batch.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from src.common import lightning_internals as internals
from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.models.stack import detach_state
from src.updates.manual import Manual
from src.updates.truncated import Truncation, continuing

# One optimizer over stacked tensors equals one per member only when every update is element-wise.
ELEMENTWISE = ("SGD", "Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta", "ASGD", "Rprop")


class NotStackable(ConfigError):
    """The members cannot train stacked as exactly their single runs (src/runs/seeds.py then runs them one by one)."""


class Stacked(Manual):
    name = "stacked"

    def __init__(
        self,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        truncation: Truncation | dict | None = None,
    ) -> None:
        super().__init__(gradient_clip_val, gradient_clip_algorithm)
        if gradient_clip_algorithm not in (None, "norm", "value"):
            raise ConfigError(f"gradient_clip_algorithm={gradient_clip_algorithm!r} must be 'norm' or 'value'")
        self.truncation = truncation if isinstance(truncation, Truncation) or truncation is None else None
        if isinstance(truncation, dict):
            self.truncation = Truncation.from_config(truncation)
        self.alive: torch.Tensor | None = None  # [S] bool: members still training
        self.diverged_at: torch.Tensor | None = None  # [S] long: the optimizer step a member diverged at, -1 never
        self.state: Any = None  # carried state (truncation.carry_across_batches)
        self.losses: torch.Tensor | None = None  # [S]: the last batch's loss per member

    def describe(self) -> str:
        t = self.truncation
        inner = (
            "full"
            if t is None
            else f"truncated(k2={t.steps}, k1={t.stride}{', carried' if t.carry_across_batches else ''})"
        )
        members = len(self.task.members) if self.task is not None else "?"
        return f"stacked(S={members}, {inner})"

    def attach(self, task: L.LightningModule) -> None:
        if not hasattr(task, "members"):
            raise ConfigError("update=stacked trains several seeds at once: run it with seeds=[s1,s2,...]")
        check_exact(task.optimizer_factory, task.scheduler_factory)
        if self.truncation is not None:
            first = task.members.tasks[0]
            if first.stack.bidirectional:
                raise ConfigError(
                    "truncation=tbptt cannot be combined with direction=bi: the backward direction "
                    "would read across chunk boundaries; use direction=uni or truncation=none"
                )
            if (refusal := first.truncation_refusal()) is not None:
                raise ConfigError(refusal)
        super().attach(task)

    # -- the step --------------------------------------------------------------------------------------------
    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor | None:
        losses = self.train_on(batch)
        if losses is None:
            return None
        self.losses = losses
        alive = self.alive
        # The mean over the members still training; NaN once none is (what FiniteLoss stops the run on).
        loss = (torch.where(alive, losses, 0).sum() / alive.sum()).detach()
        if internals.should_update_logs(self.task.trainer) or internals.is_last_batch(self.task.trainer):
            batch_size = batch.x.shape[1]
            self.task.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
            for s, member_loss in enumerate(losses):
                self.task.log(f"{self.task.prefix(s)}train/loss", member_loss, batch_size=batch_size)
        return loss

    def train_on(self, batch: Batch) -> torch.Tensor | None:
        """One batch per member -> the members' losses [S] (detached) after their update(s)."""
        if self.alive is None:
            n, device = len(self.task.members), batch.x.device
            self.alive = torch.ones(n, dtype=torch.bool, device=device)
            self.diverged_at = torch.full((n,), -1, dtype=torch.long, device=device)
        if self.truncation is None:
            losses = self.task.members.call("batch_loss", batch)
            self.step(losses)
            return losses.detach()
        losses, state = self.windows(batch, self.carried_state(batch.x.shape[1]))
        if self.truncation.carry_across_batches:
            self.state = detach_state(state)
        return losses

    def step(self, losses: torch.Tensor) -> None:
        """One optimizer update of every member still alive from its loss (losses: [S])."""
        task = self.task
        finite = torch.isfinite(losses.detach())
        step = torch.as_tensor(task.trainer.global_step, device=losses.device)
        self.diverged_at = torch.where(self.alive & ~finite, step, self.diverged_at)
        self.alive = self.alive & finite
        optimizer = task.optimizers()
        optimizer.zero_grad(set_to_none=True)
        # The sum: each member's slice of the gradient is the gradient of its own loss alone.
        task.manual_backward(torch.where(self.alive, losses, 0).sum())
        params = list(task.members.params.values())
        before = [p.detach().clone() for p in params]
        optimizer.step()  # clipping and freezing in on_before_optimizer_step, after fp16 unscaling
        with torch.no_grad():  # a frozen member keeps its last finite parameters whatever the optimizer's state
            for p, old in zip(params, before):
                p.copy_(torch.where(_along(self.alive, p), p, old))
        self.step_schedulers("step")

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.task.members.params.values() if p.grad is not None]
        if not grads:
            return
        with torch.no_grad():
            for g in grads:  # where, not a product: a diverged member's gradient may hold NaN
                g.copy_(torch.where(_along(self.alive, g), g, 0))
            if not self.gradient_clip_val:
                return
            if self.gradient_clip_algorithm == "value":
                for g in grads:
                    g.clamp_(-self.gradient_clip_val, self.gradient_clip_val)
                return
            # torch.nn.utils.clip_grad_norm_ per member: the 2-norm of the per-tensor norms, coefficient
            # max_norm / (norm + 1e-6) clamped to 1.
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
            coef = (self.gradient_clip_val / (norms + 1e-6)).clamp(max=1.0)
            for g in grads:
                g.mul_(coef.view(-1, *[1] * (g.dim() - 1)))

    def diverged(self) -> dict[int, int]:
        """{member index: the optimizer step its loss became NaN or inf at} (a host read)."""
        if self.diverged_at is None:
            return {}
        return {s: int(step) for s, step in enumerate(self.diverged_at.tolist()) if step >= 0}

    # -- truncated BPTT (src/updates/truncated.py, on [S, ...] tensors) ----------------------------------------
    def carried_state(self, batch_size: int) -> Any:
        # member dim first; then the batch is dim -2 of a fused stack's state, dim 1 of every layered cell's
        batch_dim = -2 if getattr(self.task.members.tasks[0].stack, "fused", False) else 1
        return continuing(self.state, batch_size, self.truncation.carry_across_batches, batch_dim)

    def on_train_epoch_start(self) -> None:
        self.state = None

    def windows(self, batch: Batch, state: Any = None) -> tuple[torch.Tensor | None, Any]:
        members, trunc = self.task.members, self.truncation
        total = batch.x.shape[2]
        saved: dict[int, Any] = {0: detach_state(state)}
        losses, counts = [], []
        for start, t0, t1 in trunc.windows(total):
            state = saved[start]
            outputs, pieces = [], [start]
            next_start = max(0, t1 + trunc.stride - trunc.steps)
            if start < next_start < t1:
                pieces.append(next_start)
            pieces.append(t1)
            for a, b in zip(pieces, pieces[1:]):
                out, state = members.call("encode", batch.x[:, :, a:b], None, state)
                outputs.append(out)
                if b == next_start:
                    saved[next_start] = detach_state(state)
            saved[t1] = detach_state(state)
            out = torch.cat(outputs, dim=2) if len(outputs) > 1 else outputs[0]
            predictions = members.call("head", out[:, :, t0 - start :], None)
            result = members.call("loss", predictions, batch, t0, t1)
            if result is None:
                continue
            loss, n = result
            self.step(loss)
            losses.append(loss.detach() * n)
            counts.append(n)
        final = saved[total]
        if not losses:
            return None, final
        return torch.stack(losses).sum(0) / torch.stack(counts).sum(0), final


def check_exact(optimizer: Any, scheduler: Any) -> None:
    """Refuse an optimizer or schedule under which stacked members would not each train as their single run."""
    func = getattr(optimizer, "func", optimizer)
    name = getattr(func, "__name__", str(func))
    if name not in ELEMENTWISE:
        raise NotStackable(
            f"optimizer {name} is not known to update each parameter element on its own, so one optimizer over "
            f"stacked members might mix them; use one of {', '.join(ELEMENTWISE)}, or train the seeds one by one"
        )
    sched = getattr(scheduler, "func", scheduler) if scheduler else None
    if sched is not None and getattr(sched, "__name__", "") == "ReduceLROnPlateau":
        raise NotStackable(
            "scheduler=plateau follows each run's own validation loss, but stacked members share one learning "
            "rate; use scheduler=cosine, step or none, or train the seeds one by one"
        )


def _along(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """[S] -> [S, 1, ...] broadcastable against `like` ([S, ...])."""
    return mask.view(-1, *[1] * (like.dim() - 1))
