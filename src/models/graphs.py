"""CUDA graphs for the cells that run a Python time loop (every cell that is not torch's fused RNN/LSTM/GRU).

At the sizes RNNs train at, a hand-written cell on a GPU is slow because of kernel launches, not arithmetic: one
time step is a dozen small kernels, and T steps forward and backward are thousands of launches
(a hand-written LSTM captured whole runs many times faster than eager, close to cuDNN: docs/speed.md).
`torch.cuda.make_graphed_callables` records a layer's forward and its backward once, as two CUDA graphs, and
replays them: one launch each. Graphs are recorded per input signature (shapes, dtypes, which inputs need
gradients), since a graph replays exactly the shapes it was recorded with; the last, smaller batch of an epoch
gets one of its own.

Used only where it is exact and pays: training (module in train mode, gradients on) on CUDA, from a zero state,
outside autocast (make_graphed_callables refuses autocast's weight cache, which Lightning's mixed precision turns
on), at most MAX_GRAPHS signatures per layer (beyond that, eager). Evaluation, CPU, mixed precision and a carried
state run the layer as is. What graphs buy, measured on an H100: docs/speed.md (benchmarks/cells-cuda-subset.md).
"""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

from src.common.errors import ConfigError

MAX_GRAPHS = 8


def check_mode(value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"stack.cuda_graphs={value!r} must be true (record CUDA graphs of loop cells where "
            f"possible: training on a GPU without autocast) or false"
        )
    return value


def flatten(tree: Any) -> tuple[list[torch.Tensor], Any]:
    """The tensors of a cell's state (nested tuples/lists; None where a cell has no such part) and how to rebuild
    it."""
    if tree is None:
        return [], None
    leaves, spec = tree_flatten(tree)
    return [t for t in leaves if t is not None], (spec, [t is None for t in leaves])


def unflatten(tensors: list[torch.Tensor], how: Any) -> Any:
    if how is None:
        return None
    spec, none_at = how
    it = iter(tensors)
    return tree_unflatten([None if gap else next(it) for gap in none_at], spec)


class _FlatCall(nn.Module):
    """cell(x) from a zero state, with tensors only out, as make_graphed_callables needs; the cell is a submodule,
    so its parameters are the graph's parameters."""

    def __init__(self, cell: nn.Module):
        super().__init__()
        self.cell = cell

    def forward(self, x: torch.Tensor):
        out, new_state = self.cell(x, None)
        tensors, self.out_how = flatten(new_state)
        return (out, *tensors)


@contextlib.contextmanager
def no_collection():
    """Python's garbage collector off while a graph is recorded, after one full collection. A collection during
    the capture can free an earlier run's CUDA graph (kept alive by a reference cycle until then), and freeing a
    graph is not permitted while another is being captured: the capture fails, and with it the random generator's
    state (seen on an H100: "operation not permitted when stream is capturing (function reset)", then "Offset
    increment outside graph capture" on every later random op)."""
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def own_gradients(cell: nn.Module) -> None:
    """Make every gradient that a replayed backward leaves in a parameter's .grad the parameter's own copy.

    A replay returns the graph's static gradient buffers, and autograd adopts a fresh gradient tensor as .grad
    instead of copying it: .grad would then be a buffer that the next replay overwrites (gradients accumulated over
    two replays come out wrong), and parameters that get one gradient (an LSTM's bias and bias_hh, which the step
    adds) would share one .grad, so the next eager backward's in-place accumulation adds to it twice. Found on an
    H100: chunked training of a graphed LSTM gave bias gradients off by O(1) (tests/test_cuda.py). After each
    accumulation a hook copies a .grad it has not seen before (the first gradient after zero_grad); in-place
    accumulation into a copy already owned costs nothing."""
    for param in cell.parameters():
        seen: dict[str, int] = {}

        def copy_adopted(param: torch.Tensor, seen: dict = seen) -> None:
            if param.grad is not None and param.grad.data_ptr() != seen.get("ptr"):
                param.grad = param.grad.clone()
                seen["ptr"] = param.grad.data_ptr()

        param.register_post_accumulate_grad_hook(copy_adopted)


class GraphedCell:
    """Runs `cell(x, state)` through a recorded CUDA graph when that is possible, else directly."""

    def __init__(self, cell: nn.Module, mode: bool = True):
        self.cell, self.mode = cell, check_mode(mode)
        self.graphs: dict[tuple, tuple[Callable, _FlatCall, list]] = {}

    def usable(self, x: torch.Tensor, state: Any) -> str | None:
        """None if a graph can run this call, else why not."""
        if not self.mode or not getattr(self.cell, "cuda_graphs", True):
            return "off"
        if not x.is_cuda:
            return "not on a GPU"
        if not (self.cell.training and torch.is_grad_enabled()):
            return "not training"
        if torch.is_autocast_enabled():
            return "autocast (mixed precision) is on"
        if torch.cuda.is_current_stream_capturing():
            return "already inside a capture"
        if state is not None:
            # A carried state (truncated BPTT's later chunks) runs directly: only the zero-state call, the common
            # one, is captured. (A carried state was ruled out while a gradient bug, own_gradients' reason, was
            # unexplained; it could be captured too, but that path has not been measured.)
            return "a carried state"
        return None

    def __call__(self, x: torch.Tensor, state: Any = None):
        if self.usable(x, state) is not None:
            return self.cell(x, state)
        key = (tuple(x.shape), x.dtype, x.requires_grad)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= MAX_GRAPHS:
                return self.cell(x, state)
            call = _FlatCall(self.cell)
            try:  # recording runs a few warm-up steps on a side stream, then captures forward and backward
                # A private copy: the sample tensor becomes the graph's input buffer, which every replay
                # overwrites; the caller's own x (often a view of the data set) must never be.
                sample = x.detach().clone().requires_grad_(x.requires_grad)
                with no_collection():
                    graphed = torch.cuda.make_graphed_callables(call, (sample,))
            except Exception as err:  # noqa: BLE001 - a cell that cannot be captured still trains, eagerly
                warnings.warn(
                    f"CUDA graphs off for {type(self.cell).__name__}: recording failed ({err}); it runs "
                    f"eagerly (stack.cuda_graphs=false silences this)",
                    stacklevel=2,
                )
                self.mode = False
                return self.cell(x, state)
            if not self.graphs:
                own_gradients(self.cell)
            entry = self.graphs[key] = (graphed, call, [False])
        graphed, call, waiting = entry
        if waiting[0]:
            # The last replay's backward has not run yet: replaying now would overwrite the activations it
            # needs (a graph has one set of buffers). Run this call eagerly instead; it is exact, only slower.
            return self.cell(x, state)
        # Clones: a replay returns the graph's own output buffers, which the next replay overwrites.
        out, *new_leaves = (t.clone() for t in graphed(x))
        if out.requires_grad:
            waiting[0] = True
            out.register_hook(lambda grad: waiting.__setitem__(0, False))
        return out, unflatten(new_leaves, call.out_how)
