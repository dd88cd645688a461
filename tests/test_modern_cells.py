"""The modern recurrent cells (issue 17): step form = chunked parallel form (from a zero and a carried state, in
chunks of several lengths), gradcheck in float64 for the parameters, the input and the initial state, each paper's
equations written out here for comparison, published initialisations, checked settings, and runs through
src.train. (tests/test_cells.py runs its per-cell tests, learning smnist5k included, on every conf/cell yaml.)"""

from __future__ import annotations

import functools
import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from src.common.errors import ConfigError
from src.models.cells.attention import Attention
from src.models.cells.lru import LRU
from src.models.cells.mamba import Mamba
from src.models.cells.rglru import RGLRU
from src.models.cells.scan import CausalConv, linear_scan, linear_steps
from src.models.cells.xlstm import MLSTM, SLSTM, mlstm, powerlaw_forget_bias
from src.models.stack import RecurrentStack
from src.train import train
from src.updates.truncated import Truncated
from tests.conftest import as_tuple, assert_cell_gradcheck


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def step_only(cls, input_size, scan=None, chunk=None, **settings):
    """A cell without a parallel form (no scan or chunk setting) in the tests' common signature."""
    return cls(input_size, **settings)


# name -> a small cell of each configuration, built as cell(input_size=3, scan=..., chunk=...)
SMALL = {
    "lru:block": functools.partial(LRU, hidden_size=4, state_size=3),
    "lru:bare": functools.partial(LRU, hidden_size=4, state_size=3, block=False),
    "mamba:block": functools.partial(Mamba, hidden_size=4, state_size=3, dt_min=0.05, dt_max=0.5),
    "mamba:bare": functools.partial(Mamba, hidden_size=4, state_size=3, conv_kernel=3, block=False),
    "mlstm:block": functools.partial(MLSTM, hidden_size=4, num_heads=2, qkv_blocksize=2),
    "mlstm:bare": functools.partial(MLSTM, hidden_size=4, num_heads=2, block=False),
    "slstm:block": functools.partial(step_only, SLSTM, hidden_size=4, num_heads=2, ffn_factor=1.5),
    "slstm:bare": functools.partial(step_only, SLSTM, hidden_size=4, num_heads=2, block=False),
    "rglru:block": functools.partial(RGLRU, hidden_size=4, num_heads=2, mlp_factor=2),
    "rglru:bare": functools.partial(RGLRU, hidden_size=4, num_heads=2, block=False),
    "attention:block": functools.partial(step_only, Attention, hidden_size=4, num_heads=2, mlp_factor=2),
    "attention:bare": functools.partial(step_only, Attention, hidden_size=4, num_heads=2, block=False),
    "attention:window": functools.partial(step_only, Attention, hidden_size=4, num_heads=2, window=3),
}
# No parallel form: the parallel-vs-step tests then check chunking alone.
STEP_ONLY = {"slstm:block", "slstm:bare", "attention:block", "attention:bare", "attention:window"}


def pair(name: str, dtype=torch.float32, chunk: int = 4):
    """The same cell (same weights) in its parallel and its sequential form. Every parameter is moved away from
    its initial value (zero recurrent weights, unit norms), so that each one matters in what is compared."""
    torch.manual_seed(0)
    parallel = SMALL[name](input_size=3, scan="parallel", chunk=chunk).to(dtype)
    with torch.no_grad():
        for p in parallel.parameters():
            p.add_(0.2 * torch.randn_like(p))
    sequential = SMALL[name](input_size=3, scan="sequential", chunk=chunk).to(dtype)
    sequential.load_state_dict(parallel.state_dict())
    return parallel, sequential


def random_state(cell, x):
    """A carried state of the cell's own shapes, with values away from zero."""
    with torch.no_grad():
        _, state = cell(torch.randn_like(x[:, :6]))
    return state


def assert_states_close(a, b, **tol):
    for s, t in zip(as_tuple(a), as_tuple(b), strict=True):
        torch.testing.assert_close(s, t, **tol)


# -- the generic scan -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("T,chunk", [(1, 4), (13, 4), (13, 5), (16, 16), (13, 64)])
def test_linear_scan_equals_the_step_loop(dtype, T, chunk):
    torch.manual_seed(0)
    a, b, h0 = torch.randn(2, T, 3, dtype=dtype), torch.randn(2, T, 3, dtype=dtype), torch.randn(2, 3, dtype=dtype)
    for h in (None, h0):
        torch.testing.assert_close(linear_scan(a, b, h, chunk), linear_steps(a, b, h))


def test_causal_conv_equals_torch_conv_and_carries_its_tail():
    torch.manual_seed(0)
    conv, x = CausalConv(5, 4), torch.randn(2, 9, 5)
    ref = F.conv1d(x.transpose(1, 2), conv.weight, conv.bias, padding=3, groups=5)[..., :9].transpose(1, 2)
    whole, tail = conv(x, None)
    torch.testing.assert_close(whole, ref)
    first, t1 = conv(x[:, :2], None)  # a chunk shorter than the tail
    second, t2 = conv(x[:, 2:], t1)
    torch.testing.assert_close(torch.cat([first, second], 1), whole)
    torch.testing.assert_close(t2, tail)
    torch.testing.assert_close(tail, x[:, -3:])


