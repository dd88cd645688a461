"""GRUs: torch's (reset gate applied after the recurrent matrix, as cuDNN) re-implemented as `gru_ref`, and the
original (Cho et al. 2014; TensorFlow's GRUCell) as `gru_v1`. Gate blocks r, z, n in torch's order; state h.

    r = sigmoid(W_r x + b_r + R_r h),  z = sigmoid(W_z x + b_z + R_z h)
    reset after  (gru_ref): n = tanh(W_n x + b_n + r * (R_n h + b_hn))
    reset before (gru_v1):  n = tanh(W_n x + b_n + R_n (r * h))
    h' = (1 - z) * n + z * h
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.models.cells.base import init_uniform_, jit_setting, positive_int, time_loop


def gru_sequence(
    pre_x: Tensor, h: Tensor, weight_hh: Tensor, bias_hh: Optional[Tensor], reset_after: bool
) -> Tuple[Tensor, Tensor]:
    """pre_x = W x + b for all steps [B, T, 3H] -> (outputs [B, T, H], h)."""
    hidden = h.shape[1]
    w_rz, w_n = weight_hh[: 2 * hidden], weight_hh[2 * hidden :]
    outputs: List[Tensor] = []
    for pre_t in pre_x.unbind(1):  # unbind, not indexing: one gradient tensor for all steps, not one per step
        x_rz, x_n = pre_t[:, : 2 * hidden], pre_t[:, 2 * hidden :]
        if reset_after:
            rec = torch.mm(h, weight_hh.t()) if bias_hh is None else torch.addmm(bias_hh, h, weight_hh.t())
            r, z = torch.sigmoid(x_rz + rec[:, : 2 * hidden]).chunk(2, 1)
            n = torch.tanh(x_n + r * rec[:, 2 * hidden :])
        else:
            r, z = torch.sigmoid(torch.addmm(x_rz, h, w_rz.t())).chunk(2, 1)
            n = torch.tanh(torch.addmm(x_n, r * h, w_n.t()))
        h = n + z * (h - n)
        outputs.append(h)
    return torch.stack(outputs, 1), h


class _GRU(nn.Module):
    reset_after = True

    def __init__(self, input_size: int, hidden_size: int, jit: Union[bool, str]):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        self.jit = jit_setting(jit)
        self.weight_ih = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh = nn.Parameter(torch.empty(3 * hidden_size)) if self.reset_after else None
        init_uniform_(self, hidden_size)

    def forward(self, x: Tensor, state: Optional[Tensor] = None):
        h = x.new_zeros(x.shape[0], self.hidden_size) if state is None else state
        outputs, h = time_loop(gru_sequence, self.jit, x)(
            F.linear(x, self.weight_ih, self.bias_ih), h, self.weight_hh, self.bias_hh, self.reset_after
        )
        return outputs, h

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, reset_after={self.reset_after}, jit={self.jit}"


class GRURef(_GRU):
    """torch.nn.GRU (one layer, one direction) in plain PyTorch, with its parameter names; equal to it with
    copied weights (tests)."""

    def __init__(self, input_size: int, hidden_size: int = 128, jit: Union[bool, str] = "auto"):
        super().__init__(input_size, hidden_size, jit)


class GRUv1(_GRU):
    """The original GRU: the reset gate scales h before the recurrent matrix of the candidate (Cho et al. 2014,
    TF's GRUCell), so the candidate's matrix product waits for r: two matrix products per step instead of one.
    One bias per gate (no separate recurrent bias)."""

    reset_after = False

    def __init__(self, input_size: int, hidden_size: int = 128, jit: Union[bool, str] = "auto"):
        super().__init__(input_size, hidden_size, jit)
