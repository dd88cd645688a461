"""Truncated BPTT: windows, equivalence with full BPTT, gradients against a hand-written loop, carried state,
clipping, and the combinations it refuses."""

from __future__ import annotations

import copy
import functools

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from src.common.errors import ConfigError
from src.data.tensors import Batch, DataSpec
from src.models.cells.fused import FusedRNN
from src.models.stack import RecurrentStack, detach_state
from src.runs.build import build
from src.tasks.base import RecurrentTask
from src.updates.auto import pick
from src.updates.truncated import Truncation
from tests.test_models import OneLSTMLayer


class PerStepRegression(RecurrentTask):
    """A minimal many-to-many task (a target at every step), to exercise every truncation window."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.out = nn.Linear(self.stack.output_size, 1)

    def head(self, outputs, lengths):
        return self.out(outputs).squeeze(-1)

    def loss(self, predictions, batch, t0, t1):
        return F.mse_loss(predictions, batch.y[:, t0:t1]), batch.y[:, t0:t1].numel()

    def on_before_optimizer_step(self, optimizer):
        super().on_before_optimizer_step(optimizer)  # the strategy clips under truncation
        # What the optimizer is about to apply: the gradients after clipping, and their global norm.
        grads = {n: p.grad.clone() for n, p in self.named_parameters() if p.grad is not None}
        self.recorded_grads.append(grads)
        self.recorded_norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads.values()]))))


def make_task(
    mode: str,
    truncation: dict | None,
    lr: float = 0.0,
    clip: float | None = None,
    depth: int = 2,
    clip_algorithm: str = "norm",
):
    torch.manual_seed(0)
    task = PerStepRegression(
        spec=DataSpec(task="regress", input_kind="features", input_size=3, num_classes=1),
        stack=functools.partial(RecurrentStack, functools.partial(FusedRNN, mode=mode, hidden_size=8), depth=depth),
        optimizer=functools.partial(torch.optim.SGD, lr=lr),
        # what update=auto picks for one update per step: truncated with tbptt, else automatic; clipping is the
        # strategy's
        update=pick(
            truncation,
            accelerator="cpu",
            per_step_off_gpu=1,
            gradient_clip_val=clip,
            gradient_clip_algorithm=clip_algorithm,
        ),
    )
    task.recorded_grads, task.recorded_norms = [], []
    return task


def batches(n: int = 1, steps: int = 12, seed: int = 1) -> list[Batch]:
    g = torch.Generator().manual_seed(seed)
    return [Batch(torch.randn(4, steps, 3, generator=g), None, torch.randn(4, steps, generator=g)) for _ in range(n)]


class Loader:
    """Fixed batches in order (a list would be read as several data loaders)."""

    def __init__(self, data):
        self.data = data

    def __iter__(self):
        return iter(self.data)

    def __len__(self):
        return len(self.data)


def fit(task, data, epochs: int = 1) -> PerStepRegression:
    L.Trainer(
        max_epochs=epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    ).fit(task, Loader(data))
    return task


def test_windows_are_chunks_or_overlapping_bptt_k1_k2():
    assert Truncation(4, 4).windows(10) == [(0, 0, 4), (4, 4, 8), (8, 8, 10)]
    # k2=5 back, an update every k1=2: loss on the 2 new steps, backward over the last 5
    assert Truncation(5, 2).windows(9) == [(0, 0, 2), (0, 2, 4), (1, 4, 6), (3, 6, 8), (5, 8, 9)]


@pytest.mark.parametrize("mode", ["lstm", "gru"])
@pytest.mark.parametrize("steps,stride", [(4, 4), (5, 2)])
def test_every_update_matches_a_hand_written_reference_loop(mode, steps, stride):
    """Reference: for every update, rebuild the state at the window start from scratch with no gradient,
    run the window with gradient from that detached state, loss on the window's new steps, backward."""
    task = make_task(mode, {"mode": "tbptt", "steps": steps, "stride": stride})
    reference = copy.deepcopy(task)
    (batch,) = batches()
    recorded = fit(task, [batch]).recorded_grads
    expected = []
    for start, t0, t1 in Truncation(steps, stride).windows(12):
        reference.zero_grad()
        with torch.no_grad():
            _, state = reference.encode(batch.x[:, :start]) if start else (None, None)
        out, _ = reference.encode(batch.x[:, start:t1], None, detach_state(state))
        pred = reference.head(out[:, t0 - start :], None)
        F.mse_loss(pred, batch.y[:, t0:t1]).backward()
        expected.append({n: p.grad.clone() for n, p in reference.named_parameters()})
    assert len(recorded) == len(expected) == len(Truncation(steps, stride).windows(12))
    for got, want in zip(recorded, expected):
        for name in want:
            torch.testing.assert_close(got[name], want[name], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode", ["rnn", "lstm", "gru"])
def test_steps_covering_the_sequence_equal_full_bptt_after_one_update(mode):
    full = make_task(mode, None, lr=0.1)
    truncated = make_task(mode, {"mode": "tbptt", "steps": 50}, lr=0.1)
    data = batches()
    fit(full, data)
    fit(truncated, data)
    for (name, a), b in zip(full.state_dict().items(), truncated.state_dict().values()):
        assert torch.equal(a, b), name


def test_steps_covering_the_sequence_equal_full_bptt_through_the_real_config(cfg_factory):
    """The same through src.train's build: digits (8 steps), one optimizer step, clipping on."""

    def params(*overrides):
        _, model, trainer = build(
            cfg_factory(
                "dataset=digits", "trainer.max_steps=1", "test=false", "update.gradient_clip_val=0.5", *overrides
            )
        )
        dm = build(cfg_factory("dataset=digits"))[0]
        trainer.fit(model, datamodule=dm)
        return model.state_dict()

    full, truncated = params(), params("truncation=tbptt", "truncation.steps=8")
    for name in full:
        assert torch.equal(full[name], truncated[name]), name


@pytest.mark.parametrize(
    "cell",
    [functools.partial(FusedRNN, mode=m, hidden_size=6) for m in ("rnn", "lstm", "gru")]
    + [functools.partial(OneLSTMLayer, hidden_size=6)],
    ids=["rnn", "lstm", "gru", "layered"],
)
def test_chunked_forward_with_carried_state_equals_one_forward(cell):
    torch.manual_seed(0)
    stack = RecurrentStack(cell, input_size=3, depth=2)
    x = torch.randn(2, 10, 3)
    whole, final = stack(x)
    state, outs = None, []
    for a in range(0, 10, 3):
        out, state = stack(x[:, a : a + 3], None, state)
        outs.append(out)
    torch.testing.assert_close(torch.cat(outs, dim=1), whole)
    torch.testing.assert_close(state, final)


def test_state_carried_across_batches_equals_one_long_stream():
    """Two batches where each row continues the previous batch's row train exactly like one long sequence."""
    long = batches(steps=12)[0]
    halves = [Batch(long.x[:, :6], None, long.y[:, :6]), Batch(long.x[:, 6:], None, long.y[:, 6:])]
    carried = make_task("lstm", {"mode": "tbptt", "steps": 6, "carry_across_batches": True}, lr=0.1)
    one_stream = make_task("lstm", {"mode": "tbptt", "steps": 6}, lr=0.1)
    fit(carried, halves)
    fit(one_stream, [long])
    for (name, a), b in zip(carried.state_dict().items(), one_stream.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7, msg=name)
    not_carried = make_task("lstm", {"mode": "tbptt", "steps": 6}, lr=0.1)
    fit(not_carried, halves)  # without carry the second half starts from zeros: different weights
    assert not torch.allclose(not_carried.out.weight, carried.out.weight)


def test_carried_state_resets_every_epoch():
    task = make_task("gru", {"mode": "tbptt", "steps": 4, "carry_across_batches": True}, lr=0.1)
    starts = []
    original = task.update.carried_state

    def spy(size):
        state = original(size)
        starts.append(state is None)
        return state

    task.update.carried_state = spy
    fit(task, batches(n=2), epochs=2)
    assert starts == [True, False, True, False]


def test_clipping_bounds_the_gradient_norm_under_truncation():
    task = make_task("lstm", {"mode": "tbptt", "steps": 3}, lr=0.1, clip=0.01)
    norms = fit(task, batches(n=2)).recorded_norms
    assert len(norms) == 8 and max(norms) <= 0.01 + 1e-6
    unclipped = fit(make_task("lstm", {"mode": "tbptt", "steps": 3}, lr=0.1), batches(n=2)).recorded_norms
    assert max(unclipped) > 0.01  # the bound above was the clipping's doing


@pytest.mark.parametrize(
    "truncation,match",
    [
        ({"mode": "tbptt", "steps": 0}, "truncation.steps=0"),
        ({"mode": "tbptt", "steps": 4, "stride": 5}, "truncation.stride=5"),
        ({"mode": "tbptt", "steps": 4, "size": 2}, "unknown truncation settings"),
        ({"mode": "sometimes"}, "truncation.mode"),
    ],
)
def test_bad_truncation_settings_are_refused(truncation, match):
    with pytest.raises(ConfigError, match=match):
        make_task("lstm", truncation)


def test_bidirectional_truncation_is_refused_with_the_reason(cfg_factory):
    with pytest.raises(Exception) as info:
        build(cfg_factory("truncation=tbptt", "truncation.steps=4", "direction=bi"))
    assert "direction=bi" in str(info.value) and "chunk boundaries" in str(info.value)


def test_gradient_accumulation_under_truncation_is_refused(cfg_factory):
    with pytest.raises(ConfigError, match="accumulate_grad_batches=2"):
        build(cfg_factory("truncation=tbptt", "trainer.accumulate_grad_batches=2"))
