"""Causal multi-head self-attention with rotary positions (Vaswani et al. 2017; RoPE: Su et al. 2021, "RoFormer"):
not a recurrent cell but the reference point beside them. Step t attends to every earlier step (or to the last
`window` steps) through

    scores_ts = <R_t q_t, R_s k_s> / sqrt(d) = <q_t, R_{s-t} k_s> / sqrt(d),   softmax over s <= t,
    out_t = sum_s p_ts v_s

with R_p the rotation by angles p * base^(-2j/d) of each pair of dimensions (j, j + d/2). Only differences of
positions enter, so the state, the key/value cache of the steps seen so far ([B, heads, S, d] each, keys stored
unrotated), is re-numbered from 0 on every call: chunks carrying it equal one pass, as truncated BPTT and
generation need. Its cost grows with what it has seen: time O(S) per step and memory O(S) for the cache (window:
at most window-1 steps kept, local attention as in Griffin), where a recurrent cell's state is fixed.

`cell.block` (default true): the pre-norm transformer layer, u -> LayerNorm -> attention -> + u, then
u -> LayerNorm -> MLP (GELU, mlp_factor x width) -> + u; an input of another width than hidden_size is first mapped
to it. block=false: the attention alone (q, k, v from the input, the output projection). No dropout.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.common.errors import ConfigError
from src.models.cells.base import a_bool, a_number, positive_int


def rotate(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """RoPE: x [..., L, d] rotated by positions [L] (pairs j and j + d/2, as GPT-NeoX and LLaMA)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, dtype=x.dtype, device=x.device) / half)
    angles = positions.to(x.dtype)[:, None] * freqs
    cos, sin = angles.cos(), angles.sin()
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1)


class Attention(nn.Module):
    cuda_graphs = False  # CUDA graph capture (src/models/graphs.py) not yet tried on a GPU with this cell: eager

    def __init__(
        self,
        input_size: int,
        hidden_size: int = 128,
        num_heads: int = 4,
        mlp_factor: int = 4,
        window: int | None = None,
        rope_base: float = 10000.0,
        block: bool = True,
    ):
        super().__init__()
        H = self.hidden_size = self.output_size = positive_int("hidden_size", hidden_size)
        self.num_heads = positive_int("num_heads", num_heads)
        if H % num_heads or (H // num_heads) % 2:
            raise ConfigError(
                f"cell.num_heads={num_heads} must divide cell.hidden_size={H} into heads of an even "
                f"size (rotary positions turn pairs of dimensions)"
            )
        positive_int("mlp_factor", mlp_factor)
        self.window = None if window is None else positive_int("window", window)
        self.rope_base = a_number("rope_base", rope_base)
        if not self.rope_base > 1:
            raise ConfigError(f"cell.rope_base={rope_base} must be greater than 1 (the paper's 10000)")
        self.block = a_bool("block", block)
        self.head_size = H // num_heads
        self.embed = nn.Linear(input_size, H) if block and input_size != H else None
        self.qkv = nn.Linear(H if block else input_size, 3 * H)
        self.out = nn.Linear(H, H)
        if block:
            self.norm, self.mlp_norm = nn.LayerNorm(H), nn.LayerNorm(H)
            self.mlp_up, self.mlp_down = nn.Linear(H, mlp_factor * H), nn.Linear(mlp_factor * H, H)

    def attend(self, x: Tensor, cache: tuple[Tensor, Tensor] | None):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, self.head_size)).permute(2, 0, 3, 1, 4)
        if cache is not None:
            k, v = torch.cat([cache[0].to(k.dtype), k], 2), torch.cat([cache[1].to(v.dtype), v], 2)
        S = k.shape[2] - T  # cached steps
        positions = torch.arange(S + T, device=x.device)
        query_pos, key_pos = positions[S:, None], positions[None, :]
        allowed = key_pos <= query_pos
        if self.window is not None:
            allowed = allowed & (key_pos > query_pos - self.window)
        y = F.scaled_dot_product_attention(
            rotate(q, positions[S:], self.rope_base), rotate(k, positions, self.rope_base), v, attn_mask=allowed
        )
        keep = k.shape[2] if self.window is None else min(k.shape[2], self.window - 1)
        return self.out(y.transpose(1, 2).flatten(-2)), (k[:, :, k.shape[2] - keep :], v[:, :, v.shape[2] - keep :])

    def forward(self, x: Tensor, state=None):
        if not self.block:
            return self.attend(x, state)
        u = x if self.embed is None else self.embed(x)
        y, state = self.attend(self.norm(u), state)
        u = u + y
        return u + self.mlp_down(F.gelu(self.mlp_up(self.mlp_norm(u)))), state

    def extra_repr(self) -> str:
        return f"hidden_size={self.hidden_size}, num_heads={self.num_heads}, window={self.window}, block={self.block}"