# -- step form = parallel form, through chunks -----------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("carried", [False, True], ids=["zero-state", "carried-state"])
def test_step_form_equals_parallel_form_in_chunks(name, carried):
    """float32, 1e-5: the sequential form over all T, the parallel form over all T, and the parallel form run in
    chunks of 1, 5 and 7 steps carrying the state (its scan chunk is 4 steps, so one call spans several)."""
    parallel, sequential = pair(name)
    x = torch.randn(3, 13, 3)
    state = random_state(parallel, x) if carried else None
    out_s, state_s = sequential(x, state)
    out_p, state_p = parallel(x, state)
    torch.testing.assert_close(out_p, out_s, rtol=1e-5, atol=1e-5)
    assert_states_close(state_p, state_s, rtol=1e-5, atol=1e-5)
    for cell in (parallel, sequential):
        outs, s = [], state
        for start, stop in ((0, 1), (1, 6), (6, 13)):
            out, s = cell(x[:, start:stop], s)
            outs.append(out)
        torch.testing.assert_close(torch.cat(outs, 1), out_s, rtol=1e-5, atol=1e-5)
        assert_states_close(s, state_s, rtol=1e-5, atol=1e-5)


GRADCHECK = [
    (name, scan)
    for name in sorted(SMALL)
    for scan in (["sequential"] if name in STEP_ONLY else ["parallel", "sequential"])
]


@pytest.mark.parametrize("name,scan", GRADCHECK, ids=[f"{n}-{s}" for n, s in GRADCHECK])
def test_gradcheck_float64(name, scan):
    """Analytic gradients equal numerical ones for the input, the initial state and every parameter."""
    parallel, sequential = pair(name, torch.float64, chunk=2)
    cell = parallel if scan == "parallel" else sequential
    x = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)  # two scan chunks of 2
    state = tuple(s.detach().clone().requires_grad_() for s in as_tuple(random_state(cell, x)))
    assert_cell_gradcheck(cell, x, state)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_depth2_bidirectional_stack_runs_with_padding(name):
    torch.manual_seed(0)
    stack = RecurrentStack(
        functools.partial(SMALL[name], scan="parallel"), input_size=3, depth=2, bidirectional=True
    ).eval()
    lengths = torch.tensor([6, 2, 4])
    x = torch.randn(3, 6, 3)
    out, _ = stack(x, lengths)
    alone, _ = stack(x[1:2, :2])
    torch.testing.assert_close(out[1, :2], alone[0], rtol=1e-5, atol=1e-5)


# -- LRU ----------------------------------------------------------------------------------------------------------
def lru_reference_step(core, u, x_re, x_im):
    """One step of the LRU in real arithmetic (Orvieto et al. 2023, eq. 3 and its appendix), written out:
    lambda = r e^{i theta}, r = exp(-exp(nu_log)), theta = exp(theta_log); x <- lambda x + gamma B u;
    y = Re(C x) + D u."""
    r, theta = torch.exp(-torch.exp(core.nu_log)), torch.exp(core.theta_log)
    gamma = torch.exp(core.gamma_log)
    bu_re, bu_im = gamma * (u @ core.B_re.T), gamma * (u @ core.B_im.T)
    new_re = r * torch.cos(theta) * x_re - r * torch.sin(theta) * x_im + bu_re
    new_im = r * torch.sin(theta) * x_re + r * torch.cos(theta) * x_im + bu_im
    y = new_re @ core.C_re.T - new_im @ core.C_im.T  # Re((C_re + i C_im)(x_re + i x_im))
    y = y + (u * core.D if core.D.dim() == 1 else u @ core.D.T)
    return y, new_re, new_im


@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_lru_follows_the_papers_equations(block, scan):
    torch.manual_seed(0)
    cell = LRU(3, 4, state_size=5, block=block, scan=scan, chunk=2).double()
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    state = torch.randn(2, 5, 2, dtype=torch.float64)
    out, final = cell(x, state)
    x_re, x_im, expected = state[..., 0], state[..., 1], []
    for t in range(6):
        if block:
            u = cell.embed(x[:, t])
            v = F.layer_norm(u, (4,), cell.norm.weight, cell.norm.bias)
            y, x_re, x_im = lru_reference_step(cell.lru, v, x_re, x_im)
            g = F.gelu(y)
            w1, w2 = cell.glu.weight.split(4), cell.glu.bias.split(4)
            expected.append(u + (g @ w1[0].T + w2[0]) * torch.sigmoid(g @ w1[1].T + w2[1]))
        else:
            y, x_re, x_im = lru_reference_step(cell.lru, x[:, t], x_re, x_im)
            expected.append(y)
    torch.testing.assert_close(out, torch.stack(expected, 1))
    torch.testing.assert_close(final, torch.stack([x_re, x_im], -1))


def test_lru_initialisation_is_the_papers():
    """|lambda| on the ring [r_min, r_max], phases in [0, max_phase], gamma = sqrt(1 - |lambda|^2), and B, C's
    scales 1/sqrt(2H) and 1/sqrt(N)."""
    torch.manual_seed(0)
    core = LRU(64, 64, state_size=2000, r_min=0.4, r_max=0.9, max_phase=math.pi / 10).lru
    r = torch.exp(-torch.exp(core.nu_log)).detach()
    assert 0.4 <= r.min() and r.max() <= 0.9 and r.min() < 0.42 and r.max() > 0.88
    # uniform on the ring's area: r^2 uniform on [r_min^2, r_max^2]
    assert abs((r**2).mean().item() - (0.4**2 + 0.9**2) / 2) < 0.01
    theta = torch.exp(core.theta_log).detach()
    assert 0 <= theta.min() and theta.max() <= math.pi / 10
    torch.testing.assert_close(torch.exp(core.gamma_log).detach(), torch.sqrt(1 - r**2))
    assert abs(core.B_re.std().item() - 1 / math.sqrt(2 * 64)) < 0.005
    assert abs(core.C_re.std().item() - 1 / math.sqrt(2000)) < 0.002


