"""xLSTM's matrix-memory LSTM, mLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", section 2.3 and
appendix; the block of its Figure 10). Per head, with head size d:

    q, k, v   = W_q x + b_q,  (W_k x + b_k) / sqrt(d),  W_v x + b_v
    i~, f~    = scalar gate pre-activations;  i = exp(i~),  f = sigmoid(f~)
    C_t = f_t C_{t-1} + i_t v_t k_t^T                  (d x d matrix memory: a covariance update)
    n_t = f_t n_{t-1} + i_t k_t                        (normaliser)
    h~_t = C_t q_t / max(|n_t^T q_t|, 1),   h_t = o_t * h~_t

Exponential input gates overflow, so the stored state is stabilised by m_t = max(log f_t + m_{t-1}, i~_t): the
cell keeps C_t exp(-m_t) and n_t exp(-m_t), updated with i' = exp(i~_t - m_t), f' = exp(log f_t + m_{t-1} - m_t),
and divides by max(|n_t^T q_t|, exp(-m_t)) instead: the same h, with every exp of a non-positive number. The
state (C, n, m) is ([B, heads, d, d], [B, heads, d], [B, heads]); no state = zeros for all three.

Parallel form (appendix): within a chunk of L steps, with F_t = sum_{j<=t} log f_j,
    log D_ts = F_t - F_s + i~_s  (s <= t),   log D_t0 = F_t + m_0 (the carried state),   m_t = max_s log D_ts,
    h~_t = (sum_s e^{log D_ts - m_t} (q_t.k_s) v_s + e^{log D_t0 - m_t} C_0 q_t) / max(|same with n_0, k_s|, e^{-m_t})
which is the recurrence unrolled (m_t too: max distributes over the sum); chunks of `chunk` steps are run one
after the other carrying (C, n, m), the chunkwise form, so memory is O(T chunk) instead of O(T^2).

`cell.block` (default true): the paper's mLSTM block (pre up-projection): u -> LayerNorm -> up-projection by
proj_factor into two branches; the left one through a causal convolution and SiLU gives q and k, v comes from
before the convolution (head-wise block-diagonal projections of qkv_blocksize), the gates i~, f~ from [q, k, v];
then a per-head norm, a learnable skip from the convolution, the output gate silu(right branch), the
down-projection and the residual. Initialisation as in the paper's code: forget gate biases linspace(3, 6) over
the heads, input gate biases N(0, 0.1), gate weights zero, projections N(0, 2/(5 dim)), the down-projection
N(0, 2/sqrt(dim)) in std. block=false: the bare mLSTM layer of the equations above, with o = sigmoid(W_o x + b_o),
input_size -> hidden_size.

`cell.scan`: parallel (the chunkwise form), sequential (the step loop, always used for one step), or auto: the
chunkwise form on every device. Unlike the diagonal cells, the step form is the slower one also on CPU: it builds
a d x d matrix per head and step for autograd (default block, B=128, T=28, forward + backward on 2 busy cores:
0.68 s chunkwise, 3.6 s stepped).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import a_bool, positive_int
from src.models.cells.scan import CausalConv, chunk_setting, scan_setting

MState = tuple[Tensor, Tensor, Tensor]


def zero_state(q: Tensor) -> MState:
    B, _, NH, d = q.shape
    return q.new_zeros(B, NH, d, d), q.new_zeros(B, NH, d), q.new_zeros(B, NH)


def mlstm_steps(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor, state: MState):
    """The stabilised recurrence step by step. q, k, v [B, T, NH, d] (k already scaled), gates [B, T, NH]."""
    C, n, m = state
    log_f = F.logsigmoid(f_pre)
    outputs = []
    for t in range(q.shape[1]):
        m_new = torch.maximum(log_f[:, t] + m, i_pre[:, t])
        i, f = torch.exp(i_pre[:, t] - m_new), torch.exp(log_f[:, t] + m - m_new)
        C = f[..., None, None] * C + i[..., None, None] * (v[:, t, ..., :, None] * k[:, t, ..., None, :])
        n = f[..., None] * n + i[..., None] * k[:, t]
        q_t = q[:, t]
        numerator = (C @ q_t[..., None])[..., 0]
        denominator = torch.maximum((n * q_t).sum(-1).abs(), torch.exp(-m_new))
        outputs.append(numerator / denominator[..., None])
        m = m_new
    return torch.stack(outputs, 1), (C, n, m)


def mlstm_chunk(q: Tensor, k: Tensor, v: Tensor, i_pre: Tensor, f_pre: Tensor, state: MState):
    """The parallel form over one chunk, from and to a carried state (the module docstring)."""
    C0, n0, m0 = state
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [B, NH, L, d]
    i_pre, log_f = i_pre.transpose(1, 2), F.logsigmoid(f_pre).transpose(1, 2)  # [B, NH, L]
    L = q.shape[2]
    F_t = log_f.cumsum(-1)
    causal = torch.ones(L, L, dtype=torch.bool, device=q.device).tril()
    log_D = torch.where(causal, F_t[..., :, None] - F_t[..., None, :] + i_pre[..., None, :], -math.inf)
    log_init = F_t + m0[..., None]  # [B, NH, L]
    m = torch.maximum(log_D.amax(-1), log_init)
    D = torch.exp(log_D - m[..., None])
    w0 = torch.exp(log_init - m)
    S = (q @ k.transpose(-1, -2)) * D
    numerator = S @ v + w0[..., None] * (q @ C0.transpose(-1, -2))
    denominator = torch.maximum((S.sum(-1) + w0 * (q @ n0[..., None])[..., 0]).abs(), torch.exp(-m))
    h = (numerator / denominator[..., None]).transpose(1, 2)  # [B, L, NH, d]
    last = D[..., -1, :]  # the weights of every step in the final state, [B, NH, L]
    C = (v * last[..., None]).transpose(-1, -2) @ k + w0[..., -1, None, None] * C0
    n = (last[..., None] * k).sum(-2) + w0[..., -1, None] * n0
    return h, (C, n, m[..., -1])


def mlstm(q, k, v, i_pre, f_pre, state: MState | None, scan: str, chunk: int):
    state = zero_state(q) if state is None else tuple(state)
    if q.shape[1] == 1 or scan == "sequential":  # auto: the parallel form on every device (see MLSTM)
        return mlstm_steps(q, k, v, i_pre, f_pre, state)
    outputs = []
    for s in range(0, q.shape[1], chunk):
        part = slice(s, s + chunk)
        h, state = mlstm_chunk(q[:, part], k[:, part], v[:, part], i_pre[:, part], f_pre[:, part], state)
        outputs.append(h)
    return torch.cat(outputs, 1), state


class HeadwiseLinear(nn.Module):
    """A block-diagonal linear map: `size` features in blocks of `blocksize`, each block its own square matrix
    (the xLSTM block's q, k, v projections)."""

    def __init__(self, size: int, blocksize: int, std: float, bias: bool = True):
        super().__init__()
        self.blocks, self.blocksize = size // blocksize, blocksize
        self.weight = nn.Parameter(torch.randn(self.blocks, blocksize, blocksize) * std)
        self.bias = nn.Parameter(torch.zeros(size)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        shaped = x.unflatten(-1, (self.blocks, self.blocksize))
        y = torch.einsum("...bi,boi->...bo", shaped, self.weight).flatten(-2)
        return y if self.bias is None else y + self.bias


def init_gates(i_gate: nn.Linear, f_gate: nn.Linear) -> None:
    with torch.no_grad():
        for gate in (i_gate, f_gate):
            gate.weight.zero_()
        nn.init.normal_(i_gate.bias, std=0.1)
        f_gate.bias.copy_(torch.linspace(3.0, 6.0, len(f_gate.bias)))


def small_init_std(dim: int) -> float:
    return math.sqrt(2 / (5 * dim))


class MLSTM(nn.Module):
    cuda_graphs = False  # CUDA graph capture (src/models/graphs.py) not yet tried on a GPU with this cell: eager

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_heads: int = 4,
        proj_factor: int = 2,
        conv_kernel: int = 4,
        qkv_blocksize: int = 4,
        block: bool = True,
        scan: str = "auto",
        chunk: int = 64,
    ):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        self.num_heads = positive_int("num_heads", num_heads)
        for key, value in (
            ("proj_factor", proj_factor),
            ("conv_kernel", conv_kernel),
            ("qkv_blocksize", qkv_blocksize),
        ):
            positive_int(key, value)
        self.block = a_bool("block", block)
        self.scan, self.chunk = scan_setting(scan), chunk_setting(chunk)
        inner = proj_factor * hidden_size if block else hidden_size
        if inner % num_heads:
            raise ConfigError(
                f"cell.num_heads={num_heads} must divide the memory's width {inner} (cell.hidden_size"
                f"{' x cell.proj_factor' if block else ''}); choose a divisor"
            )
        if block and inner % qkv_blocksize:
            raise ConfigError(
                f"cell.qkv_blocksize={qkv_blocksize} must divide the block's inner width {inner} "
                f"(cell.hidden_size x cell.proj_factor)"
            )
        self.inner, self.head_size = inner, inner // num_heads
        if block:
            self.embed = nn.Linear(input_size, hidden_size) if input_size != hidden_size else None
            self.norm = nn.LayerNorm(hidden_size)
            self.up = nn.Linear(hidden_size, 2 * inner)
            nn.init.normal_(self.up.weight, std=small_init_std(hidden_size))
            nn.init.zeros_(self.up.bias)
            self.conv = CausalConv(inner, conv_kernel)
            self.q, self.k, self.v = (HeadwiseLinear(inner, qkv_blocksize, small_init_std(inner)) for _ in range(3))
            self.i_gate, self.f_gate = nn.Linear(3 * inner, num_heads), nn.Linear(3 * inner, num_heads)
            self.out_norm = nn.GroupNorm(num_heads, inner, affine=False)
            self.out_weight = nn.Parameter(torch.ones(inner))  # the per-head norm's scale (no bias, as the paper)
            self.skip = nn.Parameter(torch.ones(inner))
            self.down = nn.Linear(inner, hidden_size)
            nn.init.normal_(self.down.weight, std=2 / math.sqrt(hidden_size))
            nn.init.zeros_(self.down.bias)
        else:
            self.qkvo = nn.Linear(input_size, 4 * inner)
            self.i_gate, self.f_gate = nn.Linear(input_size, num_heads), nn.Linear(input_size, num_heads)
        init_gates(self.i_gate, self.f_gate)

    def heads(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_size))

    def memory(self, q, k, v, i_pre, f_pre, state):
        """The mLSTM over [B, T, inner] q, k, v -> h~ [B, T, inner] and the new (C, n, m)."""
        dtype = torch.promote_types(q.dtype, torch.float32)
        q, k, v = (self.heads(t.to(dtype)) for t in (q, k, v))
        h, state = mlstm(
            q,
            k / math.sqrt(self.head_size),
            v,
            i_pre.to(dtype),
            f_pre.to(dtype),
            None if state is None else tuple(s.to(dtype) for s in state),
            self.scan,
            self.chunk,
        )
        return h.flatten(-2), state

    def forward(self, x: Tensor, state=None):
        if not self.block:
            q, k, v, o = self.qkvo(x).chunk(4, -1)
            h, state = self.memory(q, k, v, self.i_gate(x), self.f_gate(x), state)
            return torch.sigmoid(o) * h.to(x.dtype), state
        cell_state, tail = (None, None) if state is None else (state[:3], state[3])
        u = x if self.embed is None else self.embed(x)
        left, z = self.up(self.norm(u)).chunk(2, -1)
        conv, tail = self.conv(left, tail)
        conv = F.silu(conv)
        q, k, v = self.q(conv), self.k(conv), self.v(left)
        qkv = torch.cat([q, k, v], -1)
        h, (C, n, m) = self.memory(q, k, v, self.i_gate(qkv), self.f_gate(qkv), cell_state)
        h = self.out_norm(h.to(x.dtype).flatten(0, 1)).unflatten(0, h.shape[:2]) * self.out_weight
        h = (h + self.skip * conv) * F.silu(z)
        return u + self.down(h), (C, n, m, tail)

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, head_size={self.head_size}, "
            f"block={self.block}"
        )


