"""Gradient diagnostics: the step-by-step trace against the stack, the gradient flow against a hand-written
autograd loop, gradient norms before clipping and clip counts, gate saturation, and the callback end to end."""

from __future__ import annotations

import functools
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.data.tensors import Batch, DataSpec
from src.diagnostics.measure import GradientDiagnostics, gradient_flow, state_statistics
from src.diagnostics.report import FLOW_COLUMNS, main, plot_gradient_flow, read_csv, write_csv
from src.models.cells.fused import FusedRNN
from src.models.stack import RecurrentStack
from src.models.trace import trace_stack
from src.tasks.classify import SequenceClassifier
from src.train import train
from src.updates.auto import pick
from tests.test_models import OneLSTMLayer
from tests.test_truncation import Loader, batches, make_task

CELLS = {"lstm": nn.LSTMCell, "gru": nn.GRUCell, "rnn": nn.RNNCell}


def classifier(cell, depth: int = 2, bidirectional: bool = False, truncation: dict | None = None):
    torch.manual_seed(0)
    return SequenceClassifier(
        spec=DataSpec(task="classify", input_kind="features", input_size=3, num_classes=4),
        stack=functools.partial(RecurrentStack, cell, depth=depth, bidirectional=bidirectional),
        optimizer=functools.partial(torch.optim.SGD, lr=0.0),
        update=pick(truncation, accelerator="cpu"),
        head_hidden=0,
    )


def fused(mode: str, hidden: int = 5):
    return functools.partial(FusedRNN, mode=mode, hidden_size=hidden)


def a_batch(lengths=None) -> Batch:
    g = torch.Generator().manual_seed(3)
    return Batch(torch.randn(4, 6, 3, generator=g), lengths, torch.randint(0, 4, (4,), generator=g))


def curve(rows, layer, direction, column="grad_h"):
    return torch.tensor(
        [r[column] for r in sorted(rows, key=lambda r: r["t"]) if r["layer"] == layer and r["direction"] == direction]
    )


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_trace_reproduces_the_fused_stack_with_padding(mode, bidirectional):
    stack = RecurrentStack(fused(mode), input_size=3, depth=2, bidirectional=bidirectional).eval()
    lengths = torch.tensor([6, 2, 4, 1])
    x = torch.randn(4, 6, 3)
    valid = torch.arange(6)[None, :] < lengths[:, None]
    torch.testing.assert_close(trace_stack(stack, x, lengths)[0][valid], stack(x, lengths)[0][valid])


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("truncation", [None, {"mode": "tbptt", "steps": 4, "stride": 2}])
def test_gradient_flow_equals_a_hand_written_autograd_loop(mode, truncation):
    """Reference: torch's LSTMCell/GRUCell/RNNCell with the stack's weights, stepped by hand, each h_t (and the
    c_t passed on) kept with retain_grad(); under truncation (T=6, k1=2, k2=4) the last window [2, 6), from a detached
    state."""
    task = classifier(fused(mode), truncation=truncation)
    batch = a_batch()
    rows = gradient_flow(task, batch)

    rnn = task.stack.rnn.rnn
    cells = []
    for layer in range(2):
        cell = CELLS[mode](3 if layer == 0 else 5, 5, **({"nonlinearity": "tanh"} if mode == "rnn" else {}))
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(rnn, f"{name}_l{layer}"))
        cells.append(cell)
    start = 2 if truncation else 0
    hs = [[None] * 6 for _ in cells]
    cs = [[None] * 6 for _ in cells]
    state = [None, None]
    for t in range(6):
        inp = batch.x[:, t]
        with torch.set_grad_enabled(t >= start):
            for layer, cell in enumerate(cells):
                hx = state[layer]
                if t == start and hx is not None:  # truncation: the window starts from a detached state
                    hx = tuple(s.detach() for s in hx) if mode == "lstm" else hx.detach()
                state[layer] = cell(inp, hx)
                h, c = state[layer] if mode == "lstm" else (state[layer], None)
                if c is not None:  # grad_c is what flows back through the cell state alone (into c_t+1)
                    c = c.clone()
                    state[layer] = (h, c)
                if t >= start:
                    for s in (h, c):
                        if s is not None:
                            s.retain_grad()
                hs[layer][t], cs[layer][t] = h, c
                inp = h
    F.cross_entropy(task.classifier(inp), batch.y).backward()

    for layer in range(2):
        assert [r["t"] for r in rows if r["layer"] == layer] == list(range(start, 6))
        expected = torch.stack([hs[layer][t].grad.norm() for t in range(start, 6)])
        torch.testing.assert_close(curve(rows, layer, 0), expected)
        if mode == "lstm":
            expected_c = torch.stack(
                [cs[layer][t].grad.norm() if t < 5 else torch.tensor(0.0) for t in range(start, 6)]
            )  # nothing reads the last c
            torch.testing.assert_close(curve(rows, layer, 0, "grad_c"), expected_c)
    if mode == "rnn" and not truncation:
        first = curve(rows, 0, 0)
        assert first[0] < first[-1]  # the gradient shrinks on its way back (sanity, not the point of the test)


