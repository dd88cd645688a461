"""The one text pipeline (src/data/text_pipeline.py) that classification, tagging and language models share:
one tokenizer per kind, the vocabulary's special ids, the caches' round trip and their refusal of a damaged or
older cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import src.data.lm_text as lm_text
import src.data.text_pipeline as pipeline
from src.common.errors import ConfigError, DataError
from src.data.lm_text import TextFiles
from src.data.sources import cache_path
from src.data.text_pipeline import (
    Vocabulary,
    cache_file,
    cached,
    pack,
    tokenizer,
    unpack,
)
from src.data.tokens import EOS, PAD, PAD_ID, UNK, UNK_ID
from tests.test_text import news

SRC = Path(__file__).resolve().parents[1] / "src"


# -- tokenizers -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, expected",
    [
        ("char", ["A", "b", ",", "c", "!"]),
        ("verbatim", ["A", "b", ",", " ", "c", "!"]),
        ("whitespace", ["Ab,", "c!"]),
        ("english", ["ab", ",", "c", "!"]),
        ("kjv", ["ab", ",", "c", "!"]),
    ],
)
def test_each_tokenizer_kind(kind, expected):
    assert tokenizer(kind)("Ab, c!") == expected


def test_english_keeps_numbers_as_words_and_kjv_splits_their_digits():
    assert tokenizer("english")("it's 42") == ["it's", "42"]
    assert tokenizer("kjv")("it's 42") == ["it's", "4", "2"]


def test_jieba_words_have_one_tokenizer_and_one_set_up():
    assert tokenizer("word") is tokenizer("jieba")  # the classification configs' name for the same tokenizer
    assert tokenizer("jieba")("我们 热爱和平") == ["我们", "热爱", "和平"]  # no whitespace token
    assert pipeline.jieba() is pipeline.jieba()
    setups = [p.relative_to(SRC) for p in SRC.rglob("*.py") if "setLogLevel" in p.read_text(encoding="utf-8")]
    assert setups == [Path("data/text_pipeline.py")]


def test_unknown_tokenizer_is_a_config_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match=r"dataset.tokenizer='bpe' is not one of"):
        tokenizer("bpe")
    with pytest.raises(ConfigError, match=r"dataset.tokenizer='bpe' is not one of"):
        news(tmp_path, tokenizer="bpe")
    with pytest.raises(ConfigError, match=r"dataset.tokenizer='kjv' is for dataset.level=word"):
        TextFiles(path="x.txt", level="char", tokenizer="kjv")
    with pytest.raises(ConfigError, match=r"dataset.max_words=0 must be a positive integer or null"):
        TextFiles(path="x.txt", level="word", max_words=0)


# -- vocabulary -------------------------------------------------------------------------------------------------
def test_special_ids_are_the_same_in_every_vocabulary():
    docs = [["b", "a", "b", UNK], ["a", "c", "b"]]
    for vocab in (
        Vocabulary.build(docs),  # classification / tagging
        Vocabulary.build(docs, specials=[EOS], count="occurrences"),  # a word-level language model
    ):
        assert vocab[PAD_ID] == PAD and vocab[UNK_ID] == UNK and vocab.tokens.count(UNK) == 1
        assert vocab.encode(["a", "zzz", UNK]) == [vocab.index["a"], UNK_ID, UNK_ID]  # a spelt <unk> is <unk>
        assert vocab.decode(vocab.encode(["b", "c"])) == ["b", "c"]
    lm = Vocabulary.build(docs, specials=[EOS], count="occurrences")
    assert lm.tokens == [PAD, UNK, EOS, "b", "a", "c"]  # most frequent first; <eos> id 2


def test_documents_count_texts_and_occurrences_count_every_token():
    docs = [["x", "x", "x", "y"], ["y", "z"]]
    assert Vocabulary.build(docs, min_freq=2).tokens == [PAD, UNK, "y"]  # x is in one text only
    assert Vocabulary.build(docs, min_freq=2, count="occurrences").tokens == [PAD, UNK, "x", "y"]
    assert Vocabulary.build([["b", "a"], ["c", "a"]], count="occurrences").tokens[2:] == ["a", "b", "c"]  # ties: as met
    with pytest.raises(ConfigError, match=r"min_freq=5 leaves an empty vocabulary.*most common appears 3 times"):
        Vocabulary.build(docs, min_freq=5, count="occurrences")
    with pytest.raises(ConfigError, match=r"min_freq=3 leaves an empty vocabulary.*most common appears in 2\)"):
        Vocabulary.build(docs, min_freq=3)
    with pytest.raises(ConfigError, match=r"dataset.max_size=0"):
        Vocabulary.build(docs, max_size=0)


@pytest.mark.parametrize("tokens", [["a", PAD, UNK], [PAD, UNK, "a", "a"], []])
def test_a_stored_vocabulary_without_its_specials_or_with_repeats_is_refused(tokens):
    with pytest.raises(DataError, match="starts with <pad>, <unk> and holds each token once"):
        Vocabulary(tokens)


def test_padded_ids_cut_at_max_len_and_pad_with_pad_id():
    vocab = Vocabulary.build([["a", "b", "c"]])
    x, lengths = vocab.encode_padded([["a", "b", "c", "a"], ["q"]], max_len=3)
    assert lengths.tolist() == [3, 1] and x.tolist() == [[vocab.index["a"], vocab.index["b"], vocab.index["c"]]] + [
        [UNK_ID, PAD_ID, PAD_ID]
    ]


# -- caches -----------------------------------------------------------------------------------------------------
def test_pack_round_trip_and_a_count_that_does_not_match_is_refused():
    docs = [["我们", "a b"], [], ["\n", "<eos>"]]
    arrays = pack(docs)
    assert unpack(arrays["tokens"], arrays["n"]) == docs and unpack(*pack([]).values()) == []
    with pytest.raises(ValueError, match="3 token lists where 2 were written"):
        unpack(arrays["tokens"], np.array(2))


def test_cache_round_trip_builds_once_and_reads_what_was_written(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return {"ids": np.arange(5)}

    first = cached(tmp_path, "demo", {"k": 1}, build, lambda a: a["ids"].tolist())
    second = cached(tmp_path, "demo", {"k": 1}, build, lambda a: a["ids"].tolist())
    assert first == second == [0, 1, 2, 3, 4] and calls == [1]
    assert cache_file(tmp_path, "demo", {"k": 1}).is_file()


def test_a_cache_of_an_older_layout_is_never_read(tmp_path):
    """The same name and key written before this pipeline (no FORMAT in the key) lies at another path."""
    old = cache_path(tmp_path, "demo", {"k": 1})
    old.parent.mkdir(parents=True)
    np.savez(old, ids=np.array([9, 9]))
    assert cached(tmp_path, "demo", {"k": 1}, lambda: {"ids": np.arange(2)}, lambda a: a["ids"].tolist()) == [0, 1]


def overwrite(cache: Path, **changes) -> None:
    with np.load(cache) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    with open(cache, "wb") as f:
        np.savez(f, **arrays)


def lm(tmp_path: Path, **kwargs) -> TextFiles:
    corpus = tmp_path / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("the cat sat on the mat\nthe dog sat\n" * 30, encoding="utf-8")
    return TextFiles(path=str(corpus), level="word", cache_dir=str(tmp_path / "cache"), batch_size=2, **kwargs)


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda a: {"train": np.full_like(a["train"], 99)}, "ids outside"),
        (lambda a: {"vocab": a["vocab"][1:]}, "starts with <pad>"),
        (lambda a: {"val": np.zeros_like(a["val"])}, "holds <pad>"),
    ],
)
def test_a_damaged_language_model_cache_is_refused_and_rebuilt(tmp_path, capsys, damage, reason):
    first = lm(tmp_path)
    first.setup()
    (cache,) = (tmp_path / "cache" / "parsed").glob("textfiles-ids-*.npz")
    with np.load(cache) as data:
        overwrite(cache, **damage({k: data[k] for k in data.files}))
    again = lm(tmp_path)
    again.setup()
    assert reason in capsys.readouterr().err and again.vocab.tokens == first.vocab.tokens
    for split in ("train", "val", "test"):
        assert torch.equal(again.splits[split][0], first.splits[split][0])


def test_a_damaged_tokens_cache_is_refused_and_rebuilt(tmp_path, capsys):
    first = news(tmp_path)
    first.setup()
    (tokens,) = (tmp_path / "cache" / "parsed").glob("news_zh-tokens-*.npz")
    overwrite(tokens, train_n=np.array(3))
    for ids in (tmp_path / "cache" / "parsed").glob("news_zh-ids-*.npz"):
        ids.unlink()  # so the tokens are read again
    again = news(tmp_path)
    again.setup()
    assert "token lists where 3 were written" in capsys.readouterr().err
    assert torch.equal(again.splits["train"][0], first.splits["train"][0]) and again.vocab.tokens == first.vocab.tokens


def test_a_damaged_classification_ids_cache_is_refused_and_rebuilt(tmp_path, capsys):
    first = news(tmp_path)
    first.setup()
    (ids,) = (tmp_path / "cache" / "parsed").glob("news_zh-ids-*.npz")
    overwrite(ids, test_y=np.array([0, 7]))  # a class the data set does not have
    again = news(tmp_path)
    again.setup()
    assert "test_y holds targets outside 0..1" in capsys.readouterr().err
    assert again.splits["test"][2].tolist() == first.splits["test"][2].tolist() == [0, 1]


def test_a_new_min_freq_reuses_the_tokens_for_language_models_as_for_classification(tmp_path, monkeypatch):
    lm(tmp_path).setup()
    calls = []
    real = lm_text.tokenizer
    monkeypatch.setattr(lm_text, "tokenizer", lambda kind: calls.append(kind) or real(kind))
    rare = lm(tmp_path, min_freq=40)
    rare.setup()
    assert calls == [] and rare.vocab.tokens == [PAD, UNK, EOS, "the", "sat"]  # in 40 places or more; "the" most
