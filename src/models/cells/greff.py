"""The vanilla LSTM and its eight variants from Greff et al., "LSTM: A Search Space Odyssey" (IEEE TNNLS 2017).

The vanilla LSTM (V) there has peepholes; each variant changes exactly one thing about it. `cell.variant=`:
"""

from __future__ import annotations

from src.common.errors import ConfigError
from src.models.cells.lstm import FORGET_COUPLED, FORGET_NONE, LSTMEngine, Structure

VANILLA = Structure(peepholes=True)
VARIANTS = {
    "V": ("vanilla: input, forget and output gates, peepholes, tanh input and output activations", VANILLA),
    "NIG": ("no input gate (i = 1)", Structure(input_gate=False, peepholes=True)),
    "NFG": ("no forget gate (f = 1)", Structure(forget_gate=FORGET_NONE, peepholes=True)),
    "NOG": ("no output gate (o = 1)", Structure(output_gate=False, peepholes=True)),
    "NIAF": (
        "no input activation function (z = its pre-activation)",
        Structure(input_activation=False, peepholes=True),
    ),
    "NOAF": ("no output activation function (h = o * c)", Structure(output_activation=False, peepholes=True)),
    "NP": ("no peepholes", Structure()),
    "CIFG": ("coupled input and forget gate (f = 1 - i)", Structure(forget_gate=FORGET_COUPLED, peepholes=True)),
    "FGR": (
        "full gate recurrence (each gate also sees all three gates of the previous step)",
        Structure(gate_recurrence=True, peepholes=True),
    ),
}
__doc__ += "\n".join(f"    {name:5} {what}" for name, (what, _) in VARIANTS.items()) + "\n"


class LSTMVariant(LSTMEngine):
    """One of Greff et al.'s nine LSTM architectures, chosen by `variant`. The state of FGR is (h, c, gates of
    the previous step); of the others (h, c)."""

    def __init__(self, input_size: int, hidden_size: int = 128, variant: str = "V", jit: bool | str = "auto"):
        if variant not in VARIANTS:
            choices = "; ".join(f"{k}: {v[0]}" for k, v in VARIANTS.items())
            raise ConfigError(
                f"cell.variant={variant!r} is not a variant of Greff et al. 2017; choose one of: {choices}"
            )
        super().__init__(input_size, hidden_size, VARIANTS[variant][1], jit=jit)
        self.variant = variant

    def extra_repr(self) -> str:
        return f"variant={self.variant}, " + super().extra_repr()