# -- sLSTM -----------------------------------------------------------------------------------------------------------
def powerlaw_forget_bias(head_size: int, block_index: int = 0, num_blocks: int = 1) -> Tensor:
    """The paper's code's forget gate biases within each head ('powerlaw_blockdependent'): 5 - 12 (j / (d-1))^p, from
    +5 (remember) down to -7 (forget), a spread of time scales, with p = 0.3 in the first block of a stack rising to
    1.6 in the last (p = 0.3 + 1.3 block_index / (num_blocks - 1)): deeper blocks start with more units that remember.
    With p = 0.3 in every layer a second layer keeps barely a unit per head for more than a step or two, and a
    summary read at a sequence's end holds little of it (at depth 2, bi, smnist5k: chance for an epoch; docs/cells.md)."""
    j = torch.arange(head_size, dtype=torch.float32) / max(head_size - 1, 1)
    p = 0.3 + 1.3 * (block_index / (num_blocks - 1) if num_blocks > 1 else 0.0)
    return 5.0 - 12.0 * j**p


def slstm_steps(wx: Tensor, recurrent: Tensor, bias: Tensor, state: tuple[Tensor, Tensor, Tensor, Tensor]):
    """sLSTM's stabilised recurrence. wx [B, T, 4, H]: the input parts of i~, f~, z~, o~; recurrent [NH, 4, d, d]
    (block-diagonal: each head's h feeds only its own gates); bias [4, H]. State (h, c, n, m), each [B, H], with
    c and n stored as c e^{-m}, n e^{-m}; a unit with n = 0 (nothing seen yet) starts its stabiliser at i~."""
    h, c, n, m = state
    NH, d = recurrent.shape[0], recurrent.shape[-1]
    outputs = []
    for t in range(wx.shape[1]):
        rh = torch.einsum("bnk,ngjk->bgnj", h.unflatten(-1, (NH, d)), recurrent).flatten(-2)  # [B, 4, H]
        i_raw, f_raw, z_raw, o_raw = (wx[:, t] + rh + bias).unbind(1)
        log_f_m = m + F.logsigmoid(f_raw)
        m_new = torch.where(n == 0, i_raw, torch.maximum(i_raw, log_f_m))
        # log f + m - m_new <= 0 except where n = 0 (m_new = i~), where it multiplies c = n = 0 and could overflow
        # into inf * 0: clamped there as the paper's code does, unchanged everywhere else.
        i, f = torch.exp(i_raw - m_new), torch.exp(torch.clamp(log_f_m - m_new, max=0.0))
        c = f * c + i * torch.tanh(z_raw)
        n = f * n + i
        h = torch.sigmoid(o_raw) * c / n
        m = m_new
        outputs.append(h)
    return torch.stack(outputs, 1), (h, c, n, m)


