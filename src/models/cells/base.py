"""What the layered cells share: checked settings, torch's default initialisation, and the TorchScript switch."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from src.common.errors import ConfigError


def positive_int(name: str, value) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"cell.{name}={value!r} must be a positive integer")
    return value


def optional_positive(name: str, value, what: str) -> float:
    """A positive number, or null for "off". Returned as a float with 0.0 meaning off (TorchScript needs one
    type, and no setting here means anything at 0)."""
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"cell.{name}={value!r} must be a positive number ({what}) or null for none")
    return float(value)


def a_number(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"cell.{name}={value!r} must be a finite number")
    return float(value)


def a_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"cell.{name}={value!r} must be true or false")
    return value


def jit_setting(value) -> bool | str:
    if value not in (True, False, "auto") or isinstance(value, int) and not isinstance(value, bool):
        raise ConfigError(f"cell.jit={value!r} must be auto (TorchScript on GPU, eager PyTorch on CPU), true or false")
    return value


def init_uniform_(module: nn.Module, hidden_size: int) -> None:
    """torch's own RNN initialisation, U(-1/sqrt(H), 1/sqrt(H)) for every parameter, so custom cells start where
    nn.LSTM/GRU start and differences in results come from the cell, not the initialisation."""
    bound = 1.0 / math.sqrt(hidden_size)
    for p in module.parameters():
        nn.init.uniform_(p, -bound, bound)


@functools.cache
def scripted(fn: Callable) -> Callable:
    """`fn` compiled by TorchScript, once per process, on first use (compiling at import would slow every
    command down, also those that never build this cell)."""
    return torch.jit.script(fn)


def time_loop(fn: Callable, jit: bool | str, x: torch.Tensor) -> Callable:
    """The time loop to run on x: TorchScript's when asked for (jit=auto: on GPU only, where its fuser merges
    the element-wise gate math into few kernels; the CPU wheel has no fuser, and on CPU it measured no faster
    than eager, benchmarks/cells-cpu.md) and gradients are on. Without gradients (evaluation) the plain
    function: once TorchScript has optimised a loop for training, it tries to save tensors for backward also
    under torch.inference_mode (Lightning's evaluation) and fails; tests/test_cells.py."""
    use = jit is True or (jit == "auto" and x.device.type == "cuda")
    # Inside a CUDA graph capture (src/models/graphs.py) the eager loop: the graph removes the launch overhead
    # that TorchScript's fusion attacks, and TorchScript's executor invalidates captures (seen on an H100).
    capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
    return scripted(fn) if use and torch.is_grad_enabled() and not capturing and not torch.jit.is_scripting() else fn
