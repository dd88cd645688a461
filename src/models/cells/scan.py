"""What the modern cells (lru, mamba, mlstm, ...) share: the linear recurrence h_t = a_t * h_{t-1} + b_t run step by
step or as a chunked parallel scan, the short causal depthwise convolution with its carried tail, and their checked
settings.

The parallel scan composes the affine maps h -> a h + b by doubling (Hillis and Steele): after the round with
offset k, position t holds the composition of the maps t-2k+1 .. t, so log2(L) rounds of element-wise products
give every prefix at once. No logarithms and no divisions: a and b may be negative, complex or zero (minrnn's
log-space scan needs a > 0, b > 0). Work is O(L log L) per chunk; the sequence is cut into chunks of `chunk`
steps, scanned one after the other with the state carried between them, which bounds the memory autograd keeps
to O(T log chunk) instead of O(T log T) and the intermediate products' range to one chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import positive_int

SCANS = ("auto", "parallel", "sequential")


def scan_setting(value) -> str:
    if value not in SCANS or not isinstance(value, str):
        raise ConfigError(
            f"cell.scan={value!r} must be one of {', '.join(SCANS)} (parallel: the "
            f"chunked parallel scan; sequential: step by step; auto: parallel on GPU, sequential on CPU)"
        )
    return value


def chunk_setting(value) -> int:
    positive_int("chunk", value)
    return value


def use_parallel(scan: str, x: Tensor) -> bool:
    """The parallel form for x [B, T, ...]: when asked for, or (auto) on a GPU; never for one step (generation),
    which gains nothing from it. On CPU the step loop is the faster one at the suite's lengths (LRU block,
    B=128, T=28, H=N=128, forward + backward: 44 ms stepped, 113 ms scanned)."""
    return x.shape[1] > 1 and (scan == "parallel" or (scan == "auto" and x.device.type != "cpu"))


def scan_chunk(a: Tensor, b: Tensor, products: bool) -> tuple[Tensor | None, Tensor]:
    """For a, b [B, L, ...]: (A_t = a_1 ... a_t if `products` else None, h_t from h_0 = 0) for every t."""
    steps, k = a.shape[1], 1
    while k < steps:
        b = torch.cat([b[:, :k], torch.addcmul(b[:, k:], a[:, k:], b[:, :-k])], 1)
        if products or 2 * k < steps:  # the last round's products serve only A_t
            a = torch.cat([a[:, :k], a[:, k:] * a[:, :-k]], 1)
        k *= 2
    return (a if products else None), b


def linear_scan(a: Tensor, b: Tensor, h0: Tensor | None, chunk: int) -> Tensor:
    """h_t = a_t h_{t-1} + b_t for every t: a and b [B, T, ...] of one shape, h_0 [B, ...] (None: zeros)."""
    outputs, h = [], h0
    for start in range(0, a.shape[1], chunk):
        prod, hs = scan_chunk(a[:, start : start + chunk], b[:, start : start + chunk], h is not None)
        if h is not None:
            hs = torch.addcmul(hs, prod, h.unsqueeze(1))
        outputs.append(hs)
        h = hs[:, -1]
    return torch.cat(outputs, 1) if len(outputs) > 1 else outputs[0]


def linear_steps(a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """The same recurrence one step at a time, from a, b [B, T, H]: for generation, the reference for the
    parallel scans, and on CPU the faster form (minrnn's log-space scan is a slow scalar loop there)."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    outputs = []
    for a_t, b_t in zip(a.unbind(1), b.unbind(1)):
        h = torch.addcmul(b_t, a_t, h)
        outputs.append(h)
    return torch.stack(outputs, 1)


def recurrence(scan: str, chunk: int, a: Tensor, b: Tensor, h0: Tensor | None) -> Tensor:
    """h for every step, by the form `scan` selects (see use_parallel)."""
    return linear_scan(a, b, h0, chunk) if use_parallel(scan, b) else linear_steps(a, b, h0)


class CausalConv(nn.Module):
    """Depthwise causal convolution over time with a short kernel (Mamba's, Griffin's, xLSTM's): y_t reads
    x_{t-K+1} .. x_t of its own channel. Its state is the last K-1 inputs [B, K-1, C] (zeros before the start),
    so chunks carrying it equal one pass."""

    def __init__(self, channels: int, kernel: int, bias: bool = True):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel))
        self.bias = nn.Parameter(torch.zeros(channels)) if bias else None
        bound = 1.0 / kernel**0.5  # nn.Conv1d's default for a depthwise kernel (fan_in = K)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def initial_tail(self, x: Tensor) -> Tensor:
        return x.new_zeros(x.shape[0], self.kernel - 1, x.shape[2])

    def forward(self, x: Tensor, tail: Tensor | None) -> tuple[Tensor, Tensor]:
        """x [B, T, C], tail [B, K-1, C] | None -> (y [B, T, C], the new tail)."""
        padded = torch.cat([self.initial_tail(x) if tail is None else tail.to(x.dtype), x], 1)
        y = F.conv1d(padded.transpose(1, 2), self.weight, self.bias, groups=x.shape[2]).transpose(1, 2)
        return y, padded[:, padded.shape[1] - (self.kernel - 1) :]
