"""The LSTM family on one engine: torch's LSTM re-implemented (`lstm_ref`), TensorFlow's (`lstm_tf`), peepholes,
an output projection, layer normalisation, a coupled input-forget gate, and Greff et al.'s variants (greff.py).

One time step, for the parts a cell has (gate blocks are packed in the order i, f, z, o; an absent gate is 1):

    pre     = W x_t + b + R h_{t-1}  (+ G [i, f, o]_{t-1} with full gate recurrence)   (-> LayerNorm per block)
    z       = tanh(pre_z)                        (identity without an input activation)
    i       = sigmoid(pre_i + p_i * c_{t-1})     (peepholes p_* only with `peepholes`)
    f       = sigmoid(pre_f + forget_bias + p_f * c_{t-1}),  or 1 (no forget gate),  or 1 - i (coupled)
    c_t     = f * c_{t-1} + i * z                (-> LayerNorm) (-> clipped to +-cell_clip)
    o       = sigmoid(pre_o + p_o * c_t)
    h_t     = o * tanh(c_t)                      (o * c_t without an output activation) (-> P h_t, clipped)

W x_t + b is computed for all steps at once (one large matrix product); only R h_{t-1} runs in the time loop.
State: the tuple (h, c), and (h, c, previous gates) with full gate recurrence.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import (
    a_bool,
    a_number,
    init_uniform_,
    jit_setting,
    optional_positive,
    positive_int,
    time_loop,
)

# How the forget gate is made.
FORGET_LEARNED, FORGET_NONE, FORGET_COUPLED = "learned", "none", "coupled"


class LSTMWeights(NamedTuple):
    """The weights used inside the time loop; None where a cell lacks the part."""

    weight_hh: Tensor  # R: [blocks * H, R_in], R_in = proj_size or H
    peephole_i: Optional[Tensor]  # [H]
    peephole_f: Optional[Tensor]
    peephole_o: Optional[Tensor]
    weight_gates: Optional[Tensor]  # full gate recurrence: [S * H, S * H], S = sigmoid gates
    norm_gates_weight: Optional[Tensor]  # layer norm of each block's pre-activation: [blocks, H]
    norm_gates_bias: Optional[Tensor]
    norm_cell_weight: Optional[Tensor]  # layer norm of the cell: [H]
    norm_cell_bias: Optional[Tensor]
    weight_hr: Optional[Tensor]  # output projection: [P, H]


class LSTMOptions(NamedTuple):
    input_gate: bool
    forget_gate: bool  # a learned forget gate
    coupled_forget: bool  # f = 1 - i (without a learned forget gate; neither: f = 1)
    output_gate: bool
    input_activation: bool
    output_activation: bool
    forget_bias: float
    cell_clip: float  # 0: none
    proj_clip: float  # 0: none


def lstm_step(
    pre_x: Tensor, h: Tensor, c: Tensor, gates_prev: Optional[Tensor], w: LSTMWeights, opt: LSTMOptions
) -> Tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor], Tensor, Optional[Tensor]]:
    """One step -> (h, c, i, f, z, o); None for an absent gate (it is 1). Every LSTM cell runs this code."""
    hidden = c.shape[1]
    pre = torch.addmm(pre_x, h, w.weight_hh.t())
    blocks = pre.shape[1] // hidden
    norm_w = w.norm_gates_weight
    norm_b = w.norm_gates_bias
    if norm_w is not None and norm_b is not None:
        pre = (F.layer_norm(pre.view(-1, blocks, hidden), [hidden], eps=1e-5) * norm_w + norm_b).view(
            -1, blocks * hidden
        )
    parts = pre.chunk(blocks, 1)
    recurrent_gates: List[Tensor] = []
    w_gates = w.weight_gates
    if w_gates is not None and gates_prev is not None:
        recurrent_gates = torch.mm(gates_prev, w_gates.t()).chunk(w_gates.shape[0] // hidden, 1)
    k = 0  # next block of `parts`
    s = 0  # next block of `recurrent_gates`
    i: Optional[Tensor] = None
    f: Optional[Tensor] = None
    o: Optional[Tensor] = None
    if opt.input_gate:
        pre_i = parts[k]
        k += 1
        if len(recurrent_gates) > 0:
            pre_i = pre_i + recurrent_gates[s]
            s += 1
        p_i = w.peephole_i
        i = torch.sigmoid(pre_i + p_i * c if p_i is not None else pre_i)
    if opt.forget_gate:
        pre_f = parts[k] + opt.forget_bias if opt.forget_bias != 0.0 else parts[k]
        k += 1
        if len(recurrent_gates) > 0:
            pre_f = pre_f + recurrent_gates[s]
            s += 1
        p_f = w.peephole_f
        f = torch.sigmoid(pre_f + p_f * c if p_f is not None else pre_f)
    elif opt.coupled_forget and i is not None:
        f = 1.0 - i
    z = torch.tanh(parts[k]) if opt.input_activation else parts[k]
    k += 1
    update = z if i is None else i * z
    c = update + (c if f is None else f * c)
    norm_cw = w.norm_cell_weight
    norm_cb = w.norm_cell_bias
    if norm_cw is not None and norm_cb is not None:
        c = F.layer_norm(c, [hidden], norm_cw, norm_cb, eps=1e-5)
    if opt.cell_clip > 0.0:
        c = c.clamp(-opt.cell_clip, opt.cell_clip)
    h = torch.tanh(c) if opt.output_activation else c
    if opt.output_gate:
        pre_o = parts[k]
        if len(recurrent_gates) > 0:
            pre_o = pre_o + recurrent_gates[s]
        p_o = w.peephole_o
        o = torch.sigmoid(pre_o + p_o * c if p_o is not None else pre_o)
        h = o * h
    w_hr = w.weight_hr
    if w_hr is not None:
        h = torch.mm(h, w_hr.t())
        if opt.proj_clip > 0.0:
            h = h.clamp(-opt.proj_clip, opt.proj_clip)
    return h, c, i, f, z, o


def gates_of_step(i: Optional[Tensor], f: Optional[Tensor], o: Optional[Tensor], opt: LSTMOptions) -> Tensor:
    """The learned sigmoid gates of a step, concatenated: what full gate recurrence feeds to the next step."""
    gates: List[Tensor] = []
    if i is not None:
        gates.append(i)
    if f is not None and opt.forget_gate:
        gates.append(f)
    if o is not None:
        gates.append(o)
    return torch.cat(gates, 1)


def lstm_sequence(
    pre_x: Tensor, h: Tensor, c: Tensor, gates_prev: Optional[Tensor], w: LSTMWeights, opt: LSTMOptions
) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """pre_x [B, T, blocks * H] -> (outputs [B, T, R], h, c, gates_prev)."""
    outputs: List[Tensor] = []
    # unbind, not pre_x[:, t]: indexing would make autograd add a full-size zero tensor per step in backward.
    for pre_t in pre_x.unbind(1):
        h, c, i, f, z, o = lstm_step(pre_t, h, c, gates_prev, w, opt)
        if gates_prev is not None:
            gates_prev = gates_of_step(i, f, o, opt)
        outputs.append(h)
    return torch.stack(outputs, 1), h, c, gates_prev


@dataclasses.dataclass(frozen=True)
class Structure:
    """Which parts an LSTM has (the defaults: torch's LSTM)."""

    input_gate: bool = True
    forget_gate: str = FORGET_LEARNED
    output_gate: bool = True
    input_activation: bool = True
    output_activation: bool = True
    peepholes: bool = False
    gate_recurrence: bool = False
    layer_norm: bool = False

    @property
    def sigmoid_gates(self) -> int:
        return self.input_gate + (self.forget_gate == FORGET_LEARNED) + self.output_gate

    @property
    def blocks(self) -> int:
        return self.sigmoid_gates + 1  # + the cell input z


class LSTMEngine(nn.Module):
    """The parameters and time loop that every LSTM cell here shares. Subclasses choose the structure and the
    settings a user may change (their constructor's arguments), and may store W / b differently
    (`input_projection`, `recurrent_matrix`), e.g. in TensorFlow's layout."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        structure: Structure = Structure(),
        forget_bias: float = 0.0,
        cell_clip: Optional[float] = None,
        proj_size: Optional[int] = None,
        proj_clip: Optional[float] = None,
        jit: Union[bool, str] = "auto",
        weights_ih_hh: bool = True,
        bias: bool = True,
    ):
        super().__init__()
        self.hidden_size = positive_int("hidden_size", hidden_size)
        self.structure = structure
        if proj_size is not None and positive_int("proj_size", proj_size) >= hidden_size:
            raise ConfigError(
                f"cell.proj_size={proj_size} must be smaller than cell.hidden_size={hidden_size} "
                f"(a projection that does not shrink h only adds parameters)"
            )
        if proj_clip is not None and proj_size is None:
            raise ConfigError(f"cell.proj_clip={proj_clip} needs cell.proj_size (there is no projection to clip)")
        self.output_size = proj_size or hidden_size
        self.options = LSTMOptions(
            structure.input_gate,
            structure.forget_gate == FORGET_LEARNED,
            structure.forget_gate == FORGET_COUPLED,
            structure.output_gate,
            structure.input_activation,
            structure.output_activation,
            a_number("forget_bias", forget_bias),
            optional_positive("cell_clip", cell_clip, "the cell is clipped to +-cell_clip"),
            optional_positive("proj_clip", proj_clip, "h is clipped to +-proj_clip"),
        )
        self.jit = jit_setting(jit)
        H, rows = hidden_size, structure.blocks * hidden_size
        if weights_ih_hh:
            self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
            self.weight_hh = nn.Parameter(torch.empty(rows, self.output_size))
            self.bias = nn.Parameter(torch.empty(rows)) if bias else None
        gates = ("i", "f", "o") if structure.peepholes else ()
        present = {"i": structure.input_gate, "f": structure.forget_gate == FORGET_LEARNED, "o": structure.output_gate}
        for g in ("i", "f", "o"):
            self.register_parameter(
                f"peephole_{g}", nn.Parameter(torch.empty(H)) if g in gates and present[g] else None
            )
        s = structure.sigmoid_gates * H
        self.weight_gates = nn.Parameter(torch.empty(s, s)) if structure.gate_recurrence else None
        self.weight_hr = nn.Parameter(torch.empty(self.output_size, H)) if proj_size else None
        init_uniform_(self, hidden_size)
        if structure.layer_norm:
            self.norm_gates_weight = nn.Parameter(torch.ones(structure.blocks, H))
            self.norm_gates_bias = nn.Parameter(torch.zeros(structure.blocks, H))
            self.norm_cell_weight = nn.Parameter(torch.ones(H))
            self.norm_cell_bias = nn.Parameter(torch.zeros(H))
        else:
            self.norm_gates_weight = self.norm_gates_bias = self.norm_cell_weight = self.norm_cell_bias = None

    # -- how W x + b and R are stored (overridden by cells that keep another layout) ----------------------------
    def input_projection(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias)

    def recurrent_matrix(self) -> Tensor:
        return self.weight_hh

    # -- running -------------------------------------------------------------------------------------------------
    def weights(self) -> LSTMWeights:
        return LSTMWeights(
            self.recurrent_matrix(),
            self.peephole_i,
            self.peephole_f,
            self.peephole_o,
            self.weight_gates,
            self.norm_gates_weight,
            self.norm_gates_bias,
            self.norm_cell_weight,
            self.norm_cell_bias,
            self.weight_hr,
        )

    def initial_state(self, x: Tensor) -> tuple:
        B = x.shape[0]
        h, c = x.new_zeros(B, self.output_size), x.new_zeros(B, self.hidden_size)
        if self.structure.gate_recurrence:
            return h, c, x.new_zeros(B, self.structure.sigmoid_gates * self.hidden_size)
        return h, c

    def forward(self, x: Tensor, state: Optional[tuple] = None):
        h, c, *rest = self.initial_state(x) if state is None else state
        run = time_loop(lstm_sequence, self.jit, x)
        outputs, h, c, gates = run(
            self.input_projection(x), h, c, rest[0] if rest else None, self.weights(), self.options
        )
        return outputs, ((h, c, gates) if gates is not None else (h, c))

    @torch.no_grad()
    def trace(self, x: Tensor, state: Optional[tuple] = None) -> dict[str, Tensor]:
        """Every gate, cell and output of every step, [B, T, H] each, from the same step code the cell trains
        with: what tests use to show that a variant removes what it names. An absent gate is reported as 1."""
        h, c, *rest = self.initial_state(x) if state is None else state
        gates_prev = rest[0] if rest else None
        w, seen = self.weights(), {k: [] for k in ("i", "f", "z", "o", "c", "h")}
        for pre_t in self.input_projection(x).unbind(1):
            h, c, i, f, z, o = lstm_step(pre_t, h, c, gates_prev, w, self.options)
            if gates_prev is not None:
                gates_prev = gates_of_step(i, f, o, self.options)
            for name, value in zip("ifzoch", (i, f, z, o, c, h)):
                seen[name].append(torch.ones_like(c) if value is None else value)
        return {k: torch.stack(v, 1) for k, v in seen.items()}

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, output_size={self.output_size}, jit={self.jit}"


class LSTMRef(LSTMEngine):
    """torch.nn.LSTM (one layer, one direction) in plain PyTorch, with its parameter names and gate order
    (i, f, g, o); equal to it with copied weights (tests). The baseline that the other LSTM cells modify."""

    def __init__(self, input_size: int, hidden_size: int = 128, jit: Union[bool, str] = "auto"):
        super().__init__(input_size, hidden_size, jit=jit)
        self.bias_hh = nn.Parameter(torch.empty_like(self.bias))  # torch keeps two biases; kept for a 1:1 copy
        init_uniform_(self, hidden_size)

    def input_projection(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight_ih, self.bias + self.bias_hh)


class LSTMTF(LSTMEngine):
    """TensorFlow's LSTMCell / BasicLSTMCell: one kernel [input + hidden, 4H] over [x, h] and one bias [4H], gate
    blocks in the order i, j, f, o (j: the cell input), `forget_bias` added to the forget gate's pre-activation
    (default 1.0, as TF). Kernel and bias keep TF's layout and initialisation (Glorot uniform, zeros), so TF
    weights load as they are. State: (h, c), the order every cell here uses (TF's LSTMStateTuple is (c, h))."""

    # TF's blocks (i, j, f, o) in the engine's order (i, f, z, o)
    TF_TO_ENGINE = (0, 2, 1, 3)

    def __init__(
        self, input_size: int, hidden_size: int = 128, forget_bias: float = 1.0, jit: Union[bool, str] = "auto"
    ):
        super().__init__(input_size, hidden_size, forget_bias=forget_bias, jit=jit, weights_ih_hh=False)
        self.input_size = input_size
        self.kernel = nn.Parameter(torch.empty(input_size + hidden_size, 4 * hidden_size))
        self.bias = nn.Parameter(torch.zeros(4 * hidden_size))
        bound = math.sqrt(6.0 / (input_size + hidden_size + 4 * hidden_size))  # Glorot uniform, as TF
        nn.init.uniform_(self.kernel, -bound, bound)

    def _engine_order(self, t: Tensor) -> Tensor:
        H = self.hidden_size
        return torch.cat([t[..., b * H : (b + 1) * H] for b in self.TF_TO_ENGINE], -1)

    def input_projection(self, x: Tensor) -> Tensor:
        return self._engine_order(x @ self.kernel[: self.input_size] + self.bias)

    def recurrent_matrix(self) -> Tensor:
        return self._engine_order(self.kernel[self.input_size :]).t()


class PeepholeLSTM(LSTMEngine):
    """LSTM with peephole connections (Gers & Schmidhuber 2000) as TF's LSTMCell(use_peepholes=True): the input
    and forget gates see c_{t-1}, the output gate sees c_t; optional `cell_clip` bounds the cell."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        forget_bias: float = 1.0,
        cell_clip: Optional[float] = None,
        jit: Union[bool, str] = "auto",
    ):
        super().__init__(
            input_size, hidden_size, Structure(peepholes=True), forget_bias=forget_bias, cell_clip=cell_clip, jit=jit
        )


class LSTMP(LSTMEngine):
    """LSTM with a recurrent projection layer (Sak et al. 2014; torch's LSTM(proj_size=...), TF's num_proj):
    h_t = P (o * tanh(c_t)), [proj_size], fed back and output; optional `proj_clip`. With forget_bias=0 and no
    clip it equals torch.nn.LSTM(proj_size=...) (tests)."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        proj_size: int = 64,
        forget_bias: float = 1.0,
        proj_clip: Optional[float] = None,
        jit: Union[bool, str] = "auto",
    ):
        super().__init__(
            input_size, hidden_size, forget_bias=forget_bias, proj_size=proj_size, proj_clip=proj_clip, jit=jit
        )


class LayerNormLSTM(LSTMEngine):
    """LSTM with layer normalisation (Ba et al. 2016) as TF's LayerNormBasicLSTMCell: each gate block's
    pre-activation and the new cell are normalised, each with its own gain and shift.

    `bias` (default true; TF's cell has none, `cell.bias=false` for its exact equations): a bias in W x + b
    before the normalisation. Without it, a step whose input and state are exactly zero — the blank rows at the
    top of every MNIST digit, from the zero initial state — hands layer norm a constant vector, where its
    Jacobian is scaled by 1/sqrt(eps) = 316; a few such steps in a row overflow the gradient: on row-by-row
    smnist5k the first update's gradient was inf (tests/test_cells.py). The bias makes the vector non-constant."""

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        forget_bias: float = 1.0,
        bias: bool = True,
        jit: Union[bool, str] = "auto",
    ):
        super().__init__(
            input_size,
            hidden_size,
            Structure(layer_norm=True),
            forget_bias=forget_bias,
            jit=jit,
            bias=a_bool("bias", bias),
        )


class CIFGLSTM(LSTMEngine):
    """Coupled input and forget gate: f = 1 - i (no forget-gate weights): one gate decides how much of the cell
    is replaced. Greff et al. found it as good as the vanilla LSTM with fewer parameters."""

    def __init__(self, input_size: int, hidden_size: int = 128, jit: Union[bool, str] = "auto"):
        super().__init__(input_size, hidden_size, Structure(forget_gate=FORGET_COUPLED), jit=jit)
