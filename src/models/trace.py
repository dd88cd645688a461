"""A recurrent stack run one time step at a time, layer by layer: what the fused kernels hide, made visible.

    outputs, traces = trace_stack(stack, x, lengths, state, gates=False)

`outputs` equals `stack(x, lengths, state)[0]` at every real (unpadded) step. Each LayerTrace holds, per layer
and direction and per processing step (the backward direction processes each sequence reversed within its
length), the layer's output y_t and its recurrent state after the step as *separate autograd nodes*: y_t is
what the next layer and the head read, the state is what the next step reads. So

    d loss / d h_t  =  grad(y_t) + grad(h part of the state_t)

is the total gradient reaching h_t through both paths, for any cell (the diagnostics in src/diagnostics/report.py).

torch's fused RNN/LSTM/GRU run as one opaque call over all layers, so here each of their layers is recomputed
from that layer's own weights (`weight_ih_l{k}[_reverse]`, ...) with the same equations as torch (GRU: reset
gate applied after the recurrent matrix), which also yields the gate activations. Other cells are stepped
through their own `forward(x[:, t:t+1], state)`, and every sigmoid the step computes is recorded as a gate
(`sigmoid_1`, `sigmoid_2`, ... in the order the cell computes them, each [B, width]): the gates of the LSTM family,
GRU, minGRU/minLSTM, xLSTM's output gate, with no code in the cell. A cell may instead define
`sigmoid_gates(x, state) -> {name: [B, H]}` (x: [B, 1, input_size], state: its state before the step) to name them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from src.models.stack import RecurrentStack, reverse_padded


@dataclass
class LayerTrace:
    layer: int
    direction: int  # 0 forward, 1 backward
    outputs: list[torch.Tensor] = field(default_factory=list)  # y_t [B, H] per processing step
    # The state's tensors themselves (the nodes the next step reads, in the cell's own shape, e.g. [1, B, H]):
    h: list[torch.Tensor | None] = field(default_factory=list)  # its h; None where not identifiable
    c: list[torch.Tensor | None] = field(default_factory=list)  # its second tensor (LSTM's c), or None
    gates: dict[str, list[torch.Tensor]] = field(default_factory=dict)  # sigmoid gate activations [B, H]


def tree_map(fn: Callable[[torch.Tensor], Any], state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, (tuple, list)):
        return type(state)(tree_map(fn, s) for s in state)
    return state


def _tensors(state: Any) -> list[torch.Tensor]:
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, (tuple, list)):
        return [t for s in state for t in _tensors(s)]
    return []


def split_state(state: Any, y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(h, c) of a cell's state, by torch's convention: h alone or the tuple (h, c). A tensor that does not have
    y's size is not taken for h (a cell with another kind of state). Returned as they are, not reshaped: the
    gradient is taken with respect to these very nodes."""
    tensors = [t for t in _tensors(state) if t.numel() == y.numel()]
    return (tensors[0] if tensors else None), (tensors[1] if len(tensors) == 2 else None)


# -- torch's fused cells, one layer and direction at a time --------------------------------------------------
def _fused_step(mode: str, w_hh: torch.Tensor, b_hh: torch.Tensor | None, gi: torch.Tensor, state: Any):
    """One step of torch's RNN/LSTM/GRU given gi = x_t W_ih^T + b_ih: (h, new state, sigmoid gates)."""
    h_prev = state[0] if mode == "LSTM" else state
    gh = F.linear(h_prev, w_hh, b_hh)
    if mode == "LSTM":
        i, f, g, o = (gi + gh).chunk(4, dim=-1)
        i, f, o = i.sigmoid(), f.sigmoid(), o.sigmoid()
        c = f * state[1] + i * g.tanh()
        h = o * c.tanh()
        return h, (h, c), {"input": i, "forget": f, "output": o}
    if mode == "GRU":
        ri, zi, ni = gi.chunk(3, dim=-1)
        rh, zh, nh = gh.chunk(3, dim=-1)
        r, z = (ri + rh).sigmoid(), (zi + zh).sigmoid()
        n = (ni + r * nh).tanh()
        h = (1 - z) * n + z * h_prev
        return h, h, {"reset": r, "update": z}
    pre = gi + gh
    h = pre.tanh() if mode == "RNN_TANH" else pre.relu()
    return h, h, {}


