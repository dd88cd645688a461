"""LRU, the Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks for Long
Sequences"): a linear recurrence with a complex diagonal state matrix, made stable and trainable by its
parametrisation, and the nonlinearity moved out of the recurrence into the block around it.

    lambda = exp(-exp(nu_log) + i exp(theta_log))             |lambda| < 1 for any parameters (stable)
    x_t = lambda * x_{t-1} + gamma * (B u_t)                  x: N complex numbers; gamma = exp(gamma_log)
    y_t = Re(C x_t) + D u_t                                   B: N x H complex, C: H x N complex, D: H real

Initialisation as published: |lambda| uniform on the ring r_min..r_max (nu_log from u1 ~ U[0, 1] through
-1/2 log(u1 (r_max^2 - r_min^2) + r_min^2)), its phase uniform in [0, max_phase], gamma_log = log sqrt(1 - |lambda|^2)
(the normalisation that keeps the state's scale at one for white-noise input), B and C complex Gaussian with
variance 1/(2H) (B) and 1/N (C) per part, D ~ N(0, 1).

`cell.block` (default true): the paper's layer (its Figure 1 and appendix): u -> LayerNorm -> LRU -> GELU -> GLU
(W1 v * sigmoid(W2 v)) -> + u, the residual; an input of another width than hidden_size is first mapped to it by
a linear layer. block=false: the bare LRU from input_size to hidden_size (D then a full H x input_size matrix
when the two sizes differ).

The state is x_T, stored as its real and imaginary parts [B, N, 2] (real tensors travel through every part of
the suite). `cell.scan`: the chunked parallel scan (src/models/cells/scan.py) or the step loop; both compute the
same recurrence, in complex float32 (complex float64 for float64 inputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import a_bool, a_number, positive_int
from src.models.cells.scan import chunk_setting, recurrence, scan_setting


def complex_dtype(x: Tensor) -> torch.dtype:
    return torch.complex128 if x.dtype == torch.float64 else torch.complex64


class LRUCore(nn.Module):
    """The recurrence itself, input_size -> output_size (see the module docstring)."""

    def __init__(
        self,
        input_size: int,
        output_size: int,
        state_size: int,
        r_min: float,
        r_max: float,
        max_phase: float,
        scan: str,
        chunk: int,
    ):
        super().__init__()
        self.scan, self.chunk = scan, chunk
        N, H_in, H_out = state_size, input_size, output_size
        u1, u2 = torch.rand(N), torch.rand(N)
        self.nu_log = nn.Parameter(torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2))
        modulus = torch.exp(-torch.exp(self.nu_log.detach()))
        self.gamma_log = nn.Parameter(torch.log(torch.sqrt(1 - modulus**2)))
        self.B_re = nn.Parameter(torch.randn(N, H_in) / math.sqrt(2 * H_in))
        self.B_im = nn.Parameter(torch.randn(N, H_in) / math.sqrt(2 * H_in))
        self.C_re = nn.Parameter(torch.randn(H_out, N) / math.sqrt(N))
        self.C_im = nn.Parameter(torch.randn(H_out, N) / math.sqrt(N))
        self.D = nn.Parameter(torch.randn(H_out) if H_in == H_out else torch.randn(H_out, H_in) / math.sqrt(H_in))

    def coefficients(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """lambda [N] and gamma * B u_t [B, T, N], complex."""
        cdtype = complex_dtype(u)
        lam = torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)).to(cdtype))
        B = torch.complex(self.B_re, self.B_im).to(cdtype) * torch.exp(self.gamma_log).to(cdtype)[:, None]
        return lam, u.to(cdtype) @ B.T

    def output(self, x: Tensor, u: Tensor) -> Tensor:
        C = torch.complex(self.C_re, self.C_im).to(x.dtype)
        y = (x @ C.T).real
        return y + (u * self.D if self.D.dim() == 1 else u @ self.D.T)

    def forward(self, u: Tensor, state: Tensor | None) -> tuple[Tensor, Tensor]:
        lam, bu = self.coefficients(u)
        x0 = None if state is None else torch.view_as_complex(state.to(u.dtype).contiguous())
        x = recurrence(self.scan, self.chunk, lam.expand_as(bu), bu, x0)
        return self.output(x, u).to(u.dtype), torch.view_as_real(x[:, -1])


class LRU(nn.Module):
    cuda_graphs = False  # CUDA graph capture (src/models/graphs.py) not yet tried on a GPU with this cell: eager

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        state_size: int | None = None,
        r_min: float = 0.9,
        r_max: float = 0.999,
        max_phase: float = 2 * math.pi,
        block: bool = True,
        scan: str = "auto",
        chunk: int = 256,
    ):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        self.state_size = hidden_size if state_size is None else positive_int("state_size", state_size)
        r_min, r_max, max_phase = a_number("r_min", r_min), a_number("r_max", r_max), a_number("max_phase", max_phase)
        if not 0.0 <= r_min < r_max < 1.0:
            raise ConfigError(
                f"cell.r_min={r_min}, cell.r_max={r_max}: need 0 <= r_min < r_max < 1 (the ring the "
                f"eigenvalues' moduli start on; the paper uses 0.9 and 0.999 for long sequences)"
            )
        if not max_phase > 0:
            raise ConfigError(
                f"cell.max_phase={max_phase} must be positive (e.g. 6.283 = 2 pi, or pi/10 for smoother dynamics)"
            )
        self.block = a_bool("block", block)
        scan, chunk = scan_setting(scan), chunk_setting(chunk)
        self.embed = nn.Linear(input_size, hidden_size) if block and input_size != hidden_size else None
        core_in = hidden_size if block else input_size
        self.lru = LRUCore(core_in, hidden_size, self.state_size, r_min, r_max, max_phase, scan, chunk)
        if block:
            self.norm = nn.LayerNorm(hidden_size)
            self.glu = nn.Linear(hidden_size, 2 * hidden_size)

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if not self.block:
            return self.lru(x, state)
        u = x if self.embed is None else self.embed(x)
        y, state = self.lru(self.norm(u), state)
        y = F.gelu(y)
        a, b = self.glu(y).chunk(2, -1)
        return u + a * torch.sigmoid(b), state

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, state_size={self.state_size}, block={self.block}"
