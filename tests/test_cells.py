"""The cell zoo: reference equality with torch and TensorFlow's equations, parallel scan = recurrence, gradients
(gradcheck), what each Greff variant removes, truncation-safe state, settings checked, and that every cell
learns and runs end to end."""

from __future__ import annotations

import functools
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from src.common.errors import ConfigError
from src.models.cells.base import time_loop
from src.models.cells.fused import FusedRNN
from src.models.cells.greff import VARIANTS, LSTMVariant
from src.models.cells.gru import GRURef, GRUv1
from src.models.cells.indrnn import IndRNN
from src.models.cells.lstm import CIFGLSTM, LSTMP, LSTMTF, LayerNormLSTM, LSTMRef, PeepholeLSTM
from src.models.cells.minimal import MinimalRNN
from src.models.cells.minrnn import MinGRU, MinLSTM
from src.models.stack import RecurrentStack, check_cell_settings, detach_state
from src.train import train
from tests.conftest import CACHE, CONF, as_tuple, assert_cell_gradcheck, run_cli

FUSED = {"rnn", "rnn_relu", "lstm", "gru"}
NEW_CELLS = sorted(p.stem for p in (CONF / "cell").glob("*.yaml") if p.stem not in FUSED)
# Every layered cell configuration: each config, and each Greff variant separately.
LAYERED = [c for c in NEW_CELLS if c != "lstm_variant"] + [f"lstm_variant:{v}" for v in VARIANTS]


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: a second thread only adds synchronisation, which on a busy 2-core machine costs
    more than the work (a fused GRU fast_dev_run: ~1 s with one thread, 10-20 s with two under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cell_factory(name: str, hidden: int, jit=None, **settings):
    """What Hydra gives the stack for conf/cell/<name>.yaml, at a test-sized hidden size; `jit` where the cell
    has that setting."""
    base, _, variant = name.partition(":")
    cfg = OmegaConf.load(CONF / "cell" / f"{base}.yaml")
    cfg.hidden_size = hidden
    if jit is not None and "jit" in cfg:
        cfg.jit = jit
    if "proj_size" in cfg:
        cfg.proj_size = max(1, hidden // 2)
    if "num_heads" in cfg and hidden % (2 * cfg.num_heads):  # heads divide the width, attention's in even sizes
        cfg.num_heads = 1
    if variant:
        cfg.variant = variant
    return instantiate(OmegaConf.merge(cfg, settings))


# -- the reference path equals torch ----------------------------------------------------------------------------
def copy_torch_weights(stack: RecurrentStack, ref: nn.Module) -> None:
    with torch.no_grad():
        for layer, cells in enumerate(stack.layers):
            for direction, cell in enumerate(cells):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                for mine, theirs in (
                    ("weight_ih", "weight_ih"),
                    ("weight_hh", "weight_hh"),
                    ("bias_ih", "bias_ih"),
                    ("bias_hh", "bias_hh"),
                    ("weight_hr", "weight_hr"),
                ):
                    if hasattr(cell, mine) and getattr(cell, mine) is not None:
                        getattr(cell, mine).copy_(getattr(ref, theirs + suffix))
                bias_ih, bias_hh = getattr(ref, f"bias_ih{suffix}"), getattr(ref, f"bias_hh{suffix}")
                if isinstance(cell, LSTMRef):  # torch's two biases kept apart: `bias` is bias_ih
                    cell.bias.copy_(bias_ih)
                elif isinstance(cell, LSTMP):  # one bias: their sum
                    cell.bias.copy_(bias_ih + bias_hh)


def torch_state_as_stack(state, depth: int, directions: int):
    """torch's [layers * directions, B, H] (or a tuple of those) -> the stack's [layer][direction] layout."""

    def one(i: int):
        return tuple(p[i] for p in state) if isinstance(state, tuple) else state[i]

    return [[one(layer * directions + d) for d in range(directions)] for layer in range(depth)]


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize(
    "name,torch_rnn,jit",
    [
        ("lstm_ref", nn.LSTM, True),
        ("lstm_ref", nn.LSTM, False),
        ("gru_ref", nn.GRU, True),
        ("gru_ref", nn.GRU, False),
        ("lstmp", nn.LSTM, True),
    ],
)
def test_reference_cells_equal_torch(name, torch_rnn, jit, bidirectional):
    """Outputs, final states and every gradient (weights, input, initial state) equal torch's to 1e-5, depth 2.
    lstmp with forget_bias=0 is torch's LSTM(proj_size=...)."""
    torch.manual_seed(0)
    depth, directions, B, T, I, H = 2, 1 + bidirectional, 3, 7, 5, 6
    extra = {"proj_size": 4} if name == "lstmp" else {}
    ref = torch_rnn(I, H, num_layers=depth, bidirectional=bidirectional, batch_first=True, **extra)
    settings = {"forget_bias": 0.0, "proj_size": 4} if name == "lstmp" else {}
    stack = RecurrentStack(
        cell_factory(name, H, jit=jit, **settings), input_size=I, depth=depth, bidirectional=bidirectional
    )
    copy_torch_weights(stack, ref)
    x = torch.randn(B, T, I, requires_grad=True)
    h_size = extra.get("proj_size", H)
    h0 = torch.randn(depth * directions, B, h_size, requires_grad=True)
    c0 = torch.randn(depth * directions, B, H, requires_grad=True)
    ref_state0 = (h0, c0) if torch_rnn is nn.LSTM else h0

    out, state = stack(x, state=torch_state_as_stack(ref_state0, depth, directions))
    ref_out, ref_state = ref(x, ref_state0)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for layer in range(depth):
        for d in range(directions):
            for mine, theirs in zip(as_tuple(state[layer][d]), as_tuple(ref_state)):
                torch.testing.assert_close(mine, theirs[layer * directions + d], rtol=1e-5, atol=1e-5)

    weights = torch.randn_like(out)  # a loss that weighs every output differently, plus the final states
    final_states = [s for layer_state in state for cell_state in layer_state for s in as_tuple(cell_state)]
    mine_grads = torch.autograd.grad(
        (out * weights).sum() + sum(s.sum() for s in final_states),
        [x, h0, c0] + list(stack.parameters()),
        allow_unused=True,
    )
    theirs_grads = torch.autograd.grad(
        (ref_out * weights).sum() + sum(s.sum() for s in as_tuple(ref_state)),
        [x, h0, c0] + list(ref.parameters()),
        allow_unused=True,
    )
    for a, b in zip(mine_grads[:3], theirs_grads[:3]):
        if b is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    ref_grads = dict(zip((n for n, _ in ref.named_parameters()), theirs_grads[3:]))
    for (pname, _), grad in zip(stack.named_parameters(), mine_grads[3:]):
        _, layer, d, attr = pname.split(".")  # layers.<layer>.<direction>.<name>
        suffix = f"_l{layer}" + ("_reverse" if d == "1" else "")
        theirs = {"bias": "bias_ih"}.get(attr, attr)  # the grad of a sum of two biases is the grad of each
        torch.testing.assert_close(grad, ref_grads[theirs + suffix], rtol=1e-5, atol=1e-5, msg=pname)


# -- lstm_tf equals TensorFlow's LSTMCell step -------------------------------------------------------------------
def tf_lstm_cell_step(x, c, h, kernel, bias, forget_bias):
    """TensorFlow's BasicLSTMCell/LSTMCell step (no peepholes, no projection), in NumPy float64:
    gates = [x, h] @ kernel + bias, split into i, j, f, o; forget_bias added to f."""
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    i, j, f, o = np.split(np.concatenate([x, h], 1) @ kernel + bias, 4, axis=1)
    c = c * sigmoid(f + forget_bias) + sigmoid(i) * np.tanh(j)
    return c, np.tanh(c) * sigmoid(o)


@pytest.mark.parametrize("forget_bias", [1.0, 0.3])
def test_lstm_tf_equals_numpy_tensorflow_step(forget_bias):
    torch.manual_seed(0)
    B, T, I, H = 4, 6, 3, 5
    cell = LSTMTF(I, H, forget_bias=forget_bias)
    with torch.no_grad():
        cell.bias.uniform_(-0.5, 0.5)  # TF starts the bias at zero; a zero bias would not test its layout
    x, h0, c0 = torch.randn(B, T, I), torch.randn(B, H), torch.randn(B, H)
    out, (h, c) = cell(x, (h0, c0))

    kernel, bias = cell.kernel.detach().double().numpy(), cell.bias.detach().double().numpy()
    c_np, h_np, outs = c0.double().numpy(), h0.double().numpy(), []
    for t in range(T):
        c_np, h_np = tf_lstm_cell_step(x[:, t].double().numpy(), c_np, h_np, kernel, bias, forget_bias)
        outs.append(h_np)
    np.testing.assert_allclose(out.detach().numpy(), np.stack(outs, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h.detach().numpy(), h_np, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c.detach().numpy(), c_np, rtol=1e-5, atol=1e-6)


# -- minGRU / minLSTM ---------------------------------------------------------------------------------------------
def g(v: torch.Tensor) -> torch.Tensor:
    return torch.where(v >= 0, v + 0.5, torch.sigmoid(v))


def scan_both_ways(cls, dtype: torch.dtype, carried: bool, block: bool):
    torch.manual_seed(0)
    parallel = cls(5, 8, block=block, scan="parallel").to(dtype)
    sequential = cls(5, 8, block=block, scan="sequential").to(dtype)
    sequential.load_state_dict(parallel.state_dict())
    x = torch.randn(4, 50, 5, dtype=dtype, requires_grad=True)
    # a carried state is what the cell made: positive
    h0 = torch.rand(4, parallel.state_size, dtype=dtype) if carried else None
    results = []
    for cell in (parallel, sequential):
        out, h = cell(x, h0)
        loss = (out * torch.linspace(-1, 1, 8, dtype=dtype)).sum() + h.sum()
        results.append((out, h, torch.autograd.grad(loss, [x, *cell.parameters()])))
    return results


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("carried", [False, True], ids=["zero-state", "carried-state"])
@pytest.mark.parametrize("block", [False, True], ids=["bare", "block"])
def test_parallel_scan_equals_sequential_recurrence(cls, carried, block):
    """Outputs and final state in float32 to 1e-5 at T=50 (the scan's float32 error grows with T: minrnn.py; the
    block's projections and residual add their rounding, hence its absolute 1e-5); gradients in float64, where the
    two algorithms must agree to rounding."""
    (out_p, h_p, _), (out_s, h_s, _) = scan_both_ways(cls, torch.float32, carried, block)
    atol = 1e-5 if block else 1e-6
    torch.testing.assert_close(out_p, out_s, rtol=1e-5, atol=atol)
    torch.testing.assert_close(h_p, h_s, rtol=1e-5, atol=atol)
    (_, _, grads_p), (_, _, grads_s) = scan_both_ways(cls, torch.float64, carried, block)
    for a, b in zip(grads_p, grads_s):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def min_recurrence(cls, k: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Feng et al.'s equations, one step, from the linear map's output k."""
    if cls is MinGRU:
        k_z, k_h = k.chunk(2, -1)
        z = torch.sigmoid(k_z)
        return (1 - z) * h + z * g(k_h)
    k_f, k_i, k_h = k.chunk(3, -1)
    f, i = torch.sigmoid(k_f), torch.sigmoid(k_i)
    return f / (f + i) * h + i / (f + i) * g(k_h)


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
def test_min_cells_follow_the_papers_equations(cls, scan):
    """The bare cell (block=false) against the equations of Feng et al. written out here, in float64, with a
    carried state."""
    torch.manual_seed(0)
    cell = cls(3, 4, block=False, scan=scan).double()
    x, h = torch.randn(2, 6, 3, dtype=torch.float64), torch.rand(2, 4, dtype=torch.float64)
    out, _ = cell(x, h)
    expected = []
    for t in range(6):
        h = min_recurrence(cls, cell.linear(x[:, t]), h)
        expected.append(h)
    torch.testing.assert_close(out, torch.stack(expected, 1))


def rms_norm(v: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return v / torch.sqrt((v * v).mean(-1, keepdim=True) + eps) * weight


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
@pytest.mark.parametrize("scan", ["parallel", "sequential"])
@pytest.mark.parametrize("mlp_factor", [4, 0])
def test_min_cell_block_written_out(cls, scan, mlp_factor):
    """The default block, written out step by step in float64 from a carried state: u = W_e x, then
    u + W_down minrnn(RMSNorm(u)) (a bias on the gates' pre-activations only), then + MLP(RMSNorm(.)) (GELU); the
    state is the recurrence's h (width 1.5 H)."""
    torch.manual_seed(0)
    cell = cls(3, 4, mlp_factor=mlp_factor, scan=scan).double()
    with torch.no_grad():  # move the norms' gains off their initial ones, so a missing gain would show
        for p in cell.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert cell.state_size == 6
    x, h = torch.randn(2, 6, 3, dtype=torch.float64), torch.rand(2, 6, dtype=torch.float64)
    out, state = cell(x, h)
    expected = []
    for t in range(6):
        u = x[:, t] @ cell.embed.weight.T + cell.embed.bias
        k = rms_norm(u, cell.norm.weight, torch.finfo(torch.float64).eps) @ cell.linear.weight.T
        k = k + torch.cat([cell.gate_bias, torch.zeros(cell.state_size, dtype=k.dtype)])  # the gates' bias only
        h = min_recurrence(cls, k, h)
        u = u + h @ cell.down.weight.T
        if mlp_factor:
            first, second = cell.mlp[0], cell.mlp[2]
            hidden = nn.functional.gelu(
                rms_norm(u, cell.mlp_norm.weight, torch.finfo(torch.float64).eps) @ first.weight.T + first.bias
            )
            u = u + hidden @ second.weight.T + second.bias
        expected.append(u)
    torch.testing.assert_close(out, torch.stack(expected, 1))
    torch.testing.assert_close(state, h)


def test_min_cell_block_settings_are_checked():
    for settings, fragment in [
        ({"expansion": 0}, "cell.expansion=0.0 must be positive"),
        ({"mlp_factor": -1}, "cell.mlp_factor=-1"),
        ({"block": "yes"}, "cell.block='yes'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            MinGRU(3, 4, **settings)


def test_auto_settings_choose_by_device():
    """scan=auto and jit=auto pick what measured faster on the device: on CPU the step loop, eager PyTorch."""
    cpu = torch.zeros(1, 5, 2)
    assert not MinGRU(2, 3).uses_parallel_scan(cpu)
    assert MinGRU(2, 3, scan="parallel").uses_parallel_scan(cpu)
    assert not MinGRU(2, 3, scan="parallel").uses_parallel_scan(torch.zeros(1, 1, 2))  # one step: no scan
    assert time_loop(identity_loop, "auto", cpu) is identity_loop
    assert time_loop(identity_loop, True, cpu) is not identity_loop  # compiled
    with torch.no_grad():  # evaluation always runs the plain function
        assert time_loop(identity_loop, True, cpu) is identity_loop


def identity_loop(x: torch.Tensor) -> torch.Tensor:
    return x


# -- gradients ------------------------------------------------------------------------------------------------------
GRADCHECK = {
    "minimal": lambda: MinimalRNN(3, 2),
    "lstm_ref": lambda: LSTMRef(3, 2),
    "lstm_tf": lambda: LSTMTF(3, 2),
    "peephole_lstm": lambda: PeepholeLSTM(3, 2, cell_clip=50.0),
    "lstmp": lambda: LSTMP(3, 3, proj_size=2),
    "layernorm_lstm": lambda: LayerNormLSTM(3, 2),
    "cifg_lstm": lambda: CIFGLSTM(3, 2),
    "gru_ref": lambda: GRURef(3, 2),
    "gru_v1": lambda: GRUv1(3, 2),
    "indrnn": lambda: IndRNN(3, 2),
    **{
        f"{name}:{'block' if block else 'bare'}:{scan}": functools.partial(cls, 3, 2, block=block, scan=scan)
        for name, cls in [("mingru", MinGRU), ("minlstm", MinLSTM)]
        for block in (True, False)
        for scan in ("parallel", "sequential")
    },
    **{f"lstm_variant:{v}": functools.partial(LSTMVariant, 3, 2, variant=v) for v in VARIANTS},
}


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_gradcheck_float64(name):
    """Analytic gradients (what autograd derives through the time loop or the scan) equal numerical ones, with
    respect to the input, the initial state and every parameter. (The TorchScript loops equal these: below.)"""
    torch.manual_seed(0)
    cell = GRADCHECK[name]().double()
    x = torch.randn(2, 4, 3, dtype=torch.float64, requires_grad=True)
    _, state = cell(x)  # a state of the right shapes, made independent leaves
    state = tuple(torch.rand_like(s).requires_grad_() for s in as_tuple(state))
    assert_cell_gradcheck(cell, x, state)


JIT_CELLS = [c for c in LAYERED if "jit" in OmegaConf.load(CONF / "cell" / f"{c.split(':')[0]}.yaml")]


@pytest.mark.parametrize("name", JIT_CELLS)
def test_torchscript_loop_equals_eager(name):
    """jit=true runs the same step code compiled by TorchScript: outputs, final state and gradients equal the
    eager run's (float64, to rounding), also after TorchScript has optimised the loop (3rd call on)."""
    torch.manual_seed(0)
    eager = RecurrentStack(cell_factory(name, 4, jit=False), input_size=3, depth=2).double()
    script = RecurrentStack(cell_factory(name, 4, jit=True), input_size=3, depth=2).double()
    script.load_state_dict(eager.state_dict())
    for _ in range(3):
        x = torch.randn(2, 5, 3, dtype=torch.float64)
        results = []
        for stack in (eager, script):
            out, state = stack(x)
            loss = (out**2).sum() + sum(s.sum() for layer in state for cell in layer for s in as_tuple(cell))
            results.append((out, torch.autograd.grad(loss, list(stack.parameters()))))
        torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
        for a, b in zip(results[1][1], results[0][1]):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


# -- Greff et al.'s variants remove what they name ------------------------------------------------------------------
def variant(name: str, **kw) -> LSTMVariant:
    torch.manual_seed(0)
    return LSTMVariant(4, 5, variant=name, **kw)


def x_large():
    torch.manual_seed(1)
    return 3 * torch.randn(3, 6, 4)  # large inputs: activations far from their linear range


def recurrent_part(cell: LSTMVariant, x: torch.Tensor, trace: dict, block: int) -> torch.Tensor:
    """The `block`-th gate block's pre-activation W x_t + b + R h_{t-1}, recomputed here from the traced h."""
    H = cell.hidden_size
    h_prev = torch.cat([torch.zeros_like(trace["h"][:, :1]), trace["h"][:, :-1]], 1)
    pre = x @ cell.weight_ih.T + cell.bias + h_prev @ cell.weight_hh.T
    return pre[..., block * H : (block + 1) * H]


def parameter_count(cell: nn.Module) -> int:
    return sum(p.numel() for p in cell.parameters())


def test_vanilla_has_every_part():
    cell, x = variant("V"), x_large()
    t = cell.trace(x)
    for gate in "ifo":
        assert not torch.all(t[gate] == 1), gate
    assert t["z"].abs().max() < 1 and torch.allclose(t["h"], t["o"] * torch.tanh(t["c"]))
    assert all(getattr(cell, f"peephole_{g}") is not None for g in "ifo")
    I, H = 4, 5
    assert parameter_count(cell) == 4 * H * (I + H + 1) + 3 * H


@pytest.mark.parametrize("name,gate", [("NIG", "i"), ("NFG", "f"), ("NOG", "o")])
def test_no_gate_variants_have_that_gate_identically_one(name, gate):
    cell, x = variant(name), x_large()
    t = cell.trace(x)
    assert torch.all(t[gate] == 1)
    assert all(not torch.all(t[other] == 1) for other in "ifo" if other != gate)
    assert getattr(cell, f"peephole_{gate}") is None
    I, H = 4, 5  # one gate block and its peephole fewer than V
    assert parameter_count(cell) == parameter_count(variant("V")) - H * (I + H + 1) - H


def test_niaf_uses_the_raw_input_and_v_squashes_it():
    x = x_large()
    for name, activation in (("NIAF", lambda v: v), ("V", torch.tanh)):
        cell = variant(name)
        t = cell.trace(x)
        # V's blocks: i, f, z, o -> z is block 2
        torch.testing.assert_close(t["z"], activation(recurrent_part(cell, x, t, 2)))
    assert variant("NIAF").trace(x)["z"].abs().max() > 1  # outside tanh's range


def test_noaf_outputs_the_gated_cell_without_tanh():
    t = variant("NOAF").trace(x_large())
    torch.testing.assert_close(t["h"], t["o"] * t["c"])
    assert not torch.allclose(t["h"], t["o"] * torch.tanh(t["c"]))


def test_np_gates_do_not_see_the_cell_and_v_gates_do():
    """Change only the carried cell c_0: with peepholes the first step's gates change, without them they do not."""
    x = x_large()[:, :1]
    h0, c0 = torch.randn(3, 5), torch.randn(3, 5)
    for name, sees_cell in (("NP", False), ("V", True)):
        cell = variant(name)
        a, b = cell.trace(x, (h0, c0)), cell.trace(x, (h0, c0 + 1.0))
        for gate in "ifo":
            assert (not torch.allclose(a[gate], b[gate])) == sees_cell, (name, gate)
    assert all(getattr(variant("NP"), f"peephole_{g}") is None for g in "ifo")
    assert parameter_count(variant("NP")) == parameter_count(variant("V")) - 3 * 5


def test_cifg_forget_gate_is_one_minus_input_gate():
    cell = variant("CIFG")
    t = cell.trace(x_large())
    torch.testing.assert_close(t["f"], 1 - t["i"], rtol=0, atol=0)
    assert cell.peephole_f is None and parameter_count(cell) == parameter_count(variant("NFG"))


def test_fgr_adds_exactly_the_gate_recurrence():
    """FGR's gates see the previous step's gates (nine H x H matrices); with those zeroed it is V."""
    fgr, vanilla, x = variant("FGR"), variant("V"), x_large()
    assert fgr.weight_gates.shape == (15, 15)
    assert parameter_count(fgr) == parameter_count(vanilla) + 9 * 5 * 5
    h0, c0 = torch.randn(3, 5), torch.randn(3, 5)
    a = fgr.trace(x[:, :1], (h0, c0, torch.zeros(3, 15)))
    b = fgr.trace(x[:, :1], (h0, c0, torch.rand(3, 15)))
    for gate in "ifo":
        assert not torch.allclose(a[gate], b[gate]), gate
    with torch.no_grad():
        fgr.weight_gates.zero_()
        for name, p in vanilla.named_parameters():
            p.copy_(getattr(fgr, name))
    torch.testing.assert_close(fgr(x)[0], vanilla(x)[0])


# -- state across chunks (truncated BPTT), padding, the stack --------------------------------------------------------
@pytest.mark.parametrize("name", LAYERED)
def test_chunks_with_carried_state_equal_one_pass(name):
    """Running a sequence in two chunks, carrying the (detached) state, gives the outputs of one pass: what
    truncated BPTT relies on. Depth 2, both directions built; checked on the forward direction."""
    torch.manual_seed(0)
    stack = RecurrentStack(cell_factory(name, 6), input_size=3, depth=2).eval()
    x = torch.randn(2, 9, 3)
    whole, _ = stack(x)
    first, state = stack(x[:, :4])
    second, _ = stack(x[:, 4:], state=detach_state(state))
    torch.testing.assert_close(torch.cat([first, second], 1), whole, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LAYERED)
def test_bidirectional_depth2_with_padding_runs_and_ignores_padding(name):
    torch.manual_seed(0)
    stack = RecurrentStack(cell_factory(name, 6), input_size=3, depth=2, bidirectional=True).eval()
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 3)
    x[torch.arange(5)[None, :] >= lengths[:, None]] = 50.0  # garbage in the padding must not leak
    out, _ = stack(x, lengths)
    assert out.shape == (3, 5, 2 * stack.layers[0][0].output_size) and torch.isfinite(out).all()
    alone, _ = stack(x[1:2, :2])
    torch.testing.assert_close(out[1, :2], alone[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LAYERED)
def test_evaluation_in_inference_mode_after_training_steps(name):
    """Lightning evaluates under torch.inference_mode after training steps: the order that once broke the
    TorchScript loops (optimised for training, they tried to save inference tensors for backward)."""
    torch.manual_seed(0)
    stack = RecurrentStack(cell_factory(name, 4, jit=True), input_size=3, depth=2, bidirectional=True)
    for _ in range(2):
        stack(torch.randn(5, 6, 3))[0].sum().backward()
    with torch.inference_mode():
        out, _ = stack(torch.randn(7, 6, 3))
    assert out.shape == (7, 6, 2 * stack.layers[0][0].output_size)


# -- settings: an unknown or bad one is a ConfigError that names it ------------------------------------------------
def test_unknown_cell_setting_names_the_key_the_cell_and_the_allowed_settings():
    with pytest.raises(ConfigError) as err:
        check_cell_settings(functools.partial(PeepholeLSTM, hidden_size=8, proj_size=4))
    message = str(err.value)
    assert "cell.proj_size=4" in message and "PeepholeLSTM" in message
    assert "hidden_size, forget_bias, cell_clip, jit" in message
    with pytest.raises(ConfigError, match="forget_bias"):  # the fused cells are checked too
        RecurrentStack(functools.partial(FusedRNN, mode="lstm", hidden_size=4, forget_bias=1.0), input_size=3)
    with pytest.raises(ConfigError, match="depth="):  # a setting the stack owns
        check_cell_settings(functools.partial(LSTMRef, hidden_size=8, num_layers=2))


@pytest.mark.parametrize(
    "cell,settings,fragment",
    [
        (LSTMVariant, {"variant": "NXG"}, "NFG: no forget gate"),
        (LSTMP, {"proj_size": 16, "hidden_size": 8}, "smaller than cell.hidden_size=8"),
        (LSTMRef, {"proj_clip": 1.0}, None),
        (PeepholeLSTM, {"cell_clip": -1.0}, "cell.cell_clip=-1.0 must be a positive number"),
        (IndRNN, {"recurrent_max": 0}, "cell.recurrent_max=0"),
        (MinGRU, {"scan": "fast"}, "auto, parallel, sequential"),
        (LSTMTF, {"jit": "yes"}, "cell.jit='yes' must be auto"),
        (GRUv1, {"hidden_size": 0}, "cell.hidden_size=0"),
    ],
)
def test_bad_cell_values_are_config_errors(cell, settings, fragment):
    with pytest.raises((ConfigError, TypeError)) as err:
        RecurrentStack(functools.partial(cell, **settings), input_size=3)
    assert isinstance(err.value, ConfigError)
    if fragment:
        assert fragment in str(err.value)


def test_cli_unknown_cell_setting_is_one_message_exit_2(tmp_path):
    done = run_cli("cell=lstm_tf", "+cell.cell_clip=3", "logger=none", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cell.cell_clip=3" in done.stderr and "LSTMTF" in done.stderr and "forget_bias" in done.stderr
    assert "Traceback" not in done.stderr


# -- every cell learns, and runs end to end -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def smnist5k():
    from src.data.mnist import MNIST5k

    data = MNIST5k(cache_dir=str(CACHE))
    data.prepare_data()
    data.setup()
    return data.splits["train"], data.splits["test"]


# Cells without gates, and the min cells, whose gates read only x, learn more slowly from the same start.
SLOW_STARTERS = {"minimal", "indrnn", "mingru", "minlstm"}


@pytest.mark.parametrize("name", LAYERED)
def test_every_cell_learns_smnist5k(name, smnist5k):
    """A plain loop (no Lightning: seconds, not minutes): hidden 32, batches of 64, Adam lr 1e-2, 60 steps (150
    for the slow starters), then the 500 test digits. Chance is 0.10 (1 sd on 500 digits: 0.013); the weakest
    cell measured 0.55 at these settings, the slow starters 0.60-0.66. 0.40 is 4x chance, far out of reach of
    a cell that does not learn or does not carry information through time, with margin for other machines."""
    (x_train, _, y_train), (x_test, _, y_test) = smnist5k
    torch.manual_seed(0)
    stack = RecurrentStack(cell_factory(name, 32), input_size=28)
    head = nn.Linear(stack.output_size, 10)
    optimizer = torch.optim.Adam([*stack.parameters(), *head.parameters()], lr=1e-2)
    batches = torch.Generator().manual_seed(0)
    for _ in range(150 if name in SLOW_STARTERS else 60):
        idx = torch.randint(len(x_train), (64,), generator=batches)
        loss = nn.functional.cross_entropy(head(stack(x_train[idx])[0][:, -1]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (head(stack(x_test)[0][:, -1]).argmax(1) == y_test).float().mean().item()
    assert accuracy >= 0.40, (name, accuracy)


@pytest.mark.parametrize("cls", [MinGRU, MinLSTM])
def test_min_cells_need_their_block_to_start_learning(cls, smnist5k):
    """The one-epoch budget of the default recipe (32 Adam steps at 2e-3, batch 128), hidden 64, a linear head on
    the last step, seed 0: the bare recurrence at torch's initialisation stays at chance (the digits end in blank
    rows, where a bare min cell's gates are its biases alone; docs/cells.md), the default block does not (measured 0.34 minGRU, 0.40
    minLSTM; bare 0.10 both). 0.25 is 2.5x chance, about 11 sd of 500 test digits above it."""
    (x_train, _, y_train), (x_test, _, y_test) = smnist5k
    accuracy = {}
    for block in (False, True):
        torch.manual_seed(0)
        # The bare cell at torch's initialisation (forget_bias=None): the gates' bias alone decides what it keeps.
        settings = {} if block else {"forget_bias": None}
        stack = RecurrentStack(functools.partial(cls, hidden_size=64, block=block, **settings), input_size=28)
        head = nn.Linear(stack.output_size, 10)
        optimizer = torch.optim.Adam([*stack.parameters(), *head.parameters()], lr=2e-3)
        batches = torch.Generator().manual_seed(0)
        for _ in range(32):
            idx = torch.randint(len(x_train), (128,), generator=batches)
            loss = nn.functional.cross_entropy(head(stack(x_train[idx])[0][:, -1]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            accuracy[block] = (head(stack(x_test)[0][:, -1]).argmax(1) == y_test).float().mean().item()
    assert accuracy[False] < 0.15 and accuracy[True] >= 0.25, accuracy


@pytest.mark.parametrize("name", NEW_CELLS + ["lstm_variant:FGR"])
def test_fast_dev_run_bi_depth2(cfg_factory, name):
    """Through src.train as a user runs it: each new cell, bidirectional, two layers (FGR: a 3-part state)."""
    base, _, var = name.partition(":")
    overrides = ["debug=fdr", f"cell={base}", "direction=bi", "depth=2", "cell.hidden_size=8"]
    overrides += ["cell.proj_size=4"] if base == "lstmp" else []
    overrides += [f"cell.variant={var}"] if var else []
    record = train(cfg_factory(*overrides))
    assert record["status"] == "ok" and 0.0 <= record["test/acc"] <= 1.0
    assert (record["cell"], record["direction"], record["depth"]) == (base, "bi", 2)


def test_cells_benchmark_writes_its_table_and_ends_with_json(tmp_path, monkeypatch, capsys):
    """A smoke run of `python -m src.bench cells` at toy settings (the real numbers are in benchmarks/)."""
    import json

    from src.bench import cells as bench

    monkeypatch.setattr(bench.report, "write", functools.partial(bench.report.write, out_dir=tmp_path / "benchmarks"))
    assert bench.main(["--quick", "--cells", "minimal", "mingru", "--long-t", "6", "--reps", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["device"] == "cpu" and "mingru_parallel_speedup_over_fused_gru_T6" in summary
    doc = json.loads((tmp_path / "benchmarks" / "cells-cpu-quick-subset.json").read_text())
    assert {r["cell"] for r in doc["rows"]} >= {"lstm", "minimal", "mingru", "gru", "mingru (parallel)"}
    assert (tmp_path / "benchmarks" / "cells-cpu-quick-subset.md").exists()


def test_cells_benchmark_long_batch_and_memory(tmp_path, monkeypatch, capsys):
    """--long-batch sets B of the long-sequence table (and names the file), --memory adds what one forward keeps
    for the backward: it grows with T (the step loop saves every step) and is counted once per storage."""
    import json

    from src.bench import cells as bench

    monkeypatch.setattr(bench.report, "write", functools.partial(bench.report.write, out_dir=tmp_path / "benchmarks"))
    argv = ["--quick", "--cells", "lstm", "--long-cells", "mingru", "--long-t", "8", "32", "--long-batch", "2"]
    assert bench.main([*argv, "--memory", "--reps", "1"]) == 0
    doc = json.loads((tmp_path / "benchmarks" / "cells-cpu-quick-subset-long-b2-t8-32.json").read_text())
    long_rows = {(r["cell"], r["T"]): r for r in doc["rows"] if "vs_fused_gru" in r}
    assert {r["B"] for r in long_rows.values()} == {2}
    short, long = long_rows[("mingru (sequential)", 8)], long_rows[("mingru (sequential)", 32)]
    assert 0 < short["saved_for_backward_mb"] < long["saved_for_backward_mb"]
    x = torch.randn(2, 8, 4, requires_grad=True)
    linear = nn.Linear(4, 4)
    twice = bench.saved_mb(lambda: (linear(x) + linear(x)).sum().backward())
    assert twice == bench.saved_mb(lambda: linear(x).sum().backward())  # x and the weight saved twice, counted once


def test_layernorm_lstm_bias_keeps_blank_rows_from_exploding_the_gradient():
    """Row-by-row MNIST starts and ends with blank rows: zero input from the zero state gives layer norm a constant
    vector, where its Jacobian is scaled by 1/sqrt(eps). Without a bias before the norm (TF's cell) the gradient
    of one batch reached 1e17 (and inf on smnist5k's first update); with the default bias it stays small."""
    torch.manual_seed(0)
    x = torch.rand(16, 28, 28)
    x[:, :5] = 0
    x[:, -5:] = 0
    y = torch.randint(0, 10, (16,))
    largest = {}
    for bias in (True, False):
        torch.manual_seed(1)
        stack = RecurrentStack(functools.partial(LayerNormLSTM, hidden_size=128, bias=bias, jit=False), 28)
        F.cross_entropy(nn.Linear(128, 10)(stack(x)[0][:, -1]), y).backward()
        largest[bias] = max(p.grad.abs().max().item() for p in stack.parameters())
    assert largest[True] < 1e3 and not largest[False] < 1e6, largest
    with pytest.raises(ConfigError, match="cell.bias"):
        LayerNormLSTM(3, 4, bias="yes")
