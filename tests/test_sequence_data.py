"""Sequence data: contiguous-stream batching, LM corpora and vocabularies, synthetic problems, time series,
digit transduction, and their errors."""

from __future__ import annotations

import math

import pytest
import torch

from src.common.errors import ConfigError, DataError
from src.data.corpora import KJV, PeoplesDaily, Tang
from src.data.lm_text import TextFiles
from src.data.seq2seq import TOKENS, DigitTransduction
from src.data.series import AirPassengers, Sine, SinToCos, Sunspots
from src.data.streams import StreamBatches, batchify
from src.data.synthetic import Adding, Copy
from src.data.text_pipeline import Vocabulary
from src.data.tokens import EOS, PAD, UNK
from tests.conftest import CACHE


def test_stream_rows_continue_from_one_batch_to_the_next():
    stream = torch.arange(103)
    x, y = batchify(stream, None, rows=4)  # rows of 25 tokens -> 24 (input, next) pairs each
    assert x.shape == (4, 24) and torch.equal(y, x + 1)
    batches = list(StreamBatches(x, y, bptt=5))
    assert len(batches) == 5 and batches[-1].x.shape == (4, 4)  # the last window is shorter
    for a, b in zip(batches, batches[1:]):
        assert torch.equal(b.x[:, 0], a.x[:, -1] + 1)  # row i of batch k+1 continues row i of batch k
    assert torch.equal(torch.cat([b.x for b in batches], dim=1), x)


def test_stream_rows_shard_over_processes_and_keep_continuing():
    x, y = batchify(torch.arange(400), None, rows=4)
    shards = [list(StreamBatches(x, y, bptt=7, rank=r, world_size=2)) for r in range(2)]
    assert len(shards[0]) == len(shards[1])  # every process takes the same number of steps
    for step, (a, b) in enumerate(zip(*shards)):
        whole = torch.cat([a.x, b.x])
        assert torch.equal(whole, x[:, step * 7 : (step + 1) * 7])
    with pytest.raises(ConfigError, match="batch_size=3"):
        StreamBatches(*batchify(torch.arange(90), None, rows=3), bptt=5, world_size=2)


def test_aligned_streams_keep_input_and_target_together():
    dm = SinToCos(length=1000, batch_size=4, eval_batch_size=2, bptt=10, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    assert [dm.steps(s) for s in ("train", "val", "test")] == [800, 100, 100]
    batch = next(iter(dm.train_dataloader()))
    assert batch.x.shape == (4, 10, 1) and batch.y.shape == (4, 10, 1)
    torch.testing.assert_close(batch.x**2 + batch.y**2, torch.ones_like(batch.x))  # sin^2 + cos^2
    assert dm.spec.task == "regress" and dm.spec.input_kind == "features"


def test_the_spec_carries_all_a_task_reads_of_its_data(tmp_path):
    """stream, baselines, rollout and generation info reach the task on the spec, not through the trainer."""
    sine = Sine(length=300, window=10, rollout_steps=20, val_fraction=0.1, test_fraction=0.1)
    spec = sine.spec
    assert spec.stream is False and spec.baselines == sine.baselines() and spec.baselines["mse"] > 0
    context, truth = spec.rollout
    assert context.shape == (10, 1) and torch.equal(torch.as_tensor(truth), torch.as_tensor(sine.rollout()[1]))
    assert Sine(length=300, window=10).spec.rollout is None  # rollout_steps=0: no rollout test
    waves = SinToCos(length=1000, batch_size=4, eval_batch_size=2, bptt=10)
    assert waves.spec.stream is True and waves.spec.baselines == {} and waves.spec.generation == {}
    lm = TextFiles(
        path=str(write(tmp_path / "t.txt", "ab ba\n" * 50)), cache_dir=str(tmp_path / "c"), batch_size=2, bptt=4
    )
    assert lm.spec.stream is True
    assert lm.spec.generation == {"vocab": lm.vocab.tokens, "level": "char", "tokenizer": "verbatim"}
    assert lm.spec.shape() == {"task": "language_model", "input_kind": "tokens", "input_size": 6, "num_classes": 6}


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "layout",
    [
        ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
        ("train.txt", "valid.txt", "test.txt"),
    ],
)
def test_own_text_layouts_word_level(tmp_path, layout):
    for name, text in zip(layout, ["a b c a\n b a <unk>\n" * 20, "a b zz\n" * 5, "c a\n" * 5]):
        write(tmp_path / name, text)
    dm = TextFiles(
        data_dir=str(tmp_path), level="word", cache_dir=str(tmp_path / "cache"), batch_size=2, eval_batch_size=2, bptt=4
    )
    dm.setup()
    assert dm.vocab.tokens[:3] == [PAD, UNK, EOS] and set(dm.vocab.tokens[3:]) == {"a", "b", "c"}
    val = dm.vocab.decode(dm.splits["val"][0].tolist())
    assert val[:4] == ["a", "b", UNK, EOS]  # a word unseen in training is <unk>, each line ends in <eos>
    assert dm.spec.task == "language_model" and dm.spec.input_size == len(dm.vocab) == dm.spec.num_classes