def test_layered_cells_give_the_same_flow_as_the_fused_stack_bidirectional_padded():
    """Two independent paths, the cell's own forward (h_n from nn.LSTM, [1, B, H]) and the fused weights
    recomputed, agree on every layer and direction of a padded bidirectional depth-2 stack."""
    layered = classifier(functools.partial(OneLSTMLayer, hidden_size=5), bidirectional=True)
    reference = classifier(fused("lstm"), bidirectional=True)
    with torch.no_grad():
        for layer in range(2):
            for d, suffix in enumerate(["", "_reverse"]):
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layered.stack.layers[layer][d].lstm, f"{name}_l0").copy_(
                        getattr(reference.stack.rnn.rnn, f"{name}_l{layer}{suffix}")
                    )
    layered.classifier.load_state_dict(reference.classifier.state_dict())
    batch = a_batch(torch.tensor([6, 3, 5, 2]))
    got, expected = gradient_flow(layered, batch), gradient_flow(reference, batch)
    assert len(got) == len(expected) == 2 * 2 * 6
    for layer in range(2):
        for d in range(2):
            for column in ("grad_h", "grad_c"):
                torch.testing.assert_close(curve(got, layer, d, column), curve(expected, layer, d, column))
    # padded steps of a sequence get no gradient: the shortest ones only add to the early steps
    assert curve(got, 0, 0)[-1] > 0


def saturation(rows):
    return {(r["layer"], r["gate"]): round(r["saturated"], 6) for r in rows}


def test_gate_saturation_on_constructed_gates():
    # Zero weights, biases chosen per gate: sigmoid(10) > 0.99, sigmoid(-10) < 0.01, sigmoid(0) = 0.5.
    task = classifier(fused("lstm", hidden=4), depth=1)
    rnn = task.stack.rnn.rnn
    with torch.no_grad():
        for p in rnn.parameters():
            p.zero_()
        i, f, g, o = rnn.bias_ih_l0.view(4, 4)
        i.copy_(torch.tensor([10.0, 10.0, 10.0, 0.0]))  # 3 of 4 units saturated high
        f.fill_(-10.0)  # all saturated low
    _, gates = state_statistics(task, a_batch(torch.tensor([6, 3, 5, 2])))
    assert saturation(gates) == {
        (0, "input"): 0.75,
        (0, "forget"): 1.0,
        (0, "output"): 0.0,
        (0, "all"): round(7 / 12, 6),
    }
    low = next(r for r in gates if r["gate"] == "forget")
    assert low["below_0.01"] == 1.0 and low["above_0.99"] == 0.0

    task = classifier(fused("gru", hidden=2), depth=1)
    with torch.no_grad():
        for p in task.stack.rnn.rnn.parameters():
            p.zero_()
        task.stack.rnn.rnn.bias_hh_l0[:2] = 10.0  # reset gate
    stats, gates = state_statistics(task, a_batch())
    assert saturation(gates) == {(0, "reset"): 1.0, (0, "update"): 0.0, (0, "all"): 0.5}
    assert stats[0]["h_mean"] == 0.0 and stats[0]["c_mean"] is None  # zero weights: h stays 0; GRU has no c