# -- Mamba -------------------------------------------------------------------------------------------------------
def mamba_reference_step(mixer, u, h, window):
    """One step of Mamba's mixer (Gu and Dao 2023, Algorithm 2 and Figure 3), written out per channel d and state
    index n: `window` holds the last K inputs of the convolution, oldest first."""
    x, z = (u @ mixer.in_proj.weight.T).chunk(2, -1)
    window = torch.cat([window[:, 1:], x[:, None]], 1)  # [B, K, E*D]
    x = F.silu((window * mixer.conv.weight[:, 0, :].T).sum(1) + mixer.conv.bias)
    dbc = x @ mixer.x_proj.weight.T
    R, N = mixer.dt_rank, mixer.state_size
    delta = F.softplus(dbc[:, :R] @ mixer.dt_proj.weight.T + mixer.dt_proj.bias)  # [B, E*D]
    B, C = dbc[:, R : R + N], dbc[:, R + N :]
    A = -torch.exp(mixer.A_log)  # [E*D, N]
    h = torch.stack(
        [
            torch.stack(
                [torch.exp(delta[:, d] * A[d, n]) * h[:, d, n] + delta[:, d] * B[:, n] * x[:, d] for n in range(N)], -1
            )
            for d in range(h.shape[1])
        ],
        1,
    )
    y = (h * C[:, None, :]).sum(-1) + mixer.D * x
    return (y * F.silu(z)) @ mixer.out_proj.weight.T, h, window


@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_mamba_follows_the_papers_equations(block, scan):
    torch.manual_seed(0)
    cell = Mamba(3, 4, state_size=3, expand=2, conv_kernel=3, block=block, scan=scan, chunk=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    h, tail = torch.randn(2, 8, 3, dtype=torch.float64), torch.randn(2, 2, 8, dtype=torch.float64)
    out, (h_final, tail_final) = cell(x, (h, tail))
    window, expected = torch.cat([torch.zeros_like(tail[:, :1]), tail], 1), []
    for t in range(5):
        if block:
            u = cell.embed(x[:, t])
            v = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-5) * cell.norm.weight  # RMSNorm
            y, h, window = mamba_reference_step(cell.mixer, v, h, window)
            expected.append(u + y)
        else:
            y, h, window = mamba_reference_step(cell.mixer, x[:, t], h, window)
            expected.append(y)
    torch.testing.assert_close(out, torch.stack(expected, 1))
    torch.testing.assert_close(h_final, h)
    torch.testing.assert_close(tail_final, window[:, 1:])


def test_mamba_initialisation_is_the_papers():
    torch.manual_seed(0)
    cell = Mamba(8, 64, state_size=16, dt_min=0.001, dt_max=0.1)
    mixer = cell.mixer
    torch.testing.assert_close(-torch.exp(mixer.A_log.detach()), -torch.arange(1.0, 17.0).expand(128, 16))
    assert torch.all(mixer.D == 1) and mixer.dt_rank == 4 and mixer.inner == 128
    dt = F.softplus(mixer.dt_proj.bias.detach())
    assert 0.001 * 0.999 <= dt.min() and dt.max() <= 0.1 * 1.001
    # log-uniform: log dt uniform on [log 0.001, log 0.1], mean at log 0.01
    assert abs(dt.log().mean().item() - math.log(0.01)) < 0.35
    assert mixer.dt_proj.weight.abs().max() <= 4**-0.5
    assert mixer.in_proj.bias is None and mixer.out_proj.bias is None and mixer.conv.bias is not None


def mambapy_twin(cell: Mamba):
    """mambapy's ResidualBlock (alxndrTL/mamba.py, plain PyTorch) with this cell's weights."""
    from mambapy.mamba import MambaConfig, ResidualBlock

    mixer = cell.mixer
    config = MambaConfig(
        d_model=cell.hidden_size,
        n_layers=1,
        d_state=mixer.state_size,
        expand_factor=mixer.inner // cell.hidden_size,
        d_conv=mixer.conv.kernel,
        dt_rank=mixer.dt_rank,
        pscan=True,
    )
    twin = ResidualBlock(config).to(next(cell.parameters()).dtype)
    with torch.no_grad():
        for theirs, mine in (
            ("norm.weight", cell.norm.weight),
            ("mixer.conv1d.weight", mixer.conv.weight),
            ("mixer.conv1d.bias", mixer.conv.bias),
        ):
            twin.get_parameter(theirs).copy_(mine)
        for name in (
            "in_proj.weight",
            "x_proj.weight",
            "dt_proj.weight",
            "dt_proj.bias",
            "A_log",
            "D",
            "out_proj.weight",
        ):
            twin.mixer.get_parameter(name).copy_(mixer.get_parameter(name))
    return twin


