"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): gates that read only x_t, so the
recurrence is linear in h and the whole sequence can be computed with a parallel scan instead of a time loop.

    minGRU:  z = sigmoid(k_z),  h~ = g(k_h),                    h_t = (1 - z) * h_{t-1} + z * h~
    minLSTM: f = sigmoid(k_f), i = sigmoid(k_i), h~ = g(k_h),  h_t = f/(f+i) * h_{t-1} + i/(f+i) * h~
    with [k_*] = W x_t + b  and  g(k) = k + 1/2 for k >= 0, sigmoid(k) below (positive, so it has a logarithm).

Both are h_t = a_t * h_{t-1} + b_t with 0 < a_t < 1, b_t > 0. Written out, h_t = A_t (h_0 + sum_{s<=t} b_s / A_s)
with A_t = a_1 ... a_t; the scan computes log A_t with a cumulative sum and the sum with logcumsumexp, entirely
in log space so that the tiny products A_t neither underflow nor divide by zero. The state is h.

`cell.block` (default true): the cell inside a pre-norm residual block with an MLP, the kind of layer Feng et al.
train it in, laid out as lucidrains' minGRU-pytorch (`minGRULM`) does:
    u = W_e x (only when input_size != hidden_size),  u = u + W_down h(RMSNorm(u)),  y = u + MLP(RMSNorm(u))