class GatedLayer(OneLSTMLayer):
    """A layered cell reporting its gates: half saturated by construction."""

    def sigmoid_gates(self, x, state):
        values = torch.tensor([0.995, 0.5, 0.005, 0.5]).repeat(3)[: self.output_size]
        return {"made_up": values.expand(x.shape[0], -1)}


def test_layered_cell_gates_and_state_statistics():
    task = classifier(functools.partial(GatedLayer, hidden_size=4), depth=2, bidirectional=True)
    lengths = torch.tensor([6, 3, 5, 2])
    stats, gates = state_statistics(task, a_batch(lengths))
    assert saturation(gates)[(1, "made_up")] == 0.5 and len(gates) == 2 * 2 * 2  # made_up + all, 4 traces
    # the mean/std per step skip padded steps: compare with the stack's own outputs
    out, _ = task.stack(a_batch().x, lengths)
    t = 4  # sequences 0 and 2 are that long
    h = out[torch.tensor([0, 2]), t, :4]
    row = next(r for r in stats if (r["layer"], r["direction"], r["t"]) == (1, 0, t))
    assert row["h_mean"] == pytest.approx(h.mean().item(), abs=1e-6)
    assert row["h_std"] == pytest.approx(h.std(unbiased=False).item(), abs=1e-6)
    assert row["c_std"] is not None


def reference_norms(task, data, windows):
    """Global gradient norm of every update, computed directly: the weights never change (lr=0)."""
    norms, max_abs = [], []
    for batch in data:
        for start, t0, t1 in windows:
            with torch.no_grad():
                state = task.stack(batch.x[:, :start])[1] if start else None
            out, _ = task.stack(batch.x[:, start:t1], None, state)
            loss = F.mse_loss(task.head(out[:, t0 - start :], None), batch.y[:, t0:t1])
            grads = torch.autograd.grad(loss, [p for p in task.parameters()])
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
            max_abs.append(max(g.abs().max().item() for g in grads))
    return torch.tensor(norms), torch.tensor(max_abs)


@pytest.mark.parametrize(
    "truncation,algorithm", [(None, "norm"), (None, "value"), ({"mode": "tbptt", "steps": 4, "stride": 2}, "norm")]
)
def test_gradient_norms_are_measured_before_clipping(tmp_path, truncation, algorithm):
    data = batches(n=2, steps=8)
    probe = make_task("lstm", truncation)
    windows = probe.update.truncation.windows(8) if truncation else [(0, 0, 8)]
    norms, max_abs = reference_norms(probe, data, windows)
    measured = max_abs if algorithm == "value" else norms
    clip = measured.median().item()  # about half of the updates get clipped

    task = make_task("lstm", truncation, lr=0.0, clip=clip, clip_algorithm=algorithm)  # the strategy clips
    diagnostics = GradientDiagnostics(out_dir=str(tmp_path), flow_epochs=[], state_stats=False)
    L.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[diagnostics],
    ).fit(task, Loader(data))

    rows = read_csv(tmp_path / "grad_norms.csv")
    assert [int(r["step"]) for r in rows] == list(range(len(norms)))
    torch.testing.assert_close(torch.tensor([float(r["grad_norm"]) for r in rows]), norms)
    expected = (measured > clip).int().tolist()
    assert [int(r["clipped"]) for r in rows] == expected and 0 < sum(expected) < len(expected)
    if truncation:  # the task's hook recorded what the optimizer got: clipped, so ours were taken before
        assert max(task.recorded_norms) <= clip + 1e-5 < norms.max()


