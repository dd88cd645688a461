"""The recurrent stack: shapes, padding, bidirectional summaries, and the layered path against cuDNN-style torch."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from src.common.errors import ConfigError
from src.models.cells.fused import FusedRNN
from src.models.stack import RecurrentStack, detach_state, last_step, reverse_padded
from src.train import train

MODES = ["rnn", "rnn_relu", "lstm", "gru"]


def fused(mode: str, hidden: int = 8):
    return functools.partial(FusedRNN, mode=mode, hidden_size=hidden)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("depth", [1, 2])
def test_fused_stack_shapes(mode, bidirectional, depth):
    stack = RecurrentStack(fused(mode), input_size=3, depth=depth, bidirectional=bidirectional)
    out, state = stack(torch.randn(4, 7, 3))
    directions = 2 if bidirectional else 1
    assert out.shape == (4, 7, 8 * directions) and stack.output_size == 8 * directions
    h = state[0] if mode == "lstm" else state
    assert h.shape == (depth * directions, 4, 8)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_changes_no_summary(mode, bidirectional):
    """Each sequence's summary in a padded batch equals the summary of that sequence run alone, unpadded."""
    torch.manual_seed(0)
    stack = RecurrentStack(fused(mode), input_size=3, depth=2, bidirectional=bidirectional).eval()
    lengths = torch.tensor([7, 3, 5, 1])
    x = torch.randn(4, 7, 3)
    x[torch.arange(7)[None, :] >= lengths[:, None]] = 99.0  # garbage in the padding must not leak
    out, _ = stack(x, lengths)
    batch_summary = last_step(out, lengths, bidirectional)
    for i, n in enumerate(lengths.tolist()):
        alone, _ = stack(x[i : i + 1, :n])
        torch.testing.assert_close(batch_summary[i], last_step(alone, None, bidirectional)[0])


def test_reverse_padded_reverses_within_length_only():
    x = torch.arange(8.0).reshape(2, 4, 1)
    out = reverse_padded(x, torch.tensor([4, 2]))
    assert out[0, :, 0].tolist() == [3, 2, 1, 0]
    assert out[1, :, 0].tolist() == [5, 4, 6, 7]


def test_detach_state_cuts_every_tensor():
    h = torch.ones(2, requires_grad=True) * 2
    state = [(h, h + 1), [h]]
    cut = detach_state(state)
    assert not cut[0][0].requires_grad and not cut[0][1].requires_grad and not cut[1][0].requires_grad
    assert isinstance(cut[0], tuple) and isinstance(cut[1], list)


class OneLSTMLayer(nn.Module):
    """A one-direction, one-layer cell in the layered interface, wrapping nn.LSTM (for testing the stack)."""

    def __init__(self, input_size: int, hidden_size: int = 6):
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.output_size = hidden_size

    def forward(self, x, state=None):
        return self.lstm(x, state)