with h the min cell `expansion` x hidden_size wide (its maps without bias) and MLP = Linear(H, mlp_factor H),
GELU, Linear(mlp_factor H, H); torch's default initialisation. The state is h. block=false: the bare recurrence
input_size -> hidden_size (with a bias). The bare cell learns very slowly on inputs that are zero for several
steps (smnist5k's blank rows): there its gates are sigmoid(bias) alone, a single parameter per unit that Adam
moves by about lr per step, and its output is positive and uncentred (docs/cells.md, measured).

`cell.scan`: parallel (the scan), sequential (the recurrence step by step, always used for a single step), or
auto: the scan on GPU, the step loop on CPU, where it is the faster one (logcumsumexp is a slow scalar loop on
CPU; benchmarks/cells-cpu.md).

`cell.compile` (auto: on GPU): the gate arithmetic and the scan compiled by torch.compile into a few fused
kernels. Eagerly each element-wise step is a pass over a [B, T, H] tensor in memory; fused, the scan runs
several times faster on a GPU (docs/speed.md). The first batch of each new shape pays the compilation (seconds).

Precision: log A_t grows like -T and the scan adds two numbers of that size to get log h_t, so float32's
relative error in h grows with T: measured against the sequential recurrence in float64 (B=8, H=64, random
inputs), the largest relative error is 1e-5 at T=100, 9e-5 at T=1000, 4e-4 at T=4096 (the sequential loop in
float32: 5e-7 at any T). The scan runs in float32 also under mixed precision for that reason.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import a_bool, a_number, positive_int
from src.models.cells.scan import linear_steps

SCANS = ("auto", "parallel", "sequential")
COMPILES = ("auto", True, False)


def g(k: Tensor) -> Tensor:
    """k + 1/2 for k >= 0, sigmoid(k) below: continuous at 0 (both 1/2) and always positive."""
    return torch.where(k >= 0, k + 0.5, torch.sigmoid(k))


def log_g(k: Tensor) -> Tensor:
    return torch.where(k >= 0, (F.relu(k) + 0.5).log(), -F.softplus(-k))


def parallel_scan(log_a: Tensor, log_b: Tensor, h0: Tensor | None) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for all t at once, from log a, log b [B, T, H] and h_0 [B, H] (None: zeros).
    h_0 enters linearly (A_t h_0), not through its logarithm, so a carried state may be zero or negative."""
    log_A = log_a.cumsum(1)
    h = torch.exp(log_A + torch.logcumsumexp(log_b - log_A, 1))
    return h if h0 is None else h + torch.exp(log_A) * h0.unsqueeze(1)


def log_space_scan(cell: _MinRNN, k: Tensor, h0: Tensor | None) -> Tensor:
    return parallel_scan(*cell.log_coefficients(k), h0)


@functools.cache
def compiled_scan():
    """log_space_scan compiled once per process, with dynamic shapes (one compilation serves every B and T)."""
    return torch.compile(log_space_scan, dynamic=True)


class _MinRNN(nn.Module):
    gates = 1  # linear maps besides the candidate's
    cuda_graphs = False  # the scan is a few large kernels, not a launch-bound loop: nothing for a graph to save

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        block: bool,
        expansion: float,
        mlp_factor: int,
        scan: str,
        compile: bool | str,
        forget_bias: float | None = None,
    ):
        super().__init__()
        self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        if scan not in SCANS:
            raise ConfigError(
                f"cell.scan={scan!r} must be one of {', '.join(SCANS)} (auto: the parallel scan "
                f"on GPU, the sequential recurrence on CPU, where it is faster)"
            )
        if compile not in COMPILES or isinstance(compile, int) and not isinstance(compile, bool):
            raise ConfigError(
                f"cell.compile={compile!r} must be auto (torch.compile the parallel scan on GPU), true or false"
            )
        self.scan, self.compile = scan, compile
        self.block = a_bool("block", block)
        expansion = a_number("expansion", expansion)
        if not expansion > 0:
            raise ConfigError(f"cell.expansion={expansion} must be positive (the recurrence's width over hidden_size)")
        if not isinstance(mlp_factor, int) or isinstance(mlp_factor, bool) or mlp_factor < 0:
            raise ConfigError(f"cell.mlp_factor={mlp_factor!r} must be a non-negative integer (0: no MLP)")
        self.expansion, self.mlp_factor = expansion, mlp_factor
        H = hidden_size
        if not block:
            self.state_size = H
            self.linear = nn.Linear(input_size, (self.gates + 1) * H)
            self.gate_bias = None
            if forget_bias is not None:  # the map's own bias, its gate part set (the candidate's keeps torch's init)
                with torch.no_grad():
                    self.linear.bias[: self.gates * H] = self.initial_gates(forget_bias, H)
            return
        self.state_size = max(1, round(expansion * H))
        self.embed = nn.Linear(input_size, H) if input_size != H else None
        self.norm = nn.RMSNorm(H)
        # Bias-free, as in the reference implementation the block follows (lucidrains' minGRU-pytorch).
        self.linear = nn.Linear(H, (self.gates + 1) * self.state_size, bias=False)
        # The gates' bias, initialised so that 1 - z (minGRU) and f / (f + i) (minLSTM) start at sigmoid(forget_bias):
        # without it the gates start at about 1/2 at every row, so the state halves each step, and a summary read
        # at a sequence's end (or, backward, its start) holds little of what came before (docs/cells.md).
        self.gate_bias = None
        if forget_bias is not None:
            self.gate_bias = nn.Parameter(self.initial_gates(forget_bias, self.state_size))
        self.down = nn.Linear(self.state_size, H, bias=False) if self.state_size != H else None
        if mlp_factor:
            self.mlp_norm = nn.RMSNorm(H)
            self.mlp = nn.Sequential(nn.Linear(H, mlp_factor * H), nn.GELU(), nn.Linear(mlp_factor * H, H))

    @staticmethod
    def initial_gate_bias(forget_bias: float) -> list[float]:
        """The initial bias of each gate's pre-activation (in the order of the linear map's chunks)."""
        raise NotImplementedError

    def initial_gates(self, forget_bias: float, width: int) -> Tensor:
        values = self.initial_gate_bias(a_number("forget_bias", forget_bias))
        return torch.tensor(values, dtype=torch.float32).repeat_interleave(width)

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """a, b of h_t = a_t h_{t-1} + b_t from the linear map's output k."""
        raise NotImplementedError

    def log_coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        """log a, log b, computed in log space (not log of `coefficients`, which underflows)."""
        raise NotImplementedError

    def uses_parallel_scan(self, x: Tensor) -> bool:
        # One step (generation) gains nothing from a scan.
        return x.shape[1] > 1 and (self.scan == "parallel" or (self.scan == "auto" and x.device.type != "cpu"))

    def recurrence(self, x: Tensor, state: Tensor | None) -> Tensor:
        """The bare min cell: h for every step of x (its width is state_size)."""
        k = self.linear(x)
        if self.gate_bias is not None:  # the candidate's part of the map stays bias-free
            k = k + F.pad(self.gate_bias, (0, self.state_size))
        dtype = torch.promote_types(k.dtype, torch.float32)  # float16/bfloat16 -> float32; float64 stays
        k, h0 = k.to(dtype), None if state is None else state.to(dtype)
        if self.uses_parallel_scan(x):
            use_compile = self.compile is True or (self.compile == "auto" and x.is_cuda)
            h = (compiled_scan() if use_compile else log_space_scan)(self, k, h0)
        else:
            h = linear_steps(*self.coefficients(k), h0)
        return h.to(x.dtype)

    def forward(self, x: Tensor, state: Tensor | None = None):
        if not self.block:
            h = self.recurrence(x, state)
            return h, h[:, -1]
        u = x if self.embed is None else self.embed(x)
        h = self.recurrence(self.norm(u), state)
        u = u + (h if self.down is None else self.down(h))
        if self.mlp_factor:
            u = u + self.mlp(self.mlp_norm(u))
        return u, h[:, -1]

    def extra_repr(self) -> str:
        return (
            f"hidden_size={self.hidden_size}, block={self.block}, state_size={self.state_size}, "
            f"scan={self.scan}, compile={self.compile}"
        )


