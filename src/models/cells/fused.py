"""torch's fused RNN/LSTM/GRU (cuDNN on GPU): one call runs every layer and both directions."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from src.common.errors import ConfigError

MODES = {
    "rnn": (nn.RNN, {"nonlinearity": "tanh"}),
    "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (nn.LSTM, {}),
    "gru": (nn.GRU, {}),
}


class FusedRNN(nn.Module):
    """State: h [layers*directions, B, H] for rnn/gru; the tuple (h, c) for lstm."""

    fused_stack = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        mode: str = "lstm",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"cell.mode={mode!r} is not one of {sorted(MODES)}")
        if hidden_size < 1:
            raise ConfigError(f"cell.hidden_size={hidden_size} must be a positive integer")
        cls, extra = MODES[mode]
        self.rnn = cls(
            input_size,
            hidden_size,
            num_layers=num_layers,
            bidirectional=bidirectional,
            dropout=dropout if num_layers > 1 else 0.0,
            batch_first=True,
            **extra,
        )
        self.output_size = hidden_size * (2 if bidirectional else 1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None, state=None):
        total = x.shape[1]
        if lengths is None:
            return self.rnn(x, state)
        # Packing makes padded steps invisible: the backward direction starts at each sequence's last real step.
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, state = self.rnn(packed, state)
        return pad_packed_sequence(out, batch_first=True, total_length=total)[0], state