class SLSTM(nn.Module):
    """xLSTM's scalar-memory LSTM, sLSTM (Beck et al. 2024, section 2.2; the block of its Figure 9):

        c_t = f_t c_{t-1} + i_t z_t,   n_t = f_t n_{t-1} + i_t,   h_t = o_t c_t / n_t
        z = tanh(z~), i = exp(i~), f = sigmoid(f~), o = sigmoid(o~),  each ~ = W x_t + R h_{t-1} + b

    with R block-diagonal over `num_heads` heads (memory mixing within a head) and the same stabiliser as mLSTM
    (m_t = max(log f_t + m_{t-1}, i~_t); c and n kept scaled by e^{-m_t}; h unchanged). The recurrence is
    nonlinear in h (through R and tanh), so it has no parallel form: it always runs step by step.

    `cell.block` (default true): the paper's post up-projection block: u -> LayerNorm -> causal conv + SiLU feeding
    i~ and f~ (z~ and o~ read the normalised input directly), head-wise block-diagonal input maps, the sLSTM, a
    per-head norm, + u; then LayerNorm -> gated feed-forward (GELU gate, ffn_factor x width) -> + residual.
    Initialisation as the paper's code: recurrent weights zero, forget biases spread per head from +5 to -7
    (powerlaw_forget_bias, by the layer's place in the stack: `block_index` of `num_blocks`, which the stack
    passes), other biases zero. block=false: the bare sLSTM, W full, input_size -> hidden_size.
    State: (h, c, n, m) [B, H] each, and in the block the convolution's tail.
    """

    cuda_graphs = False  # CUDA graph capture (src/models/graphs.py) not yet tried on a GPU with this cell: eager

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_heads: int = 4,
        conv_kernel: int = 4,
        ffn_factor: float = 1.3,
        block: bool = True,
        block_index: int = 0,
        num_blocks: int = 1,
    ):
        super().__init__()
        H = self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        self.num_heads = positive_int("num_heads", num_heads)
        if H % num_heads:
            raise ConfigError(f"cell.num_heads={num_heads} must divide cell.hidden_size={H}; choose a divisor")
        positive_int("conv_kernel", conv_kernel)
        if isinstance(ffn_factor, bool) or not isinstance(ffn_factor, (int, float)) or not ffn_factor > 0:
            raise ConfigError(
                f"cell.ffn_factor={ffn_factor!r} must be a positive number (the feed-forward's width "
                f"over hidden_size; the paper's 4/3, its code's 1.3)"
            )
        self.block = a_bool("block", block)
        d = self.head_size = H // num_heads
        if block:
            self.embed = nn.Linear(input_size, H) if input_size != H else None
            self.norm = nn.LayerNorm(H)
            self.conv = CausalConv(H, conv_kernel)
            self.gates_x = nn.ModuleList(HeadwiseLinear(H, d, small_init_std(H), bias=False) for _ in range(4))
            self.out_norm = nn.GroupNorm(num_heads, H, affine=False)
            self.out_weight = nn.Parameter(torch.ones(H))
            self.ffn_norm = nn.LayerNorm(H)
            ffn = self.ffn_size = max(1, round(ffn_factor * H))
            self.ffn_up = nn.Linear(H, 2 * ffn, bias=False)
            self.ffn_down = nn.Linear(ffn, H, bias=False)
            nn.init.normal_(self.ffn_up.weight, std=small_init_std(H))
            nn.init.normal_(self.ffn_down.weight, std=2 / math.sqrt(H))
        else:
            self.weight_ih = nn.Linear(input_size, 4 * H, bias=False)
        self.recurrent = nn.Parameter(torch.zeros(num_heads, 4, d, d))
        self.bias = nn.Parameter(torch.zeros(4, H))
        with torch.no_grad():
            self.bias[1] = powerlaw_forget_bias(d, block_index, num_blocks).repeat(num_heads)

    def zero_state(self, x: Tensor):
        zeros = x.new_zeros(x.shape[0], self.hidden_size)
        return zeros, zeros, zeros, zeros

    def forward(self, x: Tensor, state=None):
        cell_state, tail = (None, None) if state is None else (tuple(state[:4]), state[4] if self.block else None)
        if not self.block:
            wx = self.weight_ih(x).unflatten(-1, (4, self.hidden_size))
            h, cell_state = slstm_steps(wx, self.recurrent, self.bias, cell_state or self.zero_state(x))
            return h, cell_state
        u = x if self.embed is None else self.embed(x)
        v = self.norm(u)
        conv, tail = self.conv(v, tail)
        conv = F.silu(conv)
        wx = torch.stack([gate(src) for gate, src in zip(self.gates_x, (conv, conv, v, v))], 2)
        h, cell_state = slstm_steps(wx, self.recurrent, self.bias, cell_state or self.zero_state(x))
        u = u + self.out_norm(h.flatten(0, 1)).unflatten(0, h.shape[:2]) * self.out_weight
        gate, up = self.ffn_up(self.ffn_norm(u)).chunk(2, -1)
        return u + self.ffn_down(F.gelu(gate) * up), (*cell_state, tail)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, block={self.block}"
