"""RG-LRU, the Real-Gated Linear Recurrent Unit, and Hawk's residual block around it (De et al. 2024, "Griffin:
Mixing Gated Linear Recurrences with Local Attention for Efficient Language Models", section 2.4, Figure 2):

    r_t = sigmoid(W_a x_t + b_a)                  recurrence gate
    i_t = sigmoid(W_x x_t + b_x)                  input gate
    a_t = a^(c r_t),  a = sigmoid(Lambda), c = 8  computed as log a_t = -c r_t softplus(-Lambda)
    h_t = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * x_t)

a diagonal recurrence with input-dependent decay, so it runs as the chunked parallel scan of
src/models/cells/scan.py or step by step (`cell.scan`, `cell.chunk`). As in the paper's code (recurrentgemma):
W_a and W_x are block-diagonal over `num_heads` blocks (N(0, 1/block) weights, zero biases); at a sequence's first
step (no state given) the input is not scaled by sqrt(1 - a_t^2); the derivative of that square root is bounded
(by 1000) where 1 - a_t^2 nears zero; and a = sigmoid(Lambda) starts on the ring [a_min, a_max], uniform in area
(a^2 uniform). The paper's text puts a^c, its code a itself, in [0.9, 0.999]; the code's is the default here
(a^c then lies in [0.43, 0.992]).

`cell.block` (default true), Hawk's residual block: u -> RMSNorm -> [GELU(W_y u)] * [RG-LRU(conv(W_x u))] -> W_out
-> + u; then u -> RMSNorm -> gated MLP (GELU(W_1 u) * W_2 u, width mlp_factor x hidden_size) -> W_3 -> + u. The
RNN branch's width is rnn_width (null: 4/3 x hidden_size, rounded up to a multiple of num_heads); the temporal
convolution has width conv_kernel. An input of another width than hidden_size is first mapped to it. block=false:
a linear map input_size -> hidden_size, then the bare RG-LRU. The state: h [B, width] (and in the block the
convolution's tail [B, conv_kernel-1, rnn_width]); None means a sequence start (see above).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import a_bool, a_number, positive_int
from src.models.cells.scan import CausalConv, chunk_setting, recurrence, scan_setting

C = 8.0  # the paper's constant c
MAX_SQRT_GRADIENT = 1000.0


class BoundedSqrt(torch.autograd.Function):
    """sqrt whose derivative 1/(2 sqrt(x)) is capped at MAX_SQRT_GRADIENT (as the paper's code does), so that
    1 - a_t^2 near zero cannot blow the gradient up."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1.0 / MAX_SQRT_GRADIENT**2))


class BlockDiagonal(nn.Module):
    def __init__(self, width: int, blocks: int):
        super().__init__()
        size = width // blocks
        self.blocks, self.size = blocks, size
        self.weight = nn.Parameter(torch.randn(blocks, size, size) / math.sqrt(size))  # [block, in, out]
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("...bi,bio->...bo", x.unflatten(-1, (self.blocks, self.size)), self.weight)
        return y.flatten(-2) + self.bias


class RGLRUCore(nn.Module):
    """The recurrence (the module docstring) over [B, T, width]."""

    def __init__(self, width: int, num_heads: int, a_min: float, a_max: float, scan: str, chunk: int):
        super().__init__()
        self.scan, self.chunk = scan, chunk
        self.a_gate, self.input_gate = BlockDiagonal(width, num_heads), BlockDiagonal(width, num_heads)
        # softplus(-Lambda) = -log a with a^2 ~ U[a_min^2, a_max^2]; stored as Lambda itself.
        a = torch.sqrt(torch.empty(width).uniform_(a_min**2, a_max**2))
        self.Lambda = nn.Parameter(torch.log(a / (1 - a)))

    def forward(self, x: Tensor, h0: Tensor | None) -> tuple[Tensor, Tensor]:
        dtype = torch.promote_types(x.dtype, torch.float32)
        xs = x.to(dtype)
        r = torch.sigmoid(self.a_gate(xs))
        i = torch.sigmoid(self.input_gate(xs))
        log_a = -C * r * F.softplus(-self.Lambda.to(dtype))
        a = torch.exp(log_a)
        scale = BoundedSqrt.apply(1 - torch.exp(2 * log_a))
        if h0 is None:  # a sequence's first step: the input enters unscaled
            scale = torch.cat([torch.ones_like(scale[:, :1]), scale[:, 1:]], 1)
        h = recurrence(self.scan, self.chunk, a, scale * i * xs, None if h0 is None else h0.to(dtype))
        return h.to(x.dtype), h[:, -1].to(x.dtype)


class RGLRU(nn.Module):
    cuda_graphs = False  # CUDA graph capture (src/models/graphs.py) not yet tried on a GPU with this cell: eager

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_heads: int = 4,
        rnn_width: int | None = None,
        conv_kernel: int = 4,
        mlp_factor: int = 3,
        a_min: float = 0.9,
        a_max: float = 0.999,
        block: bool = True,
        scan: str = "auto",
        chunk: int = 256,
    ):
        super().__init__()
        H = self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        for key, value in (("num_heads", num_heads), ("conv_kernel", conv_kernel), ("mlp_factor", mlp_factor)):
            positive_int(key, value)
        a_min, a_max = a_number("a_min", a_min), a_number("a_max", a_max)
        if not 0 < a_min < a_max < 1:
            raise ConfigError(
                f"cell.a_min={a_min}, cell.a_max={a_max}: need 0 < a_min < a_max < 1 (the ring "
                f"a = sigmoid(Lambda) starts on; the paper's: 0.9 and 0.999)"
            )
        self.block = a_bool("block", block)
        scan, chunk = scan_setting(scan), chunk_setting(chunk)
        if rnn_width is None:
            rnn_width = num_heads * math.ceil(4 * H / 3 / num_heads) if block else H
        positive_int("rnn_width", rnn_width)
        width = rnn_width if block else H
        if width % num_heads:
            raise ConfigError(
                f"cell.num_heads={num_heads} must divide the recurrence's width {width} "
                f"({'cell.rnn_width' if block else 'cell.hidden_size'}); choose a divisor"
            )
        self.width = width
        self.embed = nn.Linear(input_size, H) if (input_size != H or not block) else None
        self.rglru = RGLRUCore(width, num_heads, a_min, a_max, scan, chunk)
        if block:
            self.norm = nn.RMSNorm(H, eps=1e-6)
            self.linear_y, self.linear_x = nn.Linear(H, width), nn.Linear(H, width)
            self.conv = CausalConv(width, conv_kernel)
            with torch.no_grad():  # the paper's code: N(0, 0.01 / width) taps, zero bias
                self.conv.weight.normal_(std=math.sqrt(0.01 / conv_kernel))
                self.conv.bias.zero_()
            self.linear_out = nn.Linear(width, H)
            self.mlp_norm = nn.RMSNorm(H, eps=1e-6)
            self.mlp_up = nn.Linear(H, 2 * mlp_factor * H)
            self.mlp_down = nn.Linear(mlp_factor * H, H)

    def forward(self, x: Tensor, state=None):
        if not self.block:
            return self.rglru(self.embed(x), state)
        h0, tail = (None, None) if state is None else state
        u = x if self.embed is None else self.embed(x)
        v = self.norm(u)
        y = F.gelu(self.linear_y(v))
        conv, tail = self.conv(self.linear_x(v), tail)
        h, h_last = self.rglru(conv, h0)
        u = u + self.linear_out(h * y)
        gate, up = self.mlp_up(self.mlp_norm(u)).chunk(2, -1)
        return u + self.mlp_down(F.gelu(gate) * up), (h_last, tail)

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, width={self.width}, block={self.block}"
