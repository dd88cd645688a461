"""The update of a stacked job: S members (each built as its single run builds it: src/runs/seeds.py) trained on
one stacked batch per step, every forward and backward one call for all members (src/models/stacking.py), every
member stepped by its own optimizer.

What makes each member's updates those of its single run:
- its own initialisation and batch order: the members are built as single runs build their model, and each
  takes its batches from its own seeded sampler (src/runs/seeds.py); a batch here holds S batches, [S, B, ...];
- its own parameters, optimizer and LR schedule: each member's optimizer and scheduler are the ones its own
  configure_optimizers builds (its learning rate, weight decay, schedule), stepped together as one optimizer that
  Lightning holds (`MemberOptimizers`); ReduceLROnPlateau follows the member's own validation value;
- its own gradient: the backward of the sum of the members' losses gives each member's parameters the gradient of
  its own loss alone;
- its own gradient clipping: its update's gradient_clip_val / gradient_clip_algorithm, clipped by
  torch.nn.utils.clip_grad_norm_ (or clip_grad_value_) over its own parameters, as Lightning clips a single run;
- its own divergence: a member whose loss is not finite is frozen (its gradient zeroed, its parameters restored
  after the step, so its optimizer's momentum cannot move it) and recorded as diverged with the step; the others
  are never touched by it. All of this stays on the device: no host read per step.

Full BPTT (truncation=None) or BPTT(k1, k2) windows (src/updates/truncated.py's train_windows, the member dim
first) per batch.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import lightning as L
import torch

from src.common import lightning_internals as internals
from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.models.stack import detach_state
from src.updates.manual import Manual
from src.updates.schedules import follow_config
from src.updates.truncated import Truncation, check_truncatable, continuing, train_windows

log = logging.getLogger(__name__)


class NotStackable(ConfigError):
    """The members cannot train stacked as exactly their single runs (src/runs/seeds.py then runs them one by one)."""


class MemberOptimizers(torch.optim.Optimizer):
    """The members' own optimizers (and LR schedulers, or None), stepped as one optimizer: what Lightning holds for a
    stacked job. Its parameter groups are the members' (so Lightning's precision plugin unscales every member's
    gradients); its state is each member's optimizer's and scheduler's state, one entry per member (so a stacked
    job resumed as a whole continues every member's schedule: src/runs/stacked_resume.py)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], schedulers: list[Any]) -> None:
        self.optimizers, self.schedulers = optimizers, schedulers
        super().__init__([p for o in optimizers for g in o.param_groups for p in g["params"]], {})
        self.param_groups = [g for o in optimizers for g in o.param_groups]

    def step(self, closure=None):
        loss = None
        if closure is not None:  # Lightning's: the on_before_optimizer_step hooks (clipping, freezing)
            with torch.enable_grad():
                loss = closure()
        for optimizer in self.optimizers:
            optimizer.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {
            "members": [o.state_dict() for o in self.optimizers],
            "schedulers": [s.state_dict() if s is not None else None for s in self.schedulers],
        }

    def load_state_dict(self, state_dict: dict) -> None:
        for optimizer, state in zip(self.optimizers, state_dict["members"]):
            optimizer.load_state_dict(state)
        for scheduler, state in zip(self.schedulers, state_dict.get("schedulers") or []):
            if scheduler is not None and state is not None:
                scheduler.load_state_dict(state)


def member_optimizers(tasks: list[L.LightningModule]) -> MemberOptimizers:
    """Each task's own configure_optimizers (its optimizer over its own parameters, its scheduler), as one."""
    optimizers, schedulers = [], []
    for task in tasks:
        configured = task.configure_optimizers()
        if isinstance(configured, dict):
            optimizers.append(configured["optimizer"])
            schedulers.append(configured["lr_scheduler"]["scheduler"])
        else:
            optimizers.append(configured)
            schedulers.append(None)
    return MemberOptimizers(optimizers, schedulers)


