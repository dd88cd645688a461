"""S tasks of one architecture (the members of a stacked job, each built as its single run builds it) run as one
computation: each method called once for all members, on inputs stacked along a leading member dimension.

    members = Members(tasks)             tasks: S modules with the same parameter names and shapes; each keeps
                                         its own parameters, optimizer and checkpoint (nothing of it is moved)
    members.call("batch_loss", batch)    batch: every tensor [S, ...]; the method of each member on its slice,
                                         results stacked [S, ...]

Two ways to run a call, the same results (each member's gradient reaches its own parameters):
- vmapped: torch.func.vmap over functional_call of the first task with the members' parameters stacked for the
  call (torch.stack, whose backward hands each member its slice of the gradient), so each operation of the cell
  runs once for all S members: S small matrix products become one batched one;
- per member: each task's method on its slice, one after another, results stacked. For torch's fused RNN/LSTM/GRU
  (one ATen kernel per layer, which vmap cannot run: vmapped it would have to become a Python time loop, slower on
  CPU than the fused kernel S times, benchmarks/stacked-cpu.md), cells run through CUDA graphs, and wherever the
  vmapped call fails (a loss that reads a value on the host, a TorchScript loop): the first call that fails
  switches the members to this way for good, and `notes` says why.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from src.common.errors import ConfigError

# What a vmapped call can fail with where the per-member call would not (vmap's own refusals).
VMAP_ERRORS = (RuntimeError, ValueError, TypeError, NotImplementedError)


class _Method(nn.Module):
    """functional_call calls a module's forward: this one's forward is any method of the task it holds."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, method: str, *args: Any) -> Any:
        return _tensors(getattr(self.task, method)(*args))


class Members:
    """S tasks built alike, their methods run as one call (module docstring)."""

    def __init__(self, tasks: list[nn.Module], vmapped: bool | None = None) -> None:
        if not tasks:
            raise ConfigError("a stacked job needs at least one member")
        shapes = [{k: tuple(v.shape) for k, v in t.named_parameters()} for t in tasks]
        if any(s != shapes[0] for s in shapes):
            raise ConfigError("the stacked members have different parameters: they must be built from one architecture")
        self.tasks = tasks
        self.notes: list[str] = []
        self.vmapped = vmappable(tasks[0], self.notes) if vmapped is None else vmapped
        self.method = _Method(tasks[0])

    def __len__(self) -> int:
        return len(self.tasks)

    def call(self, method: str, *args: Any) -> Any:
        """tasks[s].<method>(*(a[s] for a in args)) for every member s; results stacked along a new dim 0."""
        if self.vmapped:
            try:
                return self._vmapped(method, *args)
            except VMAP_ERRORS as e:
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.vmapped = False
                self.notes.append(f"members run one after another ({method} does not run under vmap: {why})")
        outputs = [getattr(task, method)(*_slice(args, s)) for s, task in enumerate(self.tasks)]
        return _stack([_tensors(o) for o in outputs])

    def _vmapped(self, method: str, *args: Any) -> Any:
        named = [dict(t.named_parameters()) for t in self.tasks]
        buffers = [dict(t.named_buffers()) for t in self.tasks]
        tensors = {f"task.{k}": torch.stack([n[k] for n in named]) for k in named[0]}
        stacked_buffers = {k: torch.stack([b[k] for b in buffers]) for k in buffers[0]}
        tensors.update({f"task.{k}": v for k, v in stacked_buffers.items()})

        def one(state: dict, *a: Any) -> Any:
            return functional_call(self.method, state, (method, *a))

        result = vmap(one, in_dims=(0, *(_dims(a) for a in args)), randomness="different")(tensors, *args)
        with torch.no_grad():  # what the method changed of its buffers (a task's running counts), back to each member
            for name, value in stacked_buffers.items():
                for s, b in enumerate(buffers):
                    b[name].copy_(value[s])
        return result


def vmappable(task: nn.Module, notes: list[str]) -> bool:
    """Whether the task's cell runs under vmap (else the members run one after another; `notes` says why)."""
    stack = getattr(task, "stack", None)
    if getattr(stack, "fused", False):
        notes.append("torch's fused cell runs once per member (vmap cannot run its kernel)")
        return False
    for module in task.modules():
        if getattr(module, "jit", False) is True:
            notes.append("members run one after another (cell.jit=true: TorchScript does not run under vmap)")
            return False
    return True


def _tensors(result: Any) -> Any:
    """A method's result with its plain numbers as tensors (vmap returns tensors only): a task's loss is
    (loss, n), or None for a window without targets."""
    if isinstance(result, tuple) and not hasattr(result, "_fields"):
        return tuple(torch.as_tensor(r) if isinstance(r, (int, float)) else r for r in result)
    return result


def _slice(arg: Any, s: int) -> Any:
    """Member s's part of an argument: tensors indexed on their first dim, containers walked, the rest as is."""
    if isinstance(arg, Tensor):
        return arg[s]
    if isinstance(arg, tuple) and hasattr(arg, "_fields"):  # a NamedTuple (Batch)
        return type(arg)(*(_slice(a, s) for a in arg))
    if isinstance(arg, (tuple, list)):
        return type(arg)(_slice(a, s) for a in arg)
    return arg


def _stack(outputs: list[Any]) -> Any:
    """The members' results as one: tensors stacked along a new dim 0, containers walked."""
    first = outputs[0]
    if first is None:
        return None
    if isinstance(first, Tensor):
        return torch.stack(outputs)
    if isinstance(first, (tuple, list)):
        return type(first)(_stack(list(parts)) for parts in zip(*outputs))
    raise TypeError(f"a stacked call returned {type(first).__name__}, which cannot be stacked")


def _dims(arg: Any) -> Any:
    """vmap's in_dims for one argument: 0 for each tensor (stacked on dim 0), None for anything else."""
    if isinstance(arg, Tensor):
        return 0
    if isinstance(arg, tuple) and hasattr(arg, "_fields"):  # a NamedTuple (Batch)
        return type(arg)(*(_dims(a) for a in arg))
    if isinstance(arg, (tuple, list)):
        return type(arg)(_dims(a) for a in arg)
    if isinstance(arg, dict):
        return {k: _dims(v) for k, v in arg.items()}
    return None