@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_mamba_equals_mambapy_with_copied_weights(scan):
    """Against mambapy 1.2.0 (the test extra): its parallel forward over the whole sequence, and its step form
    (ResidualBlock.step with the cache (h, last inputs)) continuing from our carried state."""
    torch.manual_seed(0)
    cell = Mamba(16, 16, state_size=4, dt_min=0.1, dt_max=1.0, scan=scan, chunk=4)  # large Delta: A matters
    twin = mambapy_twin(cell)
    x = torch.randn(2, 11, 16)
    out, (h, tail) = cell(x)
    with torch.no_grad():
        torch.testing.assert_close(out, twin(x), rtol=1e-5, atol=1e-5)
        more, _ = cell(x[:, :3], (h, tail))
        cache = (h, tail.transpose(1, 2))  # mambapy keeps the conv inputs channels-first: [B, E*D, K-1]
        for t in range(3):
            y, cache = twin.step(x[:, t], cache)
            torch.testing.assert_close(more[:, t], y, rtol=1e-5, atol=1e-5)


# -- mLSTM -------------------------------------------------------------------------------------------------------
def mlstm_reference(q, k, v, i_pre, f_pre, C, n):
    """xLSTM's mLSTM (Beck et al. 2024, eqs. 19-27) without the stabiliser, in float64, per head: q, k, v
    [B, T, NH, d] (k already scaled by 1/sqrt(d)), C [B, NH, d, d], n [B, NH, d] the true (unscaled) state.
    Returns h~ [B, T, NH, d] and the final C, n."""
    outputs = []
    for t in range(q.shape[1]):
        i, f = torch.exp(i_pre[:, t]), torch.sigmoid(f_pre[:, t])  # [B, NH]
        C = f[..., None, None] * C + i[..., None, None] * torch.einsum("bhv,bhk->bhvk", v[:, t], k[:, t])
        n = f[..., None] * n + i[..., None] * k[:, t]
        scale = torch.clamp(torch.einsum("bhk,bhk->bh", n, q[:, t]).abs(), min=1.0)
        outputs.append(torch.einsum("bhvk,bhk->bhv", C, q[:, t]) / scale[..., None])
    return torch.stack(outputs, 1), C, n


@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_mlstm_follows_the_papers_equations(block, scan):
    """The cell (stabilised, chunkwise or stepped) against the unstabilised equations, from a carried state:
    the state the cell stores is (C e^{-m}, n e^{-m}, m)."""
    torch.manual_seed(0)
    cell = MLSTM(3, 4, num_heads=2, qkv_blocksize=2, conv_kernel=3, block=block, scan=scan, chunk=2).double()
    with torch.no_grad():  # gates away from their initial values, so that every weight matters
        for p in (*cell.i_gate.parameters(), *cell.f_gate.parameters()):
            p.normal_()
    B, T, NH = 2, 5, 2
    x = torch.randn(B, T, 3, dtype=torch.float64)
    d = cell.head_size
    C0, n0 = torch.randn(B, NH, d, d, dtype=torch.float64), torch.randn(B, NH, d, dtype=torch.float64)
    m0 = torch.randn(B, NH, dtype=torch.float64)
    heads = lambda t: t.unflatten(-1, (NH, d))  # noqa: E731
    true_C0, true_n0 = C0 * m0.exp()[..., None, None], n0 * m0.exp()[..., None]
    if block:
        tail = torch.randn(B, 2, cell.inner, dtype=torch.float64)
        out, (C, n, m, tail_out) = cell(x, (C0, n0, m0, tail))
        u = cell.embed(x)
        left, z = cell.up(F.layer_norm(u, (4,), cell.norm.weight, cell.norm.bias)).chunk(2, -1)
        window = torch.cat([tail, left], 1)  # [B, 2 + T, inner]
        w = cell.conv.weight[:, 0, :]  # [inner, K]
        conv = F.silu(torch.stack([(window[:, t : t + 3] * w.T).sum(1) for t in range(T)], 1) + cell.conv.bias)
        block_diag = lambda lin: torch.block_diag(*lin.weight)  # noqa: E731
        q = conv @ block_diag(cell.q).T + cell.q.bias
        k = conv @ block_diag(cell.k).T + cell.k.bias
        v = left @ block_diag(cell.v).T + cell.v.bias
        qkv = torch.cat([q, k, v], -1)
        h, true_C, true_n = mlstm_reference(
            heads(q), heads(k) / math.sqrt(d), heads(v), cell.i_gate(qkv), cell.f_gate(qkv), true_C0, true_n0
        )
        normed = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
        h = normed.flatten(-2) * cell.out_weight + cell.skip * conv
        expected = u + cell.down(h * F.silu(z))
        torch.testing.assert_close(tail_out, window[:, -2:])
    else:
        out, (C, n, m) = cell(x, (C0, n0, m0))
        q, k, v, o = cell.qkvo(x).chunk(4, -1)
        h, true_C, true_n = mlstm_reference(
            heads(q), heads(k) / math.sqrt(d), heads(v), cell.i_gate(x), cell.f_gate(x), true_C0, true_n0
        )
        expected = torch.sigmoid(o) * h.flatten(-2)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(C * m.exp()[..., None, None], true_C)
    torch.testing.assert_close(n * m.exp()[..., None], true_n)


