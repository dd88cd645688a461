"""S models of one architecture as one stacked computation: parameters with a leading member dimension, every
forward S models' work in the same number of operations (torch.func.vmap over torch.func.functional_call).

    members = Members(tasks)             tasks: S modules built alike (each from its own seed); from then on
                                         their parameters and buffers are views into the stacked tensors
    members.call("batch_loss", batch)    batch: every tensor [S, ...]; the method of each member on its slice
    members.params                       {name: [S, ...]}: what one optimizer steps (exact for element-wise ones)

Each member module keeps working on its own (evaluation, its state_dict for an ordinary checkpoint): its tensors
are no-grad views of its slice, so an in-place optimizer step on the stacked tensors is what the member sees.

torch's fused RNN/LSTM/GRU (one cuDNN/ATen call) cannot run under vmap: `loopable` swaps each for `FusedLoop`, the
same equations step by step on the same parameters (the same names, so checkpoints stay ordinary ones), with
padded steps masked as packing does. Cells with a TorchScript loop, a compiled scan or CUDA graphs run their
eager code instead (neither traces under vmap).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from src.common.errors import ConfigError
from src.models.cells.lstm import LSTMOptions, LSTMWeights, lstm_step
from src.models.stack import reverse_padded

_TORCH_LSTM = LSTMOptions(True, True, False, True, True, True, 0.0, 0.0, 0.0)


class FusedLoop(nn.Module):
    """torch's nn.RNN/LSTM/GRU (batch_first, any depth and direction) as a Python time loop over the same
    parameters: what a fused cell runs as when its members are stacked. Same state layout as the fused cell:
    h [layers * directions, B, H] (and c for lstm); with `lengths`, steps past a sequence's end leave the state
    unchanged and output zeros, as pack_padded_sequence makes the fused cell do."""

    def __init__(self, fused: nn.Module) -> None:
        super().__init__()
        self.rnn = fused.rnn  # the nn.RNN/LSTM/GRU: its parameters keep their names (stack.rnn.rnn.weight_ih_l0)
        self.output_size = fused.output_size
        self.mode = type(self.rnn).__name__.lower() if not isinstance(self.rnn, nn.RNN) else self.rnn.nonlinearity

    def forward(self, x: Tensor, lengths: Tensor | None = None, state: Any = None):
        rnn = self.rnn
        directions = 2 if rnn.bidirectional else 1
        lstm = self.mode == "lstm"
        if state is None:
            zeros = x.new_zeros(rnn.num_layers * directions, x.shape[0], rnn.hidden_size)
            state = (zeros, zeros) if lstm else zeros
        h0, c0 = state if lstm else (state, None)
        hs, cs = [], []
        for layer in range(rnn.num_layers):
            if layer and rnn.dropout:
                x = F.dropout(x, rnn.dropout, self.training)
            outs = []
            for d in range(directions):
                k = layer * directions + d
                suffix = f"_l{layer}{'_reverse' if d else ''}"
                w = [getattr(rnn, f"{n}{suffix}") for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                inp = reverse_padded(x, lengths) if d else x
                out, h, c = self.direction(inp, lengths, h0[k], None if c0 is None else c0[k], *w)
                outs.append(reverse_padded(out, lengths) if d else out)
                hs.append(h)
                cs.append(c)
            x = torch.cat(outs, -1) if directions > 1 else outs[0]
        h = torch.stack(hs)
        return x, ((h, torch.stack(cs)) if lstm else h)

    def direction(self, x, lengths, h, c, w_ih, w_hh, b_ih, b_hh):
        mask = None if lengths is None else torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        outputs = []
        pre_x = F.linear(x, w_ih, b_ih + b_hh) if self.mode == "lstm" else F.linear(x, w_ih, b_ih)
        weights = LSTMWeights(w_hh, None, None, None, None, None, None, None, None, None)
        for t, pre in enumerate(pre_x.unbind(1)):
            if self.mode == "lstm":
                h_new, c_new, *_ = lstm_step(pre, h, c, None, weights, _TORCH_LSTM)
            elif self.mode == "gru":
                hidden = h.shape[-1]
                rec = torch.addmm(b_hh, h, w_hh.t())
                r, z = torch.sigmoid(pre[:, : 2 * hidden] + rec[:, : 2 * hidden]).chunk(2, 1)
                n = torch.tanh(pre[:, 2 * hidden :] + r * rec[:, 2 * hidden :])
                h_new, c_new = n + z * (h - n), None
            else:
                act = torch.tanh if self.mode == "tanh" else torch.relu
                h_new, c_new = act(torch.addmm(pre + b_hh, h, w_hh.t())), None
            if mask is None:
                h, c = h_new, c_new
                outputs.append(h)
            else:
                m = mask[:, t, None]
                h = torch.where(m, h_new, h)
                c = torch.where(m, c_new, c) if c is not None else None
                outputs.append(h_new * m)
        return torch.stack(outputs, 1), h, c


def loopable(task: nn.Module) -> list[str]:
    """Make `task` runnable under vmap, in place, without changing its parameters or what it computes: a fused
    cell becomes its FusedLoop, TorchScript loops, compiled scans and CUDA graphs are switched off. Returns what
    was changed (metrics.json `update_reason`)."""
    notes = []
    stack = getattr(task, "stack", None)
    if stack is not None and getattr(stack, "fused", False) and not isinstance(stack.rnn, FusedLoop):
        stack.rnn = FusedLoop(stack.rnn)
        notes.append(f"fused {stack.rnn.mode} runs as its loop equivalent")
    for module in task.modules():
        if getattr(module, "jit", False) not in (False, None):
            module.jit = False
        if getattr(module, "compile", False) not in (False, None) and not callable(module.compile):
            module.compile = False
    for layer in getattr(stack, "runners", None) or []:
        for runner in layer:
            runner.mode = False
    return notes


class _Method(nn.Module):
    """functional_call calls a module's forward: this one's forward is any method of the task it holds."""

    def __init__(self, task: nn.Module) -> None:
        super().__init__()
        self.task = task

    def forward(self, method: str, *args: Any) -> Any:
        result = getattr(self.task, method)(*args)
        if method == "loss":  # (loss, n) or None (no target in this window): tensors only, under vmap
            return (result[0], torch.as_tensor(result[1])) if result is not None else None
        return result


class Members:
    """The stacked parameters and buffers of S modules built alike, and their methods run as one vmap."""

    def __init__(self, tasks: list[nn.Module]) -> None:
        if not tasks:
            raise ConfigError("seeds=[] trains nothing: give at least one seed")
        names = [sorted(dict(t.named_parameters()).keys()) for t in tasks]
        if any(n != names[0] for n in names):
            raise ConfigError("the stacked members have different parameters: they must be built from one config")
        self.tasks = tasks
        self.persistent = set(tasks[0].state_dict())  # (a task's running counts are buffers outside it)
        params, buffers = stack_module_state(tasks)
        self.params = {k: nn.Parameter(v.detach().clone()) for k, v in params.items()}
        self.buffers = {k: v.detach().clone() for k, v in buffers.items()}
        self.method = _Method(tasks[0])
        for task in tasks:
            for name in [*self.params, *self.buffers]:
                module, leaf = _owner(task, name)
                module._parameters.pop(leaf, None)
                module._buffers.pop(leaf, None)
        self.bind()

    def __len__(self) -> int:
        return len(self.tasks)

    def bind(self) -> None:
        """Point every member's tensors at its slice of the stacked ones (again after a move to another device)."""
        with torch.no_grad():
            for s, task in enumerate(self.tasks):
                for name, value in [*self.params.items(), *self.buffers.items()]:
                    module, leaf = _owner(task, name)
                    object.__setattr__(module, leaf, value[s])

    def call(self, method: str, *args: Any) -> Any:
        """tasks[s].<method>(*(a[s] for a in args)) for every member s, as one vmapped call; results stacked."""
        keys = {**{f"task.{k}": v for k, v in self.params.items()}, **{f"task.{k}": v for k, v in self.buffers.items()}}

        def one(tensors: dict, *a: Any) -> Any:
            return functional_call(self.method, tensors, (method, *a))

        return vmap(one, in_dims=(0, *(_dims(a) for a in args)), randomness="different")(keys, *args)

    def state_dict(self, s: int) -> dict[str, Tensor]:
        """Member s's parameters and persistent buffers, copied: what its own checkpoint holds of them."""
        tensors = {**self.params, **self.buffers}
        return {k: v[s].detach().clone() for k, v in tensors.items() if k in self.persistent}


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


def _owner(task: nn.Module, name: str) -> tuple[nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (task.get_submodule(path) if path else task), leaf
