"""RecurrentStack: `depth` layers x 1 or 2 directions of one cell type, the only recurrent interface tasks see.

    outputs, state = stack(x [B, T, input_size], lengths [B] | None, state | None)
    outputs: [B, T, output_size], output_size = cell output size x directions

The stack owns layering, direction, dropout between layers and padding. Fused cells (torch's RNN/LSTM/GRU) do
all of that in one cuDNN call; other cells are run layer by layer, direction by direction.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from src.common.errors import ConfigError
from src.models.graphs import GraphedCell, check_mode


def detach_state(state: Any) -> Any:
    """Cut the graph behind a recurrent state of any shape (tensor, tuple (h, c), nested lists)."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, (tuple, list)):
        return type(state)(detach_state(s) for s in state)
    return state


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Reverse each sequence within its own length; padded steps stay at the end."""
    if lengths is None:
        return x.flip(1)
    steps = torch.arange(x.shape[1], device=x.device)
    lengths = lengths.to(x.device)
    idx = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return x.gather(1, idx[..., None].expand(-1, -1, x.shape[2]))


def last_step(outputs: torch.Tensor, lengths: torch.Tensor | None, bidirectional: bool) -> torch.Tensor:
    """Summary of each sequence: the output at its last real step; for bi, the forward half there concatenated
    with the backward half at step 0 (where the backward direction ends)."""
    if lengths is None:
        last = outputs[:, -1]
    else:
        idx = (lengths.to(outputs.device) - 1).clamp(min=0)
        last = outputs[torch.arange(len(outputs), device=outputs.device), idx]
    if not bidirectional:
        return last
    half = outputs.shape[-1] // 2
    return torch.cat([last[:, :half], outputs[:, 0, half:]], dim=-1)


# What the stack passes to a cell itself: a cell config that sets one of these is a mistake, not a setting.
STACK_OWNED = {
    "input_size": "task.input_proj (or task.embedding_dim)",
    "num_layers": "depth=",
    "bidirectional": "direction=",
    "dropout": "stack.dropout=",
    "block_index": "depth= (the stack numbers its layers)",
    "num_blocks": "depth=",
}
# Cells whose initialisation depends on the layer's place in the stack (xLSTM's forget-gate biases) take these.
PLACE = ("block_index", "num_blocks")


def check_cell_settings(cell: Callable[..., nn.Module]) -> None:
    """Every key of a cell's config must be an argument of that cell: a setting the cell does not have is an
    error that names it, not a silently ignored value or a TypeError deep inside Hydra."""
    if not isinstance(cell, functools.partial):
        return
    params = inspect.signature(cell.func).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # the cell takes any keyword; it checks them itself
    name = f"{cell.func.__module__}.{cell.func.__qualname__}"
    allowed = [k for k in params if k not in STACK_OWNED]
    for key, value in cell.keywords.items():
        if key in STACK_OWNED:
            raise ConfigError(
                f"cell.{key}={value!r}: the stack sets {key} of cell {name}; "
                f"use {STACK_OWNED[key]} instead and remove cell.{key}"
            )
        if key not in params:
            raise ConfigError(
                f"cell.{key}={value!r}: cell {name} has no setting {key!r}; its settings are "
                f"{', '.join(allowed)}. Remove it (e.g. ~cell.{key}) or choose a cell that has it"
            )


class RecurrentStack(nn.Module):
    def __init__(
        self,
        cell: Callable[..., nn.Module],
        input_size: int,
        depth: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        cuda_graphs: bool = True,
    ):
        super().__init__()
        self.cuda_graphs = check_mode(cuda_graphs)
        if not isinstance(depth, int) or depth < 1:
            raise ConfigError(f"depth={depth!r} must be a positive integer (1 = one recurrent layer)")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"stack.dropout={dropout} must be in [0, 1)")
        self.depth, self.bidirectional = depth, bidirectional
        check_cell_settings(cell)
        cls = cell.func if isinstance(cell, functools.partial) else cell
        self.fused = getattr(cls, "fused_stack", False)
        if self.fused:
            self.rnn = cell(input_size=input_size, num_layers=depth, bidirectional=bidirectional, dropout=dropout)
            self.output_size = self.rnn.output_size
            return
        directions = 2 if bidirectional else 1
        self.layers = nn.ModuleList()
        size = input_size
        takes_place = all(k in inspect.signature(cls).parameters for k in PLACE)
        for i in range(depth):
            place = {"block_index": i, "num_blocks": depth} if takes_place else {}
            layer = nn.ModuleList(cell(input_size=size, **place) for _ in range(directions))
            self.layers.append(layer)
            size = layer[0].output_size * directions
        self.output_size = size
        self.dropout = nn.Dropout(dropout)
        # Each cell run through a CUDA graph where possible (src/models/graphs.py); plain attributes, so the
        # state_dict holds the cells' parameters only.
        self.runners = [[GraphedCell(c, cuda_graphs) for c in layer] for layer in self.layers]

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None):
        if self.fused:
            return self.rnn(x, lengths, state)
        # Layered path. State: a list over layers of a list over directions of each cell's own state.
        # With padding, a uni cell's outputs up to each length are exact (padding comes after); the backward
        # direction reads each sequence reversed within its length, so its outputs are exact too.
        new_state = []
        for i, layer in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            layer_state = state[i] if state is not None else [None] * len(layer)
            outs, states = [], []
            for d, run in enumerate(self.runners[i]):
                inp = reverse_padded(x, lengths) if d == 1 else x
                out, s = run(inp, layer_state[d])
                outs.append(reverse_padded(out, lengths) if d == 1 else out)
                states.append(s)
            x = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
            new_state.append(states)
        return x, new_state
