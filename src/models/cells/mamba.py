"""Mamba's selective state space block (Gu and Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
State Spaces", its Figure 3 and Algorithm 2): a diagonal linear recurrence whose step size and input/output maps
depend on the input, inside a gated block with a short causal convolution.

    x, z   = in_proj(u)                                  two branches of E*D channels each (E = expand)
    x      = silu(causal_depthwise_conv(x))              kernel conv_kernel, over time
    Delta  = softplus(dt_proj(W_dt x)),  B = W_B x,  C = W_C x      per step: Delta [E*D], B and C [N]
    h_t    = exp(Delta_t A) * h_{t-1} + Delta_t B_t x_t    h: [E*D, N];  A = -exp(A_log) diagonal, real
    y_t    = h_t C_t + D_skip * x_t
    out    = out_proj(y * silu(z))

Initialisation as published: A = -(1, 2, ..., N) for every channel (A_log = log of it, S4D-real), D_skip = 1,
Delta's bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max] (floored at dt_init_floor), dt_proj's
weight uniform +-dt_rank^-1/2; dt_rank = ceil(D/16) by default; in_proj and out_proj without bias, the
convolution with one.

`cell.block` (default true): Mamba's residual layer, u + mixer(RMSNorm(u)), with an input of another width than
hidden_size first mapped to it by a linear layer; block=false: the mixer alone, input_size -> hidden_size.

The state is (h [B, E*D, N], the convolution's last conv_kernel-1 inputs [B, conv_kernel-1, E*D]). `cell.scan`:
the chunked parallel scan of src/models/cells/scan.py (it materialises h for every step, [B, T, E*D, N]: `chunk`
bounds only the scan's own intermediates) or the step loop. The recurrence runs in float32 at least.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import a_bool, a_number, positive_int
from src.models.cells.scan import CausalConv, chunk_setting, recurrence, scan_setting


def inverse_softplus(y: Tensor) -> Tensor:
    """x with softplus(x) = y, for y > 0: log(exp(y) - 1) = y + log(1 - exp(-y))."""
    return y + torch.log(-torch.expm1(-y))


class MambaMixer(nn.Module):
    """The selective SSM with its projections, convolution and gate (the module docstring), input_size ->
    output_size."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        model_size: int,
        state_size: int,
        expand: int,
        conv_kernel: int,
        dt_rank: int,
        dt_min: float,
        dt_max: float,
        dt_init_floor: float,
        scan: str,
        chunk: int,
    ):
        super().__init__()
        inner = expand * model_size
        self.inner, self.state_size, self.dt_rank = inner, state_size, dt_rank
        self.scan, self.chunk = scan, chunk
        self.in_proj = nn.Linear(input_size, 2 * inner, bias=False)
        self.conv = CausalConv(inner, conv_kernel)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * state_size, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner)
        nn.init.uniform_(self.dt_proj.weight, -(dt_rank**-0.5), dt_rank**-0.5)
        dt = torch.exp(torch.rand(inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        with torch.no_grad():
            self.dt_proj.bias.copy_(inverse_softplus(dt.clamp(min=dt_init_floor)))
        self.A_log = nn.Parameter(torch.log(torch.arange(1, state_size + 1, dtype=torch.float32)).repeat(inner, 1))
        self.D = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, output_size, bias=False)

    def forward(self, u: Tensor, state: tuple[Tensor, Tensor] | None):
        h0, tail = (None, None) if state is None else state
        x, z = self.in_proj(u).chunk(2, -1)
        x, tail = self.conv(x, tail)
        x = F.silu(x)
        delta, B, C = self.x_proj(x).split([self.dt_rank, self.state_size, self.state_size], -1)
        dtype = torch.promote_types(x.dtype, torch.float32)  # the recurrence in float32 at least
        delta = F.softplus(self.dt_proj(delta)).to(dtype)  # [B, T, E*D]
        xs, B, C = x.to(dtype), B.to(dtype), C.to(dtype)
        A = -torch.exp(self.A_log.to(dtype))  # [E*D, N]
        a = torch.exp(delta[..., None] * A)  # [B, T, E*D, N]
        b = (delta * xs)[..., None] * B[:, :, None, :]
        h = recurrence(self.scan, self.chunk, a, b, None if h0 is None else h0.to(dtype))
        y = (h @ C[..., None])[..., 0] + self.D.to(dtype) * xs
        y = y.to(u.dtype) * F.silu(z)
        return self.out_proj(y), (h[:, -1].to(u.dtype), tail)


class Mamba(nn.Module):
    cuda_graphs = False  # CUDA graph capture (src/models/graphs.py) not yet tried on a GPU with this cell: eager

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        state_size: int = 16,
        expand: int = 2,
        conv_kernel: int = 4,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        block: bool = True,
        scan: str = "auto",
        chunk: int = 64,
    ):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        for key, value in (("state_size", state_size), ("expand", expand), ("conv_kernel", conv_kernel)):
            positive_int(key, value)
        if dt_rank == "auto":
            dt_rank = math.ceil(hidden_size / 16)
        elif isinstance(dt_rank, bool) or not isinstance(dt_rank, int) or dt_rank < 1:
            raise ConfigError(f"cell.dt_rank={dt_rank!r} must be a positive integer or auto (ceil(hidden_size/16))")
        dt_min, dt_max = a_number("dt_min", dt_min), a_number("dt_max", dt_max)
        if not 0 < dt_min <= dt_max:
            raise ConfigError(
                f"cell.dt_min={dt_min}, cell.dt_max={dt_max}: need 0 < dt_min <= dt_max (the range "
                f"Delta starts in, log-uniformly; the paper's: 0.001 and 0.1)"
            )
        dt_init_floor = a_number("dt_init_floor", dt_init_floor)
        if not dt_init_floor > 0:
            raise ConfigError(f"cell.dt_init_floor={dt_init_floor} must be positive (the paper's: 1e-4)")
        self.block = a_bool("block", block)
        scan, chunk = scan_setting(scan), chunk_setting(chunk)
        self.embed = nn.Linear(input_size, hidden_size) if block and input_size != hidden_size else None
        self.mixer = MambaMixer(
            hidden_size if block else input_size,
            hidden_size,
            hidden_size,
            state_size,
            expand,
            conv_kernel,
            dt_rank,
            dt_min,
            dt_max,
            dt_init_floor,
            scan,
            chunk,
        )
        self.norm = nn.RMSNorm(hidden_size, eps=1e-5) if block else None

    def forward(self, x: Tensor, state: tuple[Tensor, Tensor] | None = None):
        if not self.block:
            return self.mixer(x, state)
        u = x if self.embed is None else self.embed(x)
        y, state = self.mixer(self.norm(u), state)
        return u + y, state

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, state_size={self.mixer.state_size}, inner={self.mixer.inner}, "
            f"block={self.block}"
        )