def test_callback_writes_its_files_for_fused_bi_depth2(cfg_factory, tmp_path):
    record = train(
        cfg_factory(
            "diagnostics=gradients",
            "logger=wandb",
            "dataset=digits",
            "depth=2",
            "direction=bi",
            "cell.hidden_size=8",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=3",
            "trainer.limit_val_batches=1",
            "test=false",
            "update.gradient_clip_val=0.01",
            "diagnostics.flow_epochs=[0,1,-1]",
        )
    )
    out = tmp_path / "diagnostics"
    assert {p.name for p in out.iterdir()} == {
        "gradient_flow.csv",
        "gradient_flow.png",
        "grad_norms.csv",
        "state_stats.csv",
        "gates.csv",
        "summary.json",
    }
    assert (out / "gradient_flow.png").read_bytes()[:4] == b"\x89PNG"
    flow = read_csv(out / "gradient_flow.csv")
    # before training, after epoch 1, after epoch 2 (the end): 4 layer-directions x 8 steps each
    assert sorted({(int(r["epochs_done"]), int(r["step"])) for r in flow}) == [(0, 0), (1, 3), (2, 6)]
    assert len(flow) == 3 * 4 * 8 and all(float(r["grad_h"]) > 0 for r in flow)
    norms = read_csv(out / "grad_norms.csv")
    assert len(norms) == 6 and all(r["clipped"] == "1" for r in norms)  # clip 0.01 fires every time
    assert record["diagnostics/clip_rate"] == 1.0
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["cell"] == "lstm"
        and summary["clipped"] == 6
        and set(summary["saturated"]) == {"layer 0 fwd", "layer 0 bwd", "layer 1 fwd", "layer 1 bwd"}
    )
    assert len(read_csv(out / "gates.csv")) == 4 * 4  # input, forget, output, all per layer-direction
    run = next(tmp_path.glob("wandb/offline-run-*"))  # the line plot and the picture went to W&B (offline)
    assert (run / "files" / "media" / "table" / "diagnostics").is_dir()
    assert (run / "files" / "media" / "images" / "diagnostics").is_dir()


def test_callback_with_layered_cell_and_truncation(cfg_factory, tmp_path):
    # A layered cell (tests.test_models.OneLSTMLayer) under truncated BPTT, k=5 of the 8 steps of digits.
    train(
        cfg_factory(
            "diagnostics=gradients",
            "dataset=digits",
            "depth=2",
            "truncation=tbptt",
            "truncation.steps=5",
            "cell._target_=tests.test_models.OneLSTMLayer",
            "~cell.mode",
            "cell.hidden_size=6",
            "trainer.max_epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=1",
            "test=false",
        )
    )
    out = tmp_path / "diagnostics"
    flow = read_csv(out / "gradient_flow.csv")
    assert {int(r["t"]) for r in flow} == {5, 6, 7}  # the last window: the steps its backward pass reaches
    # one update per batch: the classifier's target sits in the last window only
    assert len(read_csv(out / "grad_norms.csv")) == 2
    assert json.loads((out / "summary.json").read_text())["truncation_steps"] == 5
    assert (out / "gradient_flow.png").is_file() and (out / "state_stats.csv").is_file()
    assert len(read_csv(out / "state_stats.csv")) == 2 * 8  # the full sequence, both layers