def test_mlstm_stabiliser_keeps_large_input_gates_finite():
    """Input gate pre-activations of 200 (e^200 overflows float32): both forms stay finite and agree, and equal
    the unstabilised equations evaluated in float64."""
    torch.manual_seed(0)
    B, T, NH, d = 2, 9, 2, 3
    # q.k > 0: the normaliser n.q then has no cancellation, which would amplify float32 rounding (not overflow)
    q, k, v = torch.rand(B, T, NH, d), torch.rand(B, T, NH, d), torch.randn(B, T, NH, d)
    i_pre, f_pre = 200 + 5 * torch.randn(B, T, NH), torch.randn(B, T, NH)
    h_p, state_p = mlstm(q, k, v, i_pre, f_pre, None, "parallel", 4)
    h_s, state_s = mlstm(q, k, v, i_pre, f_pre, None, "sequential", 4)
    assert torch.isfinite(h_p).all() and all(torch.isfinite(s).all() for s in state_p)
    torch.testing.assert_close(h_p, h_s, rtol=1e-5, atol=1e-5)
    assert_states_close(state_p, state_s, rtol=1e-5, atol=1e-5)
    zeros = torch.zeros(B, NH, d, d, dtype=torch.float64), torch.zeros(B, NH, d, dtype=torch.float64)
    h_ref, _, _ = mlstm_reference(*(t.double() for t in (q, k, v, i_pre, f_pre)), *zeros)
    torch.testing.assert_close(h_p.double(), h_ref, rtol=1e-5, atol=1e-5)


def test_mlstm_initialisation_is_the_papers():
    torch.manual_seed(0)
    cell = MLSTM(8, 16, num_heads=4)
    torch.testing.assert_close(cell.f_gate.bias.detach(), torch.tensor([3.0, 4.0, 5.0, 6.0]))
    assert torch.all(cell.f_gate.weight == 0) and torch.all(cell.i_gate.weight == 0)
    assert cell.i_gate.bias.abs().max() < 0.5 and torch.all(cell.skip == 1)
    assert cell.q.weight.shape == (8, 4, 4) and cell.head_size == 8  # inner 32 in blocks of 4; 4 heads of 8


# -- sLSTM -------------------------------------------------------------------------------------------------------
def slstm_reference(wx, R, bias, h, c, n):
    """xLSTM's sLSTM (Beck et al. 2024, eqs. 8-17) without the stabiliser, in float64: wx [B, T, 4, H] the input
    parts of i~, f~, z~, o~, R [NH, 4, d, d] the head-wise recurrent weights, c and n the true (unscaled) state."""
    full_R = [torch.block_diag(*R[:, g]) for g in range(4)]  # each gate's H x H block-diagonal matrix
    outputs = []
    for t in range(wx.shape[1]):
        i_pre, f_pre, z_pre, o_pre = (wx[:, t, g] + h @ full_R[g].T + bias[g] for g in range(4))
        i, f, z, o = torch.exp(i_pre), torch.sigmoid(f_pre), torch.tanh(z_pre), torch.sigmoid(o_pre)
        c = f * c + i * z
        n = f * n + i
        h = o * c / n
        outputs.append(h)
    return torch.stack(outputs, 1), h, c, n


@pytest.mark.parametrize("block", [True, False])
def test_slstm_follows_the_papers_equations(block):
    torch.manual_seed(0)
    cell = SLSTM(3, 4, num_heads=2, conv_kernel=3, ffn_factor=1.5, block=block).double()
    with torch.no_grad():
        cell.recurrent.normal_()  # zero at initialisation: then h would not feed back
        cell.bias.normal_()
    B, T, H = 2, 5, 4
    x = torch.randn(B, T, 3, dtype=torch.float64)
    h0, c0, n0 = (
        torch.randn(B, H, dtype=torch.float64),
        torch.randn(B, H, dtype=torch.float64),
        torch.rand(B, H, dtype=torch.float64) + 0.5,
    )
    m0 = torch.randn(B, H, dtype=torch.float64)
    true_c0, true_n0 = c0 * m0.exp(), n0 * m0.exp()
    if block:
        tail = torch.randn(B, 2, H, dtype=torch.float64)
        out, (h, c, n, m, tail_out) = cell(x, (h0, c0, n0, m0, tail))
        u = cell.embed(x)
        v = F.layer_norm(u, (H,), cell.norm.weight, cell.norm.bias)
        window = torch.cat([tail, v], 1)
        w = cell.conv.weight[:, 0, :]
        conv = F.silu(torch.stack([(window[:, t : t + 3] * w.T).sum(1) for t in range(T)], 1) + cell.conv.bias)
        wx = torch.stack(
            [src @ torch.block_diag(*gate.weight).T for gate, src in zip(cell.gates_x, (conv, conv, v, v))], 2
        )
        hs, h_ref, c_ref, n_ref = slstm_reference(wx, cell.recurrent, cell.bias, h0, true_c0, true_n0)
        heads = hs.unflatten(-1, (2, 2))
        normed = (
            (heads - heads.mean(-1, keepdim=True)) / torch.sqrt(heads.var(-1, unbiased=False, keepdim=True) + 1e-5)
        ).flatten(-2)
        u = u + normed * cell.out_weight
        gate, up = (F.layer_norm(u, (H,), cell.ffn_norm.weight, cell.ffn_norm.bias) @ cell.ffn_up.weight.T).chunk(2, -1)
        expected = u + (F.gelu(gate) * up) @ cell.ffn_down.weight.T
        torch.testing.assert_close(tail_out, window[:, -2:])
    else:
        out, (h, c, n, m) = cell(x, (h0, c0, n0, m0))
        wx = cell.weight_ih(x).unflatten(-1, (4, H))
        expected, h_ref, c_ref, n_ref = slstm_reference(wx, cell.recurrent, cell.bias, h0, true_c0, true_n0)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h, h_ref)
    torch.testing.assert_close(c * m.exp(), c_ref)
    torch.testing.assert_close(n * m.exp(), n_ref)