def test_layered_stack_matches_torch_bidirectional_depth2_with_padding():
    """The layered path (layers, directions, reversal of padded sequences) equals nn.LSTM's own stacking."""
    torch.manual_seed(0)
    ref = nn.LSTM(4, 6, num_layers=2, bidirectional=True, batch_first=True)
    stack = RecurrentStack(functools.partial(OneLSTMLayer, hidden_size=6), input_size=4, depth=2, bidirectional=True)
    with torch.no_grad():
        for layer in range(2):
            for d, suffix in enumerate(["", "_reverse"]):
                mine = stack.layers[layer][d].lstm
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(mine, f"{name}_l0").copy_(getattr(ref, f"{name}_l{layer}{suffix}"))
    lengths = torch.tensor([5, 2, 4])
    x = torch.randn(3, 5, 4)
    ref_out, _ = ref(nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    ref_out = nn.utils.rnn.pad_packed_sequence(ref_out, batch_first=True, total_length=5)[0]
    out, _ = stack(x, lengths)
    valid = torch.arange(5)[None, :] < lengths[:, None]
    torch.testing.assert_close(out[valid], ref_out[valid])
    torch.testing.assert_close(last_step(out, lengths, True), last_step(ref_out, lengths, True))


@pytest.mark.parametrize("depth,dropout", [(0, 0.0), (-1, 0.0), (1, 1.0)])
def test_stack_rejects_bad_sizes(depth, dropout):
    with pytest.raises(ConfigError):
        RecurrentStack(fused("lstm"), input_size=3, depth=depth, dropout=dropout)


def test_fused_rejects_unknown_mode_and_bad_hidden():
    with pytest.raises(ConfigError, match="mode"):
        FusedRNN(3, 8, mode="nope")
    with pytest.raises(ConfigError, match="hidden_size"):
        FusedRNN(3, 0)


def test_stack_cuda_graphs_setting_is_checked_and_idle_on_cpu():
    """stack.cuda_graphs must be a boolean; on CPU the cells run directly (no graph recorded) and the
    parameters the state_dict holds are the cells' own (the graph runners are not modules)."""
    from src.models.cells.lstm import LSTMRef

    with pytest.raises(ConfigError, match="stack.cuda_graphs='yes'"):
        RecurrentStack(functools.partial(LSTMRef, hidden_size=8), input_size=3, cuda_graphs="yes")
    stack = RecurrentStack(functools.partial(LSTMRef, hidden_size=8), input_size=3, depth=2, bidirectional=True)
    out, _ = stack(torch.randn(2, 5, 3))
    out.sum().backward()
    assert not any(run.graphs for row in stack.runners for run in row)
    plain = RecurrentStack(
        functools.partial(LSTMRef, hidden_size=8), input_size=3, depth=2, bidirectional=True, cuda_graphs=False
    )
    assert stack.state_dict().keys() == plain.state_dict().keys()


# The compatibility grid: every modern cell and the min cells (in their blocks) on every kind of task, depth 2, bidirectional where the task allows it,
# and truncated BPTT carrying each cell's own state (matrix memory, SSM state and conv tail, KV cache) through
# Lightning, for the language model also across its stream's batches (debug=limit: 4 batches). smnist5k bi depth 2
# is tests/test_cells.py's fast_dev_run test; the cells themselves are checked in tests/test_modern_cells.py.
MODERN_CELLS = ["lru", "mamba", "mlstm", "slstm", "rglru", "attention"]
BLOCK_CELLS = [*MODERN_CELLS, "mingru", "minlstm"]
CORPUS = "\n".join(f"the cat sat on the mat number {i % 7} and the dog ran" for i in range(300))
GRID = {
    "adding-bi": [
        "dataset=adding",
        "dataset.seq_len=20",
        "dataset.n_train=200",
        "dataset.n_val=50",
        "dataset.n_test=50",
        "direction=bi",
    ],
    "copy-bi": [
        "dataset=copy",
        "dataset.seq_len=5",
        "dataset.n_train=200",
        "dataset.n_val=50",
        "dataset.n_test=50",
        "direction=bi",
    ],
    "seq2seq": ["dataset=seq2seq", "dataset.length=4", "dataset.n_train=200", "dataset.n_val=50", "dataset.n_test=50"],
    "lm-tbptt-stream": [
        "dataset=lm_text",
        "dataset.level=word",
        "dataset.bptt=12",
        "truncation=tbptt",
        "truncation.steps=5",
        "truncation.carry_across_batches=true",
    ],
    "smnist5k-tbptt": ["truncation=tbptt", "truncation.steps=10"],
}


@pytest.mark.parametrize("task", sorted(GRID))
@pytest.mark.parametrize("name", BLOCK_CELLS)
def test_modern_cells_on_every_task_kind_depth2(cfg_factory, tmp_path, name, task):
    overrides = list(GRID[task])
    if task.startswith("lm"):
        corpus = tmp_path / "corpus.txt"
        corpus.write_text(CORPUS, encoding="utf-8")
        overrides.append(f"dataset.path={corpus}")
    debug = "debug=limit" if task.startswith("lm") else "debug=fdr"
    record = train(
        cfg_factory(*overrides, debug, f"cell={name}", "depth=2", "cell.hidden_size=8", out=tmp_path / "run")
    )  # a run dir of its own: it may hold only the run's files
    assert record["status"] == "ok" and record["cell"] == name and record["depth"] == 2, record
    assert all(math.isfinite(v) for k, v in record.items() if k.startswith("test/")), record
