"""The memory tasks (src/data/memory.py): each generator's layout, its answers re-derived from the inputs by an
independent checker, the trivial baseline, determinism by split_seed, disjoint splits, bad settings refused; the
steps task's exact_match; each data set end to end through src.train."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from src.common.errors import ConfigError
from src.data.memory import MQAR, Induction, Parity, SelectiveCopy, constant_baselines
from src.data.tensors import Batch
from src.tasks.steps import IGNORE
from src.train import train
from tests.conftest import run_cli

SIZES = dict(n_train=300, n_val=100, n_test=200)


# -- independent checkers: the answers (step -> class) of one sequence, read off its input ids -------------------
def selective_copy_answers(x: list[int], n_tokens: int) -> dict[int, int]:
    noise, marker, first_symbol = 1, 2, 3
    data = [t - first_symbol for t in x if t >= first_symbol]
    markers = [i for i, t in enumerate(x) if t == marker]
    assert len(data) == n_tokens and markers == list(range(len(x) - n_tokens, len(x)))
    assert all(t == noise for t in x[: len(x) - n_tokens] if t < first_symbol)
    return dict(zip(markers, data))


def mqar_answers(x: list[int], num_pairs: int, keys: int) -> dict[int, int]:
    context, first_key, first_value = 2 * num_pairs, 2, 2 + keys
    value_of = {}
    for i in range(0, context, 2):
        assert first_key <= x[i] < first_value <= x[i + 1] and x[i] not in value_of
        value_of[x[i]] = x[i + 1] - first_value
    answers = {i: value_of[t] for i, t in enumerate(x) if i >= context and t != 1}
    assert sorted(x[i] for i in answers) == sorted(value_of)  # every key asked exactly once
    return answers


def parity_answers(x: list[int]) -> dict[int, int]:
    answers, odd = {}, 0
    for i, t in enumerate(x):
        assert t in (1, 2)
        odd ^= t - 1
        answers[i] = odd
    return answers


def induction_answers(x: list[int]) -> dict[int, int]:
    trigger, first_symbol = 1, 2
    assert x[-1] == trigger and x[-2] != trigger  # the last trigger ends the sequence
    answers, previous = {}, None
    for i, t in enumerate(x):
        if t == trigger:
            if previous is not None:
                answers[i] = x[previous + 1] - first_symbol
            previous = i
    return answers


CASES = {  # data set -> (its data module at small settings, its checker, the nominal baseline acc)
    "selective_copy": (
        lambda **kw: SelectiveCopy(seq_len=24, n_tokens=5, vocab_size=4, **{**SIZES, **kw}),
        lambda x: selective_copy_answers(x, 5),
        1 / 4,
    ),
    "mqar": (
        lambda **kw: MQAR(seq_len=20, num_pairs=4, vocab_size=10, **{**SIZES, **kw}),
        lambda x: mqar_answers(x, 4, 5),
        1 / 5,
    ),
    "parity": (lambda **kw: Parity(seq_len=12, test_len=30, **{**SIZES, **kw}), parity_answers, 1 / 2),
    "induction": (
        lambda **kw: Induction(seq_len=16, n_triggers=4, vocab_size=5, **{**SIZES, **kw}),
        induction_answers,
        1 / 5,
    ),
}


def built(name: str, **kw):
    dm = CASES[name][0](**kw)
    dm.setup()
    return dm


@pytest.mark.parametrize("name", list(CASES))
def test_answers_are_exactly_what_the_inputs_say(name):
    dm = built(name)
    check = CASES[name][1]
    for split in ("train", "val", "test"):
        x, lengths, y = dm.splits[split]
        assert lengths is None and x.dtype == y.dtype == torch.int64 and x.shape == y.shape
        assert len(x) == SIZES[f"n_{split}"]
        assert int(x.min()) >= 1 and int(x.max()) < dm.spec.input_size  # 0 (padding) never used
        for xi, yi in zip(x.tolist(), y.tolist()):
            answers = check(xi)
            assert answers  # every sequence asks something
            assert {i: c for i, c in enumerate(yi) if c != IGNORE} == answers  # IGNORE exactly elsewhere
            assert all(0 <= c < dm.spec.num_classes for c in answers.values())


def test_shapes_and_spec():
    expected = {
        "selective_copy": (24, 4 + 3, 4),
        "mqar": (20, 10 + 2, 5),
        "parity": (12, 3, 2),
        "induction": (16, 5 + 2, 5),
    }
    for name, (t, inputs, classes) in expected.items():
        dm = built(name)
        spec = dm.spec
        assert (spec.task, spec.input_kind, dm.splits["train"][0].shape[1], spec.input_size, spec.num_classes) == (
            "steps",
            "tokens",
            t,
            inputs,
            classes,
        ), name
        assert dm.splits["train"][0].shape == (SIZES["n_train"], t) and dm.splits["val"][0].shape == (SIZES["n_val"], t)
        if name != "parity":
            assert dm.splits["test"][0].shape == (SIZES["n_test"], t)
    parity = built("parity")
    assert parity.splits["train"][0].shape[1] == parity.splits["val"][0].shape[1] == 12
    assert parity.splits["test"][0].shape[1] == 30  # the longer test strings


def test_answer_counts_per_sequence():
    def answers_per_row(dm):
        return set((dm.splits["train"][2] != IGNORE).sum(1).tolist())

    assert answers_per_row(built("selective_copy")) == {5}
    assert answers_per_row(built("mqar")) == {4}
    assert answers_per_row(built("parity")) == {12}
    assert answers_per_row(built("induction")) == {3}
    sc = built("selective_copy")
    assert torch.all(sc.splits["train"][2][:, -5:] != IGNORE)  # the last n_tokens steps


@pytest.mark.parametrize("name", list(CASES))
def test_baseline_is_the_most_frequent_answer(name):
    dm = CASES[name][0](n_train=50, n_val=50, n_test=3000)
    dm.setup()
    y = dm.splits["test"][2].numpy()
    answers = y[y != IGNORE]
    top = np.bincount(answers).argmax()
    exact = np.mean([np.all(row[row != IGNORE] == top) for row in y])
    freq = np.bincount(answers) / len(answers)
    entropy = -sum(p * np.log(p) for p in freq if p > 0)
    baselines = dm.baselines()
    if name == "mqar":  # and a uniform guess among the sequence's own 4 values
        assert baselines.pop("context_acc") == 1 / 4
    assert baselines == pytest.approx({"acc": np.mean(answers == top), "exact_match": exact, "loss": entropy})
    nominal = CASES[name][2]
    assert baselines["acc"] == pytest.approx(nominal, abs=0.03)  # about a uniform guess: nothing learned
    assert baselines["loss"] == pytest.approx(-np.log(nominal), abs=0.02)


def test_constant_baselines_by_hand():
    y = np.array([[IGNORE, 1, 1], [IGNORE, 1, 0], [IGNORE, IGNORE, IGNORE], [2, IGNORE, 1]])
    assert constant_baselines(y) == pytest.approx(
        {"acc": 4 / 6, "exact_match": 1 / 3, "loss": -(4 / 6 * np.log(4 / 6) + 2 * 1 / 6 * np.log(1 / 6))}
    )


@pytest.mark.parametrize("name", list(CASES))
def test_same_seed_same_data_other_seed_other_data(name):
    a, b, c = built(name, split_seed=3), built(name, split_seed=3), built(name, split_seed=4)
    for split in ("train", "val", "test"):
        assert torch.equal(a.splits[split][0], b.splits[split][0]) and torch.equal(
            a.splits[split][2], b.splits[split][2]
        )
        assert not torch.equal(a.splits[split][0], c.splits[split][0])
    bigger = CASES[name][0](n_train=SIZES["n_train"] + 50, n_val=SIZES["n_val"], n_test=SIZES["n_test"], split_seed=3)
    bigger.setup()
    assert torch.equal(bigger.splits["test"][0], a.splits["test"][0])  # n_train leaves the test split as it was


@pytest.mark.parametrize("name", list(CASES))
def test_splits_share_no_sequence(name):
    dm = built(name)
    rows = {s: {tuple(r) for r in dm.splits[s][0].tolist()} for s in ("train", "val", "test")}
    assert not rows["train"] & rows["val"] and not rows["train"] & rows["test"] and not rows["val"] & rows["test"]


def test_short_parity_strings_are_drawn_again_until_unlike_train():
    # 2^8 = 256 strings: random draws of val would mostly repeat train's 200; they are replaced by unseen ones.
    dm = Parity(seq_len=8, test_len=8, n_train=200, n_val=30, n_test=20)
    dm.setup()
    rows = {s: {tuple(r) for r in dm.splits[s][0].tolist()} for s in ("train", "val", "test")}
    assert len(dm.splits["val"][0]) == 30 and len(dm.splits["test"][0]) == 20
    assert not rows["train"] & rows["val"] and not (rows["train"] | rows["val"]) & rows["test"]
    for split in ("val", "test"):  # and the answers still match the inputs after the top-up
        for xi, yi in zip(dm.splits[split][0].tolist(), dm.splits[split][2].tolist()):
            assert dict(enumerate(yi)) == parity_answers(xi)


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda: SelectiveCopy(seq_len=10, n_tokens=8), "dataset.seq_len=10 .*use seq_len >= 16"),
        (lambda: SelectiveCopy(n_tokens=0), r"dataset.n_tokens=0 must be an integer >= 1"),
        (lambda: SelectiveCopy(vocab_size=1), r"dataset.vocab_size=1 must be an integer >= 2"),
        (lambda: MQAR(num_pairs=8, vocab_size=10), r"dataset.vocab_size=10 has 5 keys.*use vocab_size >= 16"),
        (lambda: MQAR(seq_len=20, num_pairs=8, vocab_size=64), r"dataset.seq_len=20 .*use seq_len >= 24"),
        (lambda: MQAR(num_pairs=2.5), r"dataset.num_pairs=2.5 must be an integer"),
        (lambda: Parity(seq_len=32, test_len=16), r"dataset.test_len=16 must be an integer >= 32"),
        (lambda: Parity(seq_len=8, test_len=16, n_train=300, n_val=100), r"dataset.seq_len=8 has only 256 bit strings"),
        (lambda: Induction(seq_len=6, n_triggers=4), r"dataset.seq_len=6 .*use seq_len >= 7"),
        (lambda: Induction(n_triggers=1), r"dataset.n_triggers=1 must be an integer >= 2"),
    ],
)
def test_bad_settings_are_refused_in_one_line(make, message):
    with pytest.raises(ConfigError, match=message) as refused:
        make()
    assert "\n" not in str(refused.value)


def test_bad_setting_on_the_command_line_is_one_error_line(tmp_path):
    done = run_cli("dataset=mqar", "dataset.num_pairs=40", "logger=none", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: dataset.vocab_size=32 has 16 keys" in done.stderr and "use vocab_size >= 80" in done.stderr


# -- the steps task's exact_match ----------------------------------------------------------------------------
def test_exact_match_counts_sequences_whose_answers_are_all_right(cfg_factory):
    cfg = cfg_factory("dataset=induction", "cell.hidden_size=4")
    dm = built("induction")
    model = instantiate(cfg.task, spec=dm.spec, _convert_="object")
    y = torch.tensor(
        [
            [IGNORE, 1, IGNORE, 2],  # both answers right
            [IGNORE, 1, IGNORE, 2],  # one of two wrong
            [IGNORE, IGNORE, IGNORE, 3],  # its only answer right
            [IGNORE, IGNORE, IGNORE, IGNORE],
        ]
    )  # nothing asked: not a sequence that counts
    guess = torch.tensor([[0, 1, 0, 2], [0, 1, 0, 4], [0, 0, 0, 3], [0, 0, 0, 0]])
    logits = torch.nn.functional.one_hot(guess, dm.spec.num_classes).float() * 10
    model.eval_outputs = lambda batch, batch_idx: None
    model.head = lambda outputs, lengths: logits
    model.evaluate(Batch(torch.ones_like(y), None, y), 0, "test")
    values = model.eval_values("test")
    assert float(values["test/exact_match"]) == pytest.approx(2 / 3)
    assert float(values["test/acc"]) == pytest.approx(4 / 5)


# -- end to end ----------------------------------------------------------------------------------------------
SMALL = {
    "selective_copy": ["dataset.seq_len=24", "dataset.n_tokens=4", "dataset.vocab_size=4"],
    "mqar": ["dataset.seq_len=16", "dataset.num_pairs=4", "dataset.vocab_size=16"],
    "parity": ["dataset.seq_len=10", "dataset.test_len=20"],
    "induction": ["dataset.seq_len=16", "dataset.n_triggers=3", "dataset.vocab_size=6"],
}


@pytest.mark.parametrize("dataset", list(SMALL))
def test_each_memory_task_trains_end_to_end(cfg_factory, tmp_path, dataset):
    record = train(
        cfg_factory(
            f"dataset={dataset}",
            *SMALL[dataset],
            "dataset.n_train=256",
            "dataset.n_val=64",
            "dataset.n_test=64",
            "dataset.batch_size=32",
            "debug=limit",
            "cell.hidden_size=8",
            "task.embedding_dim=8",
        )
    )
    assert record["status"] == "ok" and record["task"] == "steps", record
    written = json.loads((tmp_path / "metrics.json").read_text())
    for key in (
        "test/acc",
        "test/exact_match",
        "test/loss",
        "test/baseline_acc",
        "test/baseline_exact_match",
        "test/baseline_loss",
        "val/acc",
        "val/exact_match",
    ):
        assert 0 <= written[key] < float("inf"), key
    if dataset == "mqar":
        assert written["test/baseline_context_acc"] == 1 / 4
    assert 0 <= written["test/exact_match"] <= written["test/acc"] <= 1