def test_slstm_from_zero_state_and_large_input_gates():
    """From the zero state the stabiliser starts at i~ (nothing stored yet), so an input gate far below zero
    (e^-200 underflows) still gives h = o z at the first step, not 0/0; large ones stay finite."""
    cell = SLSTM(3, 4, num_heads=2, block=False)
    with torch.no_grad():
        cell.bias[0] = -200.0
    x = torch.randn(2, 3, 3)
    out, _ = cell(x)
    wx = cell.weight_ih(x[:, 0]).unflatten(-1, (4, 4)) + cell.bias
    torch.testing.assert_close(out[:, 0], torch.sigmoid(wx[:, 3]) * torch.tanh(wx[:, 2]))
    with torch.no_grad():
        cell.bias[0] = 200.0
    assert torch.isfinite(cell(x)[0]).all()


def test_slstm_initialisation_is_the_papers_code():
    cell = SLSTM(8, 16, num_heads=2)
    assert torch.all(cell.recurrent == 0)
    forget = powerlaw_forget_bias(8)
    assert forget[0] == 5.0 and abs(forget[-1].item() + 7.0) < 1e-5 and torch.all(forget.diff() < 0)
    torch.testing.assert_close(cell.bias[1].detach(), forget.repeat(2))
    assert torch.all(cell.bias[[0, 2, 3]] == 0) and cell.ffn_size == round(1.3 * 16)


# -- RG-LRU / Hawk ---------------------------------------------------------------------------------------------------
def rglru_reference(core, x, h, first: bool):
    """Griffin's RG-LRU (De et al. 2024, eqs. 1-4) step by step, with a^(c r_t) taken as a power, the gates'
    block-diagonal matrices as full ones; `first`: the sequence starts here (input not scaled, the paper's code)."""
    Wa, Wx = torch.block_diag(*core.a_gate.weight), torch.block_diag(*core.input_gate.weight)
    a, outputs = torch.sigmoid(core.Lambda), []
    for t in range(x.shape[1]):
        r = torch.sigmoid(x[:, t] @ Wa + core.a_gate.bias)
        i = torch.sigmoid(x[:, t] @ Wx + core.input_gate.bias)
        a_t = a ** (8 * r)
        scale = 1.0 if first and t == 0 else torch.sqrt(1 - a_t**2)
        h = a_t * h + scale * (i * x[:, t])
        outputs.append(h)
    return torch.stack(outputs, 1)


@pytest.mark.parametrize("block", [True, False])
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
@pytest.mark.parametrize("carried", [False, True], ids=["sequence-start", "carried-state"])
def test_rglru_follows_the_papers_equations(block, scan, carried):
    torch.manual_seed(0)
    cell = RGLRU(3, 4, num_heads=2, rnn_width=6, conv_kernel=3, mlp_factor=2, block=block, scan=scan, chunk=2).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    W = cell.width
    h0 = torch.randn(2, W, dtype=torch.float64) if carried else torch.zeros(2, W, dtype=torch.float64)
    if block:
        tail = torch.randn(2, 2, W, dtype=torch.float64) if carried else torch.zeros(2, 2, W, dtype=torch.float64)
        out, (h, tail_out) = cell(x, (h0, tail) if carried else None)
        u = cell.embed(x)
        v = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-6) * cell.norm.weight
        y = F.gelu(cell.linear_y(v))
        window = torch.cat([tail, cell.linear_x(v)], 1)
        w = cell.conv.weight[:, 0, :]
        conv = torch.stack([(window[:, t : t + 3] * w.T).sum(1) for t in range(5)], 1) + cell.conv.bias
        hs = rglru_reference(cell.rglru, conv, h0, not carried)
        u = u + cell.linear_out(hs * y)
        m = u * torch.rsqrt(u.pow(2).mean(-1, keepdim=True) + 1e-6) * cell.mlp_norm.weight
        gate, up = cell.mlp_up(m).chunk(2, -1)
        expected = u + cell.mlp_down(F.gelu(gate) * up)
        torch.testing.assert_close(tail_out, window[:, -2:])
    else:
        out, h = cell(x, h0 if carried else None)
        expected = hs = rglru_reference(cell.rglru, cell.embed(x), h0, not carried)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(h, hs[:, -1])


def test_rglru_initialisation_is_the_papers_code():
    torch.manual_seed(0)
    cell = RGLRU(8, 48, num_heads=4)
    a = torch.sigmoid(cell.rglru.Lambda.detach())
    assert cell.width == 64 and a.shape == (64,)  # 4/3 x 48
    assert 0.9 <= a.min() and a.max() <= 0.999
    wide = RGLRU(8, 48, num_heads=4, rnn_width=4000).rglru
    a2 = torch.sigmoid(wide.Lambda.detach()) ** 2
    assert abs(a2.mean().item() - (0.81 + 0.998001) / 2) < 0.01  # uniform in area: a^2 uniform
    assert abs(wide.a_gate.weight.std().item() - 1 / math.sqrt(1000)) < 0.002
    assert torch.all(cell.conv.bias == 0) and cell.conv.weight.std() < 0.1


def test_rglru_sqrt_gradient_is_bounded_near_a_equal_one():
    """r_t -> 0 makes a_t -> 1 and d sqrt(1 - a_t^2) unbounded: the gradient stays finite and capped."""
    from src.models.cells.rglru import BoundedSqrt

    x = torch.tensor([0.0, 1e-12, 0.25], requires_grad=True)
    BoundedSqrt.apply(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1000.0, 1000.0, 1.0]))