def _fused_layer(stack: RecurrentStack, layer: int, direction: int, seq: torch.Tensor, state: Any):
    """A step function over `seq` for one layer/direction of a fused stack, and its initial state."""
    rnn = stack.rnn.rnn
    suffix = f"_l{layer}" + ("_reverse" if direction else "")
    w_ih, w_hh = getattr(rnn, "weight_ih" + suffix), getattr(rnn, "weight_hh" + suffix)
    b_ih, b_hh = getattr(rnn, "bias_ih" + suffix, None), getattr(rnn, "bias_hh" + suffix, None)
    gi = F.linear(seq, w_ih, b_ih)  # the input part of every step at once
    directions = 2 if stack.bidirectional else 1
    k = layer * directions + direction
    zeros = seq.new_zeros(seq.shape[0], rnn.hidden_size)
    if rnn.mode == "LSTM":
        init = (zeros, zeros) if state is None else (state[0][k], state[1][k])
    else:
        init = zeros if state is None else state[k]

    def step(t: int, s: Any, gates: bool):  # the gates come for free here
        return _fused_step(rnn.mode, w_hh, b_hh, gi[:, t], s)

    return step, init


class SigmoidRecorder(TorchFunctionMode):
    """Records the output of every sigmoid computed inside it whose first dimension is the batch, as [B, width]."""

    SIGMOIDS = {torch.sigmoid, torch.Tensor.sigmoid, F.sigmoid, torch.special.expit}

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.values = batch, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in self.SIGMOIDS and isinstance(out, torch.Tensor) and out.dim() and out.shape[0] == self.batch:
            self.values.append(out.detach().reshape(self.batch, -1))
        return out


def _cell_layer(stack: RecurrentStack, layer: int, direction: int, seq: torch.Tensor, state: Any):
    cell = stack.layers[layer][direction]
    gate_fn = getattr(cell, "sigmoid_gates", None)
    gate_fn = gate_fn if callable(gate_fn) else None

    def step(t: int, s: Any, gates: bool):
        x_t = seq[:, t : t + 1]
        if not gates or gate_fn is not None:
            g = gate_fn(x_t, s) if gates else {}
            out, s = cell(x_t, s)
            return out[:, 0], s, g
        with SigmoidRecorder(x_t.shape[0]) as recorder:
            out, s = cell(x_t, s)
        return out[:, 0], s, {f"sigmoid_{i + 1}": v for i, v in enumerate(recorder.values)}

    return step, (state[layer][direction] if state is not None else None)


def trace_stack(
    stack: RecurrentStack, x: torch.Tensor, lengths: torch.Tensor | None = None, state: Any = None, gates: bool = False
) -> tuple[torch.Tensor, list[LayerTrace]]:
    """Run `stack` step by step (see the module docstring). Dropout between layers is not applied: trace a
    stack in eval mode."""
    directions = 2 if stack.bidirectional else 1
    traces, inp = [], x
    for layer in range(stack.depth):
        outs = []
        for d in range(directions):
            seq = reverse_padded(inp, lengths) if d else inp
            make = _fused_layer if stack.fused else _cell_layer
            step, s = make(stack, layer, d, seq, state)
            trace = LayerTrace(layer, d)
            for t in range(seq.shape[1]):
                y, s, g = step(t, s, gates)
                # Clones: the next layer reads y, the next step reads s; gradients w.r.t. each are then the two
                # separate paths out of h_t, however the cell derived its output from its state.
                y, s = y.clone(), tree_map(torch.Tensor.clone, s)
                h, c = split_state(s, y)
                trace.outputs.append(y)
                trace.h.append(h)
                trace.c.append(c)
                for name, value in g.items():
                    trace.gates.setdefault(name, []).append(value)
            traces.append(trace)
            out = torch.stack(trace.outputs, dim=1)
            outs.append(reverse_padded(out, lengths) if d else out)
        inp = torch.cat(outs, dim=-1) if len(outs) > 1 else outs[0]
    return inp, traces