def test_overlay_plot_of_several_runs_and_cli(tmp_path, capsys):
    for cell, slope in (("rnn", 0.3), ("lstm", 0.9)):
        run = tmp_path / "sweep" / cell
        rows = [
            {"epochs_done": e, "step": s, "layer": 0, "direction": 0, "t": t, "grad_h": slope ** (9 - t) * (1 + e)}
            for e, s in ((0, 0), (3, 90))
            for t in range(10)
        ]
        write_csv(run / "diagnostics" / "gradient_flow.csv", rows, FLOW_COLUMNS)
        (run / "metrics.json").write_text(json.dumps({"cell": cell}))
    out = plot_gradient_flow([tmp_path / "sweep" / "rnn", tmp_path / "sweep" / "lstm"], tmp_path / "a.png")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert main([str(tmp_path / "sweep"), "-o", str(tmp_path / "b.png"), "--at", "init"]) == 0
    assert (tmp_path / "b.png").is_file() and capsys.readouterr().out.strip() == str(tmp_path / "b.png")
    assert plot_gradient_flow([tmp_path / "nothing"], tmp_path / "c.png") is None
    assert main([str(tmp_path / "nothing"), "-o", str(tmp_path / "c.png")]) == 2


def test_a_resumed_run_keeps_the_rows_measured_before_its_step(tmp_path):
    flow = [
        {"epochs_done": e, "step": s, "layer": 0, "direction": 0, "t": 0, "grad_h": 1.0, "grad_c": None}
        for e, s in ((0, 0), (2, 10))
    ]
    write_csv(tmp_path / "gradient_flow.csv", flow, FLOW_COLUMNS)
    write_csv(
        tmp_path / "grad_norms.csv",
        [{"step": s, "epoch": 0, "grad_norm": 0.5, "clipped": 0} for s in range(12)],
        ["step", "epoch", "grad_norm", "clipped"],
    )
    diagnostics = GradientDiagnostics(out_dir=str(tmp_path))
    diagnostics.on_train_start(SimpleNamespace(global_step=8, is_global_zero=True), None)
    assert diagnostics.flow_rows == [flow[0]]
    assert [r["step"] for r in diagnostics.norm_rows] == list(range(8)) and diagnostics.norm_rows[0]["grad_norm"] == 0.5


class HalfSaturated(nn.Module):
    """A cell with one sigmoid gate and no gate hook: sigmoid(10), sigmoid(0), sigmoid(-10), sigmoid(0)."""

    def __init__(self, input_size: int, hidden_size: int = 4):
        super().__init__()
        self.lin, self.output_size = nn.Linear(input_size, hidden_size), hidden_size

    def forward(self, x, state=None):
        gate = torch.sigmoid(torch.tensor([10.0, 0.0, -10.0, 0.0]).expand(x.shape[0], x.shape[1], 4))
        h = gate * torch.tanh(self.lin(x))
        return h, h[:, -1]


def test_gates_of_a_cell_without_a_hook_come_from_its_own_sigmoids():
    task = classifier(functools.partial(HalfSaturated, hidden_size=4), depth=1, bidirectional=True)
    _, gates = state_statistics(task, a_batch(torch.tensor([6, 3, 5, 2])))
    assert saturation(gates) == {(0, "sigmoid_1"): 0.5, (0, "all"): 0.5}
    assert len(gates) == 2 * 2  # sigmoid_1 + all, per direction


@pytest.mark.parametrize(
    "target, gates",
    [
        ("src.models.cells.lstm.LSTMRef", 1),  # i, f, o in one sigmoid
        ("src.models.cells.lstm.PeepholeLSTM", 1),
        ("src.models.cells.gru.GRURef", 1),
        ("src.models.cells.minrnn.MinGRU", 1),
        ("src.models.cells.minrnn.MinLSTM", 2),
    ],
)
def test_every_custom_cell_reports_gate_saturation(target, gates):
    from hydra.utils import get_class

    cell = functools.partial(get_class(target), hidden_size=4)
    _, rows = state_statistics(classifier(cell, depth=2), a_batch(torch.tensor([6, 3, 5, 2])))
    names = {r["gate"] for r in rows}
    assert names >= {"all"} and len(names - {"all"}) >= gates, names
    assert all(0.0 <= r["saturated"] <= 1.0 for r in rows) and {r["layer"] for r in rows} == {0, 1}