def test_own_text_single_file_char_level_split_in_order(tmp_path):
    lines = [f"line {i}" for i in range(100)]
    dm = TextFiles(
        path=str(write(tmp_path / "t.txt", "\n".join(lines))),
        level="char",
        cache_dir=str(tmp_path / "cache"),
        batch_size=2,
        eval_batch_size=1,
        bptt=8,
        val_fraction=0.1,
        test_fraction=0.1,
    )
    dm.setup()
    text = "".join(dm.vocab.decode(dm.splits["test"][0].tolist()))
    assert text == "".join(line + "\n" for line in lines[90:])  # the last 10% of the lines, in order


def test_empty_corpus_is_a_clear_error(tmp_path):
    dm = TextFiles(path=str(write(tmp_path / "empty.txt", "\n\n")), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="empty"):
        dm.setup()


def test_corpus_shorter_than_one_batch_is_a_clear_error(tmp_path):
    dm = TextFiles(
        path=str(write(tmp_path / "short.txt", "\n".join(["a b"] * 30))),
        cache_dir=str(tmp_path / "cache"),
        batch_size=64,
        eval_batch_size=10,
    )
    with pytest.raises(DataError, match=r"train split has \d+ steps, too short .* 64 rows"):
        dm.setup()


def test_missing_or_unknown_layout_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="dataset.path=.*dataset.data_dir"):
        TextFiles(cache_dir=str(tmp_path)).setup()
    with pytest.raises(DataError, match="ptb.train.txt"):
        TextFiles(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache")).setup()
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1") * 10)
    with pytest.raises(DataError, match="not UTF-8"):
        TextFiles(path=str(bad), cache_dir=str(tmp_path / "cache")).setup()
    with pytest.raises(ConfigError, match="level"):
        TextFiles(path=str(bad), level="byte")


def test_vocab_ranks_by_frequency_and_caps_size():
    vocab = Vocabulary.build([["b", "a", "b", "c", EOS], ["a", "b"]], max_size=2, specials=[EOS], count="occurrences")
    assert vocab.tokens == [PAD, UNK, EOS, "b", "a"]
    assert vocab.encode(["a", "c"]) == [4, 1]


def test_kjv_from_the_debian_packages():
    """The real corpus: 31,102 verses; at word level the same tokens as kjv_split.py in docs/results.md
    (831,627 training words, plus one <eos> per verse)."""
    dm = KJV(
        level="word",
        max_words=9999,
        cache_dir=str(CACHE),
        batch_size=20,
        eval_batch_size=10,
        val_fraction=0.05,
        test_fraction=0.05,
    )
    dm.setup()
    assert len(dm.vocab) == 10002  # <pad>, <unk>, <eos> and 9,999 words
    assert [dm.steps(s) for s in ("train", "val", "test")] == [831627 + 27991, 38947 + 1555, 43134 + 1556]
    assert (
        dm.vocab.decode(dm.splits["train"][0][:11].tolist())
        == "in the beginning god created the heaven and the earth .".split()
    )


def test_tang_poems_and_peoples_daily():
    tang = Tang(level="char", cache_dir=str(CACHE), batch_size=4, eval_batch_size=2)
    tang.setup()
    text = "".join(tang.vocab.decode(tang.splits["train"][0][:40].tolist()))
    assert "\x1b" not in text and "%" not in text and "作者" in text
    pd = PeoplesDaily(level="word", cache_dir=str(CACHE), batch_size=20, eval_batch_size=10)
    pd.setup()
    words = pd.vocab.decode(pd.splits["train"][0][:6].tolist())
    assert words == ["迈向", "充满", "希望", "的", "新", "世纪"]  # the gold segmentation, tags stripped


def test_adding_problem_has_two_markers_and_the_167_baseline():
    dm = Adding(seq_len=20, n_train=100, n_val=50, n_test=4000)
    dm.setup()
    x, _, y = dm.splits["test"]
    assert x.shape == (4000, 20, 2) and y.shape == (4000, 1)
    markers = x[..., 1]
    assert torch.all(markers[:, :10].sum(1) == 1) and torch.all(markers[:, 10:].sum(1) == 1)
    torch.testing.assert_close((x[..., 0] * markers).sum(1, keepdim=True), y)
    assert dm.baselines()["mse"] == pytest.approx(1 / 6, abs=0.01)
    again = Adding(seq_len=20, n_train=300, n_val=50, n_test=4000)
    again.setup()
    assert torch.equal(again.splits["test"][0], x)  # the test set does not depend on n_train


def test_copy_problem_layout_and_baseline():
    dm = Copy(seq_len=5, n_train=10, n_val=10, n_test=10)
    dm.setup()
    x, _, y = dm.splits["train"]
    assert x.shape == y.shape == (10, 25)
    assert torch.all(x[:, 14] == 10) and torch.all(x[:, 15:] == 1)  # the delimiter ends the T blanks
    torch.testing.assert_close(y[:, -10:], x[:, :10] - 1)  # the symbols, as classes 1..8
    assert torch.all(y[:, :-10] == 0)
    assert dm.baselines()["loss"] == pytest.approx(10 * math.log(8) / 25)
    assert (dm.spec.input_size, dm.spec.num_classes) == (11, 9)


def test_digit_transduction_reverse_and_add():
    dm = DigitTransduction(problem="reverse", length=6, n_train=200, n_val=50, n_test=50)
    dm.setup()
    x, lengths, y = dm.splits["test"]
    assert lengths is None and x.shape == (50, 6) and y.shape == (50, 7)
    assert dm.decode(y[0].tolist()) == dm.decode(x[0].tolist())[::-1] and y[0, -1] == TOKENS.index("<eos>")
    sources = [
        tuple(dm.splits[s][0][i].tolist()) for s in ("train", "val", "test") for i in range(len(dm.splits[s][0]))
    ]
    assert len(set(sources)) == 300  # no problem in two splits
    add = DigitTransduction(problem="add", length=3, n_train=200, n_val=50, n_test=50)
    add.setup()
    x, lengths, y = add.splits["train"]
    for i in range(20):
        a, b = add.decode(x[i, : lengths[i]].tolist()).split("+")
        assert add.decode(y[i].tolist()) == str(int(a) + int(b))
    with pytest.raises(ConfigError, match="too few distinct"):
        DigitTransduction(problem="reverse", length=2)


def test_forecast_split_is_chronological_and_normalised_on_train_only():
    dm = Sine(length=300, window=10, normalize=True, rollout_steps=20, val_fraction=0.1, test_fraction=0.1)
    dm.setup()
    sizes = {s: len(dm.splits[s][0]) for s in ("train", "val", "test")}
    assert sizes == {"train": 230, "val": 30, "test": 30}
    z = torch.as_tensor(dm.z)
    assert float(z[:240].mean()) == pytest.approx(0, abs=1e-5)  # fitted on the training part
    x, _, y = dm.splits["test"]
    torch.testing.assert_close(y[:, 0], z[270:])
    torch.testing.assert_close(x[0, :, 0], z[260:270])
    context, truth = dm.rollout()
    assert context.shape == (10, 1) and truth.shape == (20, 1)
    assert dm.baselines()["mse"] > 0


def test_real_series_from_their_pinned_archives():
    air = AirPassengers(window=12, cache_dir=str(CACHE))
    assert len(air.series()) == 144 and air.series()[0] == 112
    spots = Sunspots(window=12, cache_dir=str(CACHE))
    assert len(spots.series()) == 309 and spots.series()[0] == 5
    with pytest.raises(DataError, match="too few"):
        AirPassengers(window=120, cache_dir=str(CACHE)).setup()