class Stacked(Manual):
    """`gradient_clip_val` / `gradient_clip_algorithm` (update=stacked's own settings) are what the job's members
    are built with (each member clips as its own update says: src/runs/seeds.py)."""

    name = "stacked"

    def __init__(
        self,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        truncation: Truncation | dict | None = None,
    ) -> None:
        super().__init__(gradient_clip_val, gradient_clip_algorithm)
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

    def notes(self) -> list[str]:
        return list(self.task.members.notes) if self.task is not None else []

    def attach(self, task: L.LightningModule) -> None:
        if not hasattr(task, "members"):
            raise ConfigError("update=stacked trains several members at once: run it with seeds=[s1,s2,...]")
        if self.truncation is not None:
            check_truncatable(task.members.tasks[0])
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
        members = self.task.members
        if self.truncation is None:
            losses = members.call("batch_loss", batch)
            self.step(losses)
            return losses.detach()
        call = members.call
        encode, head, loss = (functools.partial(call, m) for m in ("encode", "head", "loss"))
        state = self.carried_state(batch.x.shape[1])
        losses, state = train_windows(self.truncation, batch, state, encode, head, loss, self.step, time_dim=2)
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
        # The sum: each member's parameters get the gradient of its own loss alone.
        task.manual_backward(torch.where(self.alive, losses, 0).sum())
        # a frozen member keeps its last finite parameters whatever its optimizer's state
        members = None if self.everyone_alive() else [list(t.parameters()) for t in task.members.tasks]
        before = [[p.detach().clone() for p in params] for params in members] if members else None
        optimizer.step()  # clipping and freezing in on_before_optimizer_step, after fp16 unscaling
        if members:
            with torch.no_grad():
                for alive, params, olds in zip(self.alive, members, before):
                    for p, old in zip(params, olds):
                        p.copy_(torch.where(alive, p, old))
        self.step_schedulers("step")

    def everyone_alive(self) -> bool:
        """True where no member needs freezing this step, known without waiting: on the CPU the host reads the
        members' flags for free; on a GPU reading them would wait for the device every step, so there the masked
        updates run always (False)."""
        return self.alive.device.type == "cpu" and bool(self.alive.all())

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        everyone = self.everyone_alive()
        with torch.no_grad():
            for alive, task in zip(self.alive, self.task.members.tasks):
                if not everyone:
                    grads = [p.grad for p in task.parameters() if p.grad is not None]
                    for g in grads:  # where, not a product: a diverged member's gradient may hold NaN
                        g.copy_(torch.where(alive, g, 0))
                clip = task.update.setting("gradient_clip_val")
                if not clip:
                    continue
                if task.update.setting("gradient_clip_algorithm") == "value":
                    torch.nn.utils.clip_grad_value_(task.parameters(), clip)
                else:  # as Lightning clips a single run: torch's norm clip over the member's parameters
                    torch.nn.utils.clip_grad_norm_(task.parameters(), clip)

    def step_schedulers(self, interval: str) -> None:
        optimizers = self.task.optimizers(use_pl_optimizer=False)
        metrics = None  # the trainer's, read once (built anew at each read) where a plateau schedule needs them
        for s, (task, scheduler) in enumerate(zip(self.task.members.tasks, optimizers.schedulers)):
            if scheduler is None or task.scheduler_interval != interval:
                continue
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                metrics = self.task.trainer.callback_metrics if metrics is None else metrics
                value = metrics.get(f"{self.task.prefix(s)}{task.monitor}")
                if value is not None:  # the member's own monitored value
                    scheduler.step(value)
            else:
                scheduler.step()

    def on_train_start(self) -> None:
        """Resumed (a stacked job as a whole): each member's schedule follows its config now, as a single run's
        does on resume (src/updates/base.py)."""
        if not self.task.trainer.ckpt_path:
            return
        optimizers = self.task.optimizers(use_pl_optimizer=False)
        for name, task, scheduler in zip(self.task.names, self.task.members.tasks, optimizers.schedulers):
            if scheduler is None or not task.scheduler_factory:
                continue
            changed = follow_config(scheduler, task.scheduler_factory, scheduler.optimizer)
            if changed:
                log.warning(
                    f"{name} resumed with a new LR schedule ({'; '.join(changed)}): the learning rate is now "
                    f"{scheduler.optimizer.param_groups[0]['lr']:.3g}, as if it had had this schedule from the start"
                )

    def diverged(self) -> dict[int, int]:
        """{member index: the optimizer step its loss became NaN or inf at} (a host read)."""
        if self.diverged_at is None:
            return {}
        return {s: int(step) for s, step in enumerate(self.diverged_at.tolist()) if step >= 0}

    # -- truncated BPTT: the windows of src/updates/truncated.py on [S, ...] tensors ---------------------------
    def carried_state(self, batch_size: int) -> Any:
        # member dim first; then the batch is dim -2 of a fused stack's state, dim 1 of every layered cell's
        batch_dim = -2 if getattr(self.task.members.tasks[0].stack, "fused", False) else 1
        return continuing(self.state, batch_size, self.truncation.carry_across_batches, batch_dim)

    def on_train_epoch_start(self) -> None:
        self.state = None
