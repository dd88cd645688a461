"""The tutorials' MinimalRNNCell (Keras's custom-RNN-cell example): h_t = x_t W + h_{t-1} U, no bias, no
nonlinearity: a linear recurrence, the smallest cell that fits the contract. Its output is its state h."""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from src.models.cells.base import init_uniform_, jit_setting, positive_int, time_loop


def linear_sequence(pre_x: Tensor, h: Tensor, weight_hh: Tensor) -> Tuple[Tensor, Tensor]:
    outputs: List[Tensor] = []
    for pre_t in pre_x.unbind(1):
        h = torch.addmm(pre_t, h, weight_hh.t())
        outputs.append(h)
    return torch.stack(outputs, 1), h


class MinimalRNN(nn.Module):
    """Initialised as torch's RNN, U(-1/sqrt(H), 1/sqrt(H)): U's spectral radius starts near 1/sqrt(3), so the
    linear recurrence decays rather than explodes (Keras's example uses U(-0.05, 0.05))."""

    def __init__(self, input_size: int, hidden_size: int = 128, jit: Union[bool, str] = "auto"):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        self.jit = jit_setting(jit)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))  # W^T
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, hidden_size))  # U^T
        init_uniform_(self, hidden_size)

    def forward(self, x: Tensor, state: Optional[Tensor] = None):
        h = x.new_zeros(x.shape[0], self.hidden_size) if state is None else state
        return time_loop(linear_sequence, self.jit, x)(x @ self.weight_ih.t(), h, self.weight_hh)
