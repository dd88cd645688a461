"""A whole training update — forward, loss, backward, gradient clipping, optimizer step — as one CUDA graph.

A small recurrent model's update on a GPU is bound by host time: hundreds of kernel launches, autograd's and the
optimizer's Python, and the Trainer's hooks around each. Recorded once per batch shape and replayed, one update
is one launch (what that buys: docs/speed.md). It runs where it is exact and nothing needs to see the update
happen: training with several updates per Lightning step and full BPTT (this strategy wraps the manual one,
inside the grouped one: update=graphed, conf/update/graphed.yaml), on one GPU, fp32, torch's fused cells (loop cells replay graphs of their own per
layer), an optimizer that can be captured (Adam, AdamW: `capturable`, with the learning rate as a device tensor
so that LR schedules still reach the graph), no dropout, batches without padding, no callback that watches
single updates (`on_before_backward`, `on_after_backward`, `on_before_optimizer_step`), and a loss that reads
nothing back to the host -- detected, not declared: `host_reads` runs the first batch's loss once and watches for
`.item()`, `int(tensor)` and the like, on any device, so CPU tests see what a GPU run would refuse. Elsewhere the
update runs as usual; the log and metrics.json say why. If recording fails anyway (a host read the check missed,
out of memory), the run stops with a message naming update=grouped (the same without graphs). Only the learning rate reaches the
graph as a tensor: a schedule of other optimizer settings (betas, momentum) would not.

Recording runs a few warm-up updates on a side stream (CUDA's requirement) and then undoes them: parameters,
buffers and optimizer state are put back in place, so training makes the same updates as without the graph,
to float rounding (a capturable optimizer rounds slightly differently; tests/test_cuda.py).
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.utilities.model_helpers import is_overridden
from torch.overrides import TorchFunctionMode

from src.common import lightning_internals as internals
from src.common.errors import ConfigError
from src.data.tensors import Batch
from src.models.graphs import no_collection
from src.updates.base import Wrapper
from src.updates.manual import Manual

log = logging.getLogger(__name__)

MAX_GRAPHS = 4  # batch shapes recorded; others (a shorter last batch, varying text lengths) run as usual
WATCHING_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")
# Tensor operations that read a value back to the host (or whose result's size depends on values): a CUDA graph
# cannot record them, and on a GPU each one waits for the queue of kernels.
HOST_READS = frozenset(
    {
        "item",
        "tolist",
        "numpy",
        "cpu",
        "__int__",
        "__float__",
        "__bool__",
        "__index__",
        "nonzero",
        "unique",
        "masked_select",
        "__format__",
        "__repr__",
    }
)


class _HostReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        to_cpu = name == "to" and any(str(a) == "cpu" for a in (*args[1:], *(kwargs or {}).values()))
        if name in HOST_READS or to_cpu:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


def host_reads(task: L.LightningModule, batch: Batch) -> list[str]:
    """The host reads one forward and loss of `batch` makes (`item`, `__int__`, ...), found by running it once
    without gradients under a torch function mode: on any device, so a task whose loss counts its targets on the
    host is caught by CPU tests, not by its first GPU run."""
    devices = [task.device] if task.device.type == "cuda" and torch.cuda.is_available() else []
    # Without gradients, and with the random state put back: the run's updates stay those it would make anyway.
    with torch.random.fork_rng(devices=devices), torch.no_grad(), _HostReads() as mode:
        task.batch_loss(batch)
    return sorted(set(mode.seen))


class Graphed(Wrapper):
    """The manual strategy's update, replayed from a CUDA graph where exact; elsewhere the manual update."""

    inner: Manual
    name = "graphed"

    def __init__(
        self, inner: Manual, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        super().__init__(inner, gradient_clip_val, gradient_clip_algorithm)
        if not isinstance(inner, Manual) or inner.setting("truncation") is not None:
            raise ConfigError(
                f"update=graphed records full-BPTT manual updates; its inner strategy is {inner.describe()} "
                f"(with truncation=tbptt use update=grouped, or update=auto)"
            )
        self.graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, Batch, torch.Tensor]] = {}
        self.off: str | None = None  # why graphs are not used in this run (checked once)

    def describe(self) -> str:
        return f"graphed({self.inner.describe()})"

    def notes(self) -> list[str]:
        return [*self.inner.notes(), *([f"graphs off: {self.off}"] if self.off else [])]

    def train_on(self, batch: Batch) -> torch.Tensor | None:
        loss = self.replay(batch)
        if loss is None:
            return self.inner.train_on(batch)
        self.inner.step_schedulers("step")
        return loss

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        portable_optimizer_states(checkpoint)

    # -- when -------------------------------------------------------------------------------------------------
    def why_not(self, batch: Batch) -> str | None:
        """None if this run's updates can be captured, else why not (the same for the whole run; `batch`, the
        first one, is run once to look for host reads in the loss)."""
        task, trainer = self.task, self.task.trainer
        if task.device.type != "cuda":
            return "not on a GPU"
        if trainer.world_size > 1:
            return "several processes (their gradients are averaged by the strategy's backward)"
        if type(trainer.precision_plugin) is not Precision:
            return f"precision {trainer.precision} (the graphs are fp32 only)"
        optimizer = task.optimizers().optimizer
        if "capturable" not in optimizer.defaults:
            return f"{type(optimizer).__name__} cannot be captured (Adam and AdamW can)"
        if not task.stack.fused:
            # Measured and tested with torch's fused cells only; a loop cell replays graphs of its own per layer
            # (stack.cuda_graphs, src/models/graphs.py).
            return "a loop cell (it runs its own per-layer CUDA graphs)"
        if any(
            isinstance(m, torch.nn.Dropout) and m.p > 0 or isinstance(m, torch.nn.RNNBase) and m.dropout > 0
            for m in task.modules()
        ):
            return "dropout"
        watchers = [
            type(cb).__name__
            for cb in trainer.callbacks
            if any(is_overridden(h, cb, L.Callback) for h in WATCHING_HOOKS)
        ]
        if watchers:
            return f"callbacks that watch each update: {', '.join(watchers)}"
        if reads := host_reads(task, batch):  # last: it runs the model once
            return f"the {type(task).__name__} loss reads values back to the host ({', '.join(reads)})"
        return None

    # -- running ------------------------------------------------------------------------------------------------
    def replay(self, batch: Batch) -> torch.Tensor | None:
        """Run one update of `batch` through its graph and return its loss, or None: run it as usual."""
        if batch.lengths is not None:
            return None  # padded batches: packing the sequences reads their lengths on the host
        if self.off is None:
            self.off = self.why_not(batch) or ""
            if self.off:
                log.info("update=graphed: each update runs as usual (%s)", self.off)
        if self.off or not (self.task.training and torch.is_grad_enabled()):
            return None
        key = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in batch)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_GRAPHS:
                return None
            entry = self.graphs[key] = self.record(batch)
        graph, static, loss = entry
        for mine, theirs in zip(static, batch):
            if mine is not None:
                mine.copy_(theirs)
        graph.replay()
        internals.count_optimizer_step(self.task.trainer)
        return loss.clone()  # the next replay overwrites the graph's own

    def update(self, batch: Batch) -> torch.Tensor:
        """The update as the graph holds it: the task's own loss, the clipping eager updates do (Lightning's
        clip_gradients, free of host reads), the optimizer's step."""
        task, optimizer = self.task, self.task.optimizers().optimizer
        loss = task.batch_loss(batch)
        loss.backward()
        if self.inner.gradient_clip_val:
            task.clip_gradients(optimizer, self.inner.gradient_clip_val, self.inner.gradient_clip_algorithm)
        optimizer.step()
        return loss.detach()

    def record(self, batch: Batch):
        task, device = self.task, self.task.device
        optimizer = task.optimizers().optimizer
        for group in optimizer.param_groups:
            group["capturable"] = True
            if not torch.is_tensor(group["lr"]):  # an LR scheduler's fill_ then reaches the graph
                group["lr"] = torch.tensor(float(group["lr"]), device=device)
        for state in optimizer.state.values():
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(device=device, dtype=torch.float32)
        static = type(batch)(*(None if t is None else t.clone() for t in batch))
        # Warm-up updates change the weights and the optimizer state: keep them to put back afterwards.
        params = [p.detach().clone() for p in task.parameters()]
        buffers = [b.detach().clone() for b in task.buffers()]
        before = {id(p): {k: v.clone() for k, v in s.items() if torch.is_tensor(v)} for p, s in optimizer.state.items()}
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    optimizer.zero_grad(set_to_none=True)
                    self.update(static)
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with no_collection(), torch.cuda.graph(graph):
                loss = self.update(static)
        except RuntimeError as err:  # e.g. a loss that reads a value back to the host (.item(), int(tensor))
            raise ConfigError(
                f"update=graphed: recording {type(task).__name__}'s update as a CUDA graph failed "
                f"({err}); run with update=grouped (the same updates without graphs)"
            ) from err
        with torch.no_grad():  # in place: the graph reads and writes these very tensors
            for p, saved in zip(task.parameters(), params):
                p.copy_(saved)
            for b, saved in zip(task.buffers(), buffers):
                b.copy_(saved)
            for p, state in optimizer.state.items():
                for k, v in state.items():
                    if torch.is_tensor(v):
                        v.copy_(before[id(p)][k]) if id(p) in before and k in before[id(p)] else v.zero_()
        return graph, static, loss


def portable_optimizer_states(checkpoint: dict) -> None:
    """Checkpoints stay loadable anywhere: the recording made the optimizer `capturable` with a device tensor as
    learning rate, which an optimizer on CPU refuses; save plain settings (a later recording redoes them)."""
    for state in checkpoint.get("optimizer_states", []):
        for group in state.get("param_groups", []):
            if group.get("capturable"):
                group["capturable"] = False
            if torch.is_tensor(group.get("lr")):
                group["lr"] = float(group["lr"])