class MinGRU(_MinRNN):
    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        block: bool = True,
        expansion: float = 1.5,
        mlp_factor: int = 4,
        scan: str = "auto",
        compile: bool | str = "auto",
        forget_bias: float | None = 2.0,
    ):
        super().__init__(input_size, hidden_size, block, expansion, mlp_factor, scan, compile, forget_bias)

    @staticmethod
    def initial_gate_bias(forget_bias: float) -> list[float]:
        return [-forget_bias]  # k_z: 1 - z = sigmoid(-k_z) = sigmoid(forget_bias)

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        k_z, k_h = k.chunk(2, -1)
        return torch.sigmoid(-k_z), torch.sigmoid(k_z) * g(k_h)

    def log_coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        k_z, k_h = k.chunk(2, -1)
        # log(1 - z) = -softplus(k_z), log z = -softplus(-k_z): exact and stable for any k_z
        return -F.softplus(k_z), -F.softplus(-k_z) + log_g(k_h)


class MinLSTM(_MinRNN):
    gates = 2

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        block: bool = True,
        expansion: float = 1.5,
        mlp_factor: int = 4,
        scan: str = "auto",
        compile: bool | str = "auto",
        forget_bias: float | None = 2.0,
    ):
        super().__init__(input_size, hidden_size, block, expansion, mlp_factor, scan, compile, forget_bias)

    @staticmethod
    def initial_gate_bias(forget_bias: float) -> list[float]:
        # k_f, k_i: d = softplus(-k_f) - softplus(-k_i) = -forget_bias, so f / (f + i) = sigmoid(forget_bias)
        return [forget_bias, -forget_bias]

    @staticmethod
    def log_ratio(k_f: Tensor, k_i: Tensor) -> Tensor:
        """d = log(i / f): then f/(f+i) = sigmoid(-d) and i/(f+i) = sigmoid(d), also where f and i underflow."""
        return F.softplus(-k_f) - F.softplus(-k_i)

    def coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        k_f, k_i, k_h = k.chunk(3, -1)
        d = self.log_ratio(k_f, k_i)
        return torch.sigmoid(-d), torch.sigmoid(d) * g(k_h)

    def log_coefficients(self, k: Tensor) -> tuple[Tensor, Tensor]:
        k_f, k_i, k_h = k.chunk(3, -1)
        d = self.log_ratio(k_f, k_i)
        return -F.softplus(d), -F.softplus(-d) + log_g(k_h)