# -- attention ------------------------------------------------------------------------------------------------------
def attention_reference(cell, x, k_cache, v_cache):
    """Causal attention with RoPE (Su et al. 2021, eq. 34: each pair of dimensions as a complex number turned by
    e^{i p theta_j}, theta_j = base^(-2j/d)), at absolute positions: the cache's steps 0..S-1, x's S..S+T-1;
    softmax written out; the window, when set, keeps the last `window` positions."""
    B, T, _ = x.shape
    NH, d = cell.num_heads, cell.head_size
    q, k, v = (t.unflatten(-1, (NH, d)).transpose(1, 2) for t in cell.qkv(x).chunk(3, -1))
    k, v = torch.cat([k_cache, k], 2), torch.cat([v_cache, v], 2)
    S = k_cache.shape[2]
    theta = cell.rope_base ** (-torch.arange(d // 2, dtype=x.dtype) * 2 / d)

    def turn(t, positions):
        z = torch.complex(t[..., : d // 2], t[..., d // 2 :]) * torch.exp(1j * positions[:, None] * theta)
        return torch.cat([z.real, z.imag], -1)

    q, k = turn(q, torch.arange(S, S + T, dtype=x.dtype)), turn(k, torch.arange(S + T, dtype=x.dtype))
    outputs = []
    for t in range(T):
        p = S + t
        seen = [s for s in range(p + 1) if cell.window is None or s > p - cell.window]
        scores = torch.stack([(q[:, :, t] * k[:, :, s]).sum(-1) for s in seen], -1) / math.sqrt(d)
        weights = torch.exp(scores - scores.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        outputs.append(sum(weights[..., j, None] * v[:, :, s] for j, s in enumerate(seen)))
    return cell.out(torch.stack(outputs, 2).transpose(1, 2).flatten(-2))


@pytest.mark.parametrize("window", [None, 3])
@pytest.mark.parametrize("block", [True, False])
def test_attention_follows_the_equations(window, block):
    torch.manual_seed(0)
    cell = Attention(3, 4, num_heads=2, mlp_factor=2, window=window, block=block).double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    cache = torch.randn(2, 2, 4, 2, dtype=torch.float64), torch.randn(2, 2, 4, 2, dtype=torch.float64)
    if window is not None:  # a windowed cell carries window - 1 steps
        cache = tuple(c[:, :, -(window - 1) :] for c in cache)
    out, (k, v) = cell(x, cache)
    if block:
        u = cell.embed(x)
        u = u + attention_reference(cell, F.layer_norm(u, (4,), cell.norm.weight, cell.norm.bias), *cache)
        m = F.layer_norm(u, (4,), cell.mlp_norm.weight, cell.mlp_norm.bias)
        expected = u + cell.mlp_down(F.gelu(cell.mlp_up(m)))
    else:
        expected = attention_reference(cell, x, *cache)
    torch.testing.assert_close(out, expected)
    assert k.shape[2] == (4 + 5 if window is None else window - 1)


def test_attention_cache_grows_and_a_window_bounds_it():
    x = torch.randn(2, 7, 3)
    _, (k, v) = Attention(3, 4, num_heads=2)(x)
    assert k.shape == v.shape == (2, 2, 7, 2)
    _, (k, _) = Attention(3, 4, num_heads=2, window=1)(x)  # attends to itself only: nothing to carry
    assert k.shape[2] == 0


# -- settings --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "cell,settings,fragment",
    [
        (LRU, {"r_min": 0.99, "r_max": 0.9}, "cell.r_min=0.99, cell.r_max=0.9"),
        (LRU, {"r_max": 1.0}, "r_max < 1"),
        (LRU, {"max_phase": 0}, "cell.max_phase=0"),
        (LRU, {"scan": "fast"}, "cell.scan='fast' must be one of auto, parallel, sequential"),
        (LRU, {"chunk": 0}, "cell.chunk=0"),
        (LRU, {"block": "yes"}, "cell.block='yes' must be true or false"),
        (LRU, {"state_size": 0}, "cell.state_size=0"),
        (Mamba, {"dt_min": 0.5, "dt_max": 0.1}, "cell.dt_min=0.5, cell.dt_max=0.1"),
        (Mamba, {"dt_rank": 0}, "cell.dt_rank=0"),
        (Mamba, {"expand": 1.5}, "cell.expand=1.5"),
        (Mamba, {"conv_kernel": 0}, "cell.conv_kernel=0"),
        (Mamba, {"dt_init_floor": 0.0}, "cell.dt_init_floor=0.0"),
        (Mamba, {"scan": "fast"}, "cell.scan='fast'"),
        (MLSTM, {"num_heads": 3}, "cell.num_heads=3 must divide the memory's width 256"),
        (MLSTM, {"qkv_blocksize": 3}, "cell.qkv_blocksize=3"),
        (MLSTM, {"proj_factor": 0}, "cell.proj_factor=0"),
        (MLSTM, {"chunk": -1}, "cell.chunk=-1"),
        (SLSTM, {"num_heads": 5}, "cell.num_heads=5 must divide cell.hidden_size=128"),
        (SLSTM, {"ffn_factor": 0}, "cell.ffn_factor=0"),
        (SLSTM, {"block": 1}, "cell.block=1"),
        (RGLRU, {"a_min": 0.999, "a_max": 0.9}, "cell.a_min=0.999, cell.a_max=0.9"),
        (RGLRU, {"rnn_width": 10}, "cell.num_heads=4 must divide the recurrence's width 10"),
        (RGLRU, {"mlp_factor": 0}, "cell.mlp_factor=0"),
        (RGLRU, {"scan": "fast"}, "cell.scan='fast'"),
        (Attention, {"num_heads": 3}, "cell.num_heads=3 must divide cell.hidden_size=128"),
        (Attention, {"num_heads": 128}, "heads of an even size"),
        (Attention, {"window": 0}, "cell.window=0"),
        (Attention, {"rope_base": 1.0}, "cell.rope_base=1.0"),
    ],
)
def test_bad_settings_are_config_errors(cell, settings, fragment):
    with pytest.raises(ConfigError) as err:
        RecurrentStack(functools.partial(cell, **settings), input_size=3)
    assert fragment in str(err.value)


# -- through src.train ------------------------------------------------------------------------------------------------
TRAINED = ["lru", "mamba", "mlstm", "slstm", "rglru", "attention"]


CORPUS = "\n".join(f"the cat sat on the mat number {i % 7} and the dog ran" for i in range(300))


@pytest.mark.parametrize("name", TRAINED)
def test_each_cells_state_is_carried_across_batches(cfg_factory, tmp_path, name):
    """A language model evaluated in windows of 5 steps, its state carried from batch to batch, has the loss of one
    pass over whole rows; and under truncation.carry_across_batches a batch's final state goes to the next batch of
    the same size and not to one of another size, recognised by the state's batch dimension whatever the cell's
    state shape (LRU's [B, N, 2] and Mamba's [B, E*D, N] lead with the batch like every layered cell's state)."""
    from hydra.utils import instantiate

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    cfg = cfg_factory(
        "dataset=lm_text",
        f"dataset.path={corpus}",
        "dataset.bptt=5",
        "dataset.eval_batch_size=3",
        "truncation=tbptt",
        "truncation.carry_across_batches=true",
        f"cell={name}",
        "cell.hidden_size=8",
        "trainer.max_epochs=0",
        "callbacks=none",
    )
    dm = instantiate(cfg.dataset)
    dm.setup()
    update = Truncated(OmegaConf.to_container(cfg.truncation))
    model = instantiate(cfg.task, spec=dm.spec, update=update, _convert_="object")  # as src.train
    trainer = instantiate(cfg.trainer, logger=False)
    windowed = trainer.validate(model, datamodule=dm, verbose=False)[0]["val/loss"]
    loader = dm.val_dataloader()
    with torch.no_grad():
        logits = model.head(model.encode(loader.x)[0], None)
    whole = F.cross_entropy(logits.flatten(0, 1), loader.y.flatten())
    assert windowed == pytest.approx(float(whole), rel=1e-5)

    _, state = model.encode(torch.randint(0, 4, (3, 5)), None, None)
    update.state = state  # what the truncated update keeps after a training batch
    assert update.carried_state(3) is not None
    assert update.carried_state(2) is None


@pytest.mark.parametrize("name", TRAINED)
def test_language_model_generates_from_its_checkpoint(cfg_factory, tmp_path, name):
    """Generation steps the cell one token at a time, carrying its state (the KV cache for attention) from the
    prompt's pass: src.generate with a checkpoint of each cell, deterministic for a seed."""
    from src.generate import generate, load_language_model

    corpus = tmp_path / "corpus.txt"
    corpus.write_text(CORPUS, encoding="utf-8")
    out = tmp_path / "lm"
    record = train(
        cfg_factory(
            "dataset=lm_text",
            f"dataset.path={corpus}",
            "dataset.level=word",
            "dataset.bptt=12",
            "debug=limit",
            "trainer.max_epochs=1",
            "callbacks=default",
            f"cell={name}",
            "cell.hidden_size=8",
            out=out,
        )
    )
    assert record["status"] == "ok", record
    model = load_language_model(out / "checkpoints" / "best.ckpt")
    text = generate(model, prompt="the cat", length=6, seed=1)
    assert text.startswith("the cat") and len(text) > len("the cat")  # (a drawn end-of-line detokenizes to a newline)
    assert text == generate(model, prompt="the cat", length=6, seed=1)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_step_by_step_trace_equals_the_stack(name):
    """The gradient diagnostics step each cell through forward(x[:, t:t+1], state) (src/models/trace.py): the
    outputs equal one pass of the stack, and the gradient reaches the traced nodes."""
    from src.models.trace import trace_stack

    torch.manual_seed(0)
    stack = RecurrentStack(functools.partial(SMALL[name], scan="parallel"), input_size=3, depth=2).eval()
    x = torch.randn(2, 6, 3, requires_grad=True)
    outputs, traces = trace_stack(stack, x)
    torch.testing.assert_close(outputs, stack(x)[0], rtol=1e-5, atol=1e-5)
    grads = torch.autograd.grad(outputs[:, -1].sum(), traces[0].outputs, allow_unused=True)
    assert grads[0] is not None and torch.isfinite(grads[0]).all()


@pytest.mark.parametrize("name", TRAINED)
def test_train_debug_limit(cfg_factory, name):
    """`python -m src.train cell=<name> debug=limit`: two epochs of a few batches, checkpoints, the test split."""
    record = train(cfg_factory(f"cell={name}", "debug=limit", "cell.hidden_size=16"))
    assert record["status"] == "ok" and 0.0 <= record["test/acc"] <= 1.0 and record["cell"] == name
