"""IndRNN (Li et al. 2018, "Independently Recurrent Neural Network"): each unit sees only its own past,

    h_t = relu(W x_t + b + u * h_{t-1}),   u a vector, |u| <= recurrent_max,

so the recurrence is element-wise (no matrix product in the time loop) and the bound on |u| is what keeps
gradients through time from exploding or vanishing: over T steps a unit's gradient scales at most by
recurrent_max^T (the paper uses 2^(1/T) for ReLU). Depth comes from stacking (depth=), as in the paper.
"""

from __future__ import annotations

from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import init_uniform_, jit_setting, positive_int, time_loop


def indrnn_sequence(pre_x: Tensor, h: Tensor, u: Tensor) -> Tuple[Tensor, Tensor]:
    outputs: List[Tensor] = []
    for pre_t in pre_x.unbind(1):
        h = torch.relu(torch.addcmul(pre_t, u, h))
        outputs.append(h)
    return torch.stack(outputs, 1), h


class IndRNN(nn.Module):
    """The bound is applied in the forward pass (u is clamped to +-recurrent_max where it is used), so it holds
    whatever the optimizer does; u starts uniform in [0, recurrent_max] as in the paper."""

    def __init__(
        self, input_size: int, hidden_size: int = 128, recurrent_max: float = 1.0, jit: Union[bool, str] = "auto"
    ):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        if isinstance(recurrent_max, bool) or not isinstance(recurrent_max, (int, float)) or recurrent_max <= 0:
            raise ConfigError(
                f"cell.recurrent_max={recurrent_max!r} must be a positive number, the bound on |u| "
                f"(1.0: no unit amplifies its past; the paper uses 2^(1/T) for T steps)"
            )
        self.recurrent_max = float(recurrent_max)
        self.jit = jit_setting(jit)
        self.weight_ih = nn.Parameter(torch.empty(hidden_size, input_size))
        self.bias = nn.Parameter(torch.empty(hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size))  # u
        init_uniform_(self, hidden_size)
        nn.init.uniform_(self.weight_hh, 0.0, self.recurrent_max)

    def forward(self, x: Tensor, state: Optional[Tensor] = None):
        h = x.new_zeros(x.shape[0], self.hidden_size) if state is None else state
        u = self.weight_hh.clamp(-self.recurrent_max, self.recurrent_max)
        return time_loop(indrnn_sequence, self.jit, x)(F.linear(x, self.weight_ih, self.bias), h, u)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, recurrent_max={self.recurrent_max}, jit={self.jit}"
