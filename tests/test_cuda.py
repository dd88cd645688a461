"""The GPU paths: CUDA graphs of loop cells give the same outputs and gradients as running the cells directly.

These need a CUDA device and are skipped without one (the CI machine has none); they were run on the lent GPU
(docs/speed.md, "On GPU: CUDA graphs for the loop cells"). On CPU the stack runs its cells directly
(tests/test_models.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from src.models.stack import RecurrentStack, detach_state
from tests.conftest import CONF

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CELLS = [
    "lstm_ref",
    "layernorm_lstm",
    "peephole_lstm",
    "lstmp",
    "gru_v1",
    "indrnn",
    "minimal",
    "lstm_variant:FGR",
    "lstm_variant:NFG",
]


def make_cell(name: str, hidden: int = 24):
    base, _, variant = name.partition(":")
    cfg = OmegaConf.load(CONF / "cell" / f"{base}.yaml")
    cfg.hidden_size = hidden
    if "proj_size" in cfg:
        cfg.proj_size = hidden // 2
    if variant:
        cfg.variant = variant
    return instantiate(cfg)


def pair(name: str, depth: int = 2, bidirectional: bool = True):
    torch.manual_seed(0)
    graphed = RecurrentStack(make_cell(name), input_size=5, depth=depth, bidirectional=bidirectional).cuda()
    plain = copy.deepcopy(graphed)
    plain.cuda_graphs = False
    for row in plain.runners:
        for run in row:
            run.mode = False
    return graphed, plain


@pytest.mark.parametrize("name", CELLS)
def test_graphed_training_steps_equal_direct_ones(name):
    """Three optimizer steps (the graphs must see the updated weights) on fresh batches: same outputs, same
    gradients, same parameters; and a graph was really recorded."""
    graphed, plain = pair(name)
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (graphed, plain)]
    for step in range(3):
        x = torch.randn(4, 7, 5, device="cuda")
        outs = []
        for model, opt in zip((graphed, plain), opts):
            opt.zero_grad()
            out, state = model(x)
            (out.square().mean() + sum(t.sum() for t in torch.utils._pytree.tree_leaves(state)) * 1e-3).backward()
            outs.append(out.detach())
            opt.step()
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
        for (n, p), q in zip(graphed.named_parameters(), plain.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-5, msg=f"{name}: {n} after step {step}")
    assert all(run.graphs for row in graphed.runners for run in row), "no CUDA graph was recorded"


@pytest.mark.parametrize("name", ["lstm_ref", "gru_v1", "indrnn"])
def test_carried_state_through_graphs(name):
    """Truncated BPTT's pattern: chunk -> backward -> next chunk from the detached state; equal to direct runs.
    The first chunk runs in graphs, the later ones (given a state) directly, all accumulating into one .grad:
    without own_gradients an LSTM's bias and bias_hh shared one adopted graph buffer here and came out wrong."""
    graphed, plain = pair(name, depth=2, bidirectional=False)
    x = torch.randn(3, 12, 5, device="cuda")
    results = []
    for model in (graphed, plain):
        state, outs = None, []
        for chunk in x.split(4, dim=1):
            out, state = model(chunk, state=state)
            out.sum().backward()
            state = detach_state(state)
            outs.append(out.detach())
        results.append((torch.cat(outs, 1), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    for g, h in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-5)
    assert all(len(run.graphs) == 1 for row in graphed.runners for run in row)  # the first chunk's only


@pytest.mark.parametrize("name", ["lstm_ref", "gru_v1"])
def test_gradients_accumulate_over_replays(name):
    """Two replays of one graph without zero_grad between them (gradient accumulation): the second replay must not
    overwrite the first one's gradient, which autograd would otherwise have adopted as .grad."""
    graphed, plain = pair(name, depth=1, bidirectional=False)
    xs = torch.randn(3, 4, 6, 5, device="cuda").unbind(0)
    graphed(xs[0])[0].sum().backward()  # records the graphs
    for model in (graphed, plain):
        model.zero_grad(set_to_none=True)
        for x in xs[1:]:
            model(x)[0].square().sum().backward()
    for (n, p), q in zip(graphed.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5, msg=n)
    assert all(run.graphs for row in graphed.runners for run in row)


def test_two_forwards_before_backward_fall_back_to_direct_runs():
    """A second forward before the first backward must not overwrite the first's recorded activations."""
    graphed, plain = pair("lstm_ref", depth=1, bidirectional=False)
    x1, x2 = torch.randn(2, 3, 6, 5, device="cuda").unbind(0)
    graphed(x1)[0].sum().backward()  # records the graph
    for model in (graphed, plain):
        model.zero_grad()
        a, _ = model(x1)
        b, _ = model(x2)
        (a.square().sum() + b.sum()).backward()
    for p, q in zip(graphed.parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-5)


def test_evaluation_and_autocast_run_directly():
    graphed, _ = pair("lstm_ref", depth=1, bidirectional=False)
    x = torch.randn(2, 6, 5, device="cuda")
    graphed.eval()
    with torch.no_grad():
        graphed(x)
    graphed.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        graphed(x)[0].float().sum().backward()
    assert not graphed.runners[0][0].graphs


def test_scan_cells_are_not_captured_and_compiled_scan_matches_eager():
    """minGRU's scan is a few large kernels (no graph); on GPU it is compiled, and equals the eager scan."""
    graphed, _ = pair("mingru", depth=1, bidirectional=False)
    x = torch.randn(4, 64, 5, device="cuda")
    out, _ = graphed(x)
    out.sum().backward()
    assert not graphed.runners[0][0].graphs
    cell = graphed.layers[0][0]
    cell.compile = False
    eager, _ = graphed(x)
    torch.testing.assert_close(out, eager, rtol=1e-4, atol=1e-5)


def test_graphed_updates_train_like_direct_ones(cfg_factory, tmp_path):
    """update=graphed with 4 updates per step: each update replays one CUDA graph (forward, backward, clipping,
    Adam). With a per-update cosine schedule (the learning rate must reach the graph) and clipping, the weights
    after 20 updates equal those of the same run without graphs to float rounding; global_step counts updates."""
    from tests.test_train import fit_weights

    common = [
        "trainer=gpu",
        "update.per_step=4",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=10",
        "trainer.limit_val_batches=2",
        "test=false",
        "update.gradient_clip_val=0.5",
        "task.scheduler_interval=step",
    ]
    graphed, trainer = fit_weights(cfg_factory("update=graphed", *common, out=tmp_path / "graphs"))
    direct, direct_trainer = fit_weights(cfg_factory("update=grouped", *common, out=tmp_path / "direct"))
    recorder = trainer.lightning_module.update.inner  # grouped(graphed(manual))
    assert recorder.off == "" and len(recorder.graphs) == 1, recorder.off
    assert trainer.global_step == direct_trainer.global_step == 20
    for a, b in zip(graphed, direct):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    assert torch.is_tensor(lr) and float(lr) == pytest.approx(direct_trainer.optimizers[0].param_groups[0]["lr"])


@pytest.mark.parametrize("cell", ["lstm", "lru"])
def test_stacked_members_train_on_the_gpu_as_their_single_runs(cfg_factory, cell):
    """A stacked job on the GPU (issue 28's GPU figure is measured there): torch's fused LSTM run once per member
    (cuDNN) and LRU vmapped, with clipping; after three updates each member equals its single run trained on the
    GPU without update graphs (update=grouped: the graphed update of update=auto rounds otherwise,
    test_graphed_updates_train_like_direct_ones)."""
    from src.runs.build import build
    from src.runs.seeds import build_stacked
    from tests.test_stacked import SEEDS, settings

    overrides = [*settings(cell, "none", clip=True), "trainer=gpu"]
    data, host, trainer = build_stacked(cfg_factory(*overrides), SEEDS)
    trainer.fit(host, datamodule=data)
    assert trainer.global_step == 3 and host.update.diverged() == {}
    for s, seed in enumerate(SEEDS):
        datamodule, model, single = build(cfg_factory(*overrides, "update=grouped", f"seed={seed}"))
        single.fit(model, datamodule=datamodule)
        for name, value in host.tasks[s].state_dict().items():
            assert value.device.type == "cuda" or not value.is_floating_point(), name
            torch.testing.assert_close(value, model.state_dict()[name], rtol=1e-4, atol=1e-4, msg=name)
