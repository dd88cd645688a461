"""Text data sets and tasks: reading and its errors, vocabulary, caches, padding invariance, embeddings,
tagging metrics and the CRF head, the jieba silver labels. Small files written here, plus the cheap real sources."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import src.data.text as text
from src.common.errors import ConfigError, DataError
from src.data.news import NewsZh
from src.data.pos import PosZh, agreement, parse_tagged, sentences
from src.data.sentiment import SentimentEn, SentimentZh
from src.data.tensors import Batch
from src.data.text import TextSpec, read_labelled
from src.data.tokens import IGNORE
from src.models.cells.fused import FusedRNN
from src.models.stack import RecurrentStack
from src.tasks.classify import SequenceClassifier
from src.tasks.tag import SequenceTagger
from src.train import train
from tests.conftest import CACHE

NEWS = {
    "train": ["体育\t球队赢得比赛", "体育\t球员比赛受伤", "财经\t股市大涨", "财经\t银行利率下调"] * 5,
    "val": ["体育\t比赛结束", "财经\t股市下跌"],
    "test": ["体育\t新球员加盟", "财经\t利率上调 罕见词汇"],
}
GOLD = [
    "迈向/v  充满/v  希望/n  的/u  新/a  世纪/n  。/w  我们/r  讲话/v  ！/w",
    "[中央/n  人民/n  广播/vn  电台/n]nt  发表/v  讲话/n  。/w",
    "19980101-01-001-002/m  中国/ns  人民/n  决心/d  继承/v  遗志/n  。/w",
] * 10


def write_cnews(folder: Path, splits: dict = NEWS) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in splits.items():
        (folder / f"cnews.{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def news(tmp_path: Path, **kwargs) -> NewsZh:
    return NewsZh(
        data_dir=str(write_cnews(tmp_path / "cnews")),
        cache_dir=str(tmp_path / "cache"),
        batch_size=4,
        **{"tokenizer": "char", **kwargs},
    )


# -- reading and its errors -------------------------------------------------------------------------------------
def test_labelled_lines_skip_blank_lines_and_read_crlf_and_bom(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("\ufeffpos\tgood\r\n\r\nneg\tbad\r\n".encode())
    records = read_labelled(path)
    assert records.texts == ["good", "bad"] and records.targets == ["pos", "neg"]
    assert records.origins == [f"{path}:1", f"{path}:3"]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"pos\tgood\nno tab here\n", r"a\.txt:2: expected `label<TAB>text`"),
        (b"", r"a\.txt is empty"),
        (b"\n\n", r"a\.txt is empty"),
        (b"pos\tgood\nneg\t\xb2\xbb\xba\xc3\n", r"a\.txt:2: byte 0xb2 .* not UTF-8.*iconv"),
    ],
)
def test_bad_lines_name_the_file_and_line(tmp_path, content, match):
    (tmp_path / "a.txt").write_bytes(content)
    with pytest.raises(DataError, match=match):
        read_labelled(tmp_path / "a.txt")


def test_label_in_val_that_train_never_saw_names_the_line(tmp_path):
    splits = {**NEWS, "val": ["体育\t比赛结束", "娱乐\t明星结婚"]}
    dm = NewsZh(data_dir=str(write_cnews(tmp_path / "cnews", splits)), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"cnews\.val\.txt:2: label '娱乐' occurs in the val split but never in train"):
        dm.setup()


def test_missing_cnews_file_says_what_the_folder_needs(tmp_path):
    folder = write_cnews(tmp_path / "cnews")
    (folder / "cnews.test.txt").unlink()
    with pytest.raises(DataError, match=r"lacks cnews\.test\.txt"):
        NewsZh(data_dir=str(folder), cache_dir=str(tmp_path / "cache")).setup()


def test_min_freq_that_empties_the_vocabulary_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"min_freq=1000 leaves an empty vocabulary.*most common appears in \d+"):
        news(tmp_path, min_freq=1000).setup()


# -- vocabulary, encoding, caches -------------------------------------------------------------------------------
def test_vocabulary_comes_from_train_only_and_lengths_are_true(tmp_path):
    dm = news(tmp_path, max_len=5)
    dm.setup()
    assert dm.vocab[:2] == ["<pad>", "<unk>"] and "罕" not in dm.vocab  # only in test
    x, lengths, y = dm.splits["test"]
    assert lengths.tolist() == [5, 5] and (x[1] == 1).any()  # cut at max_len; 利率上调 罕.. has unknowns
    assert dm.labels == ["体育", "财经"] and y.tolist() == [0, 1]
    short = dm.splits["val"]
    assert short[1].tolist() == [4, 4] and (short[0][:, 4:] == 0).all()  # padding is 0 after the true length
    spec = dm.spec
    assert isinstance(spec, TextSpec) and spec.input_kind == "tokens" and spec.input_size == len(dm.vocab)


def test_batches_are_cut_to_their_longest_sequence(tmp_path):
    dm = news(tmp_path, max_len=50)
    dm.setup()
    for batch in dm.val_dataloader():
        assert batch.x.shape[1] == int(batch.lengths.max()) == 4
    assert len(dm.train_dataloader()) == 5


def test_jieba_words_by_default_and_min_freq_maps_rare_words_to_unk(tmp_path):
    dm = NewsZh(data_dir=str(write_cnews(tmp_path / "cnews")), cache_dir=str(tmp_path / "cache"), min_freq=6)
    dm.setup()
    assert "比赛" in dm.vocab and "球队" not in dm.vocab  # a jieba word; one in 5 of 20 texts -> below 6


def test_second_run_skips_tokenizing_and_a_new_min_freq_only_reencodes(tmp_path, monkeypatch):
    first = news(tmp_path)
    first.setup()
    calls = []
    real = text.tokenizer
    monkeypatch.setattr(text, "tokenizer", lambda kind: calls.append(kind) or real(kind))
    again = news(tmp_path)
    again.setup()
    assert torch.equal(again.splits["train"][0], first.splits["train"][0]) and calls == []
    other = news(tmp_path, min_freq=6)
    other.setup()
    assert calls == [] and len(other.vocab) < len(first.vocab)
    news(tmp_path, tokenizer="word").setup()
    assert calls == ["word"]


# -- padding never changes a prediction -------------------------------------------------------------------------
def token_model(cls, bidirectional: bool, **kwargs):
    torch.manual_seed(0)
    spec = TextSpec(task="x", input_kind="tokens", input_size=20, num_classes=3)
    stack = functools.partial(
        RecurrentStack,
        cell=functools.partial(FusedRNN, hidden_size=8, mode="lstm"),
        depth=2,
        bidirectional=bidirectional,
    )
    return cls(spec=spec, stack=stack, optimizer=torch.optim.Adam, embedding_dim=6, **kwargs).eval()


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (SequenceClassifier, {}),
        (SequenceClassifier, {"pool": "max"}),
        (SequenceClassifier, {"pool": "mean"}),
        (SequenceTagger, {}),
    ],
)
def test_padding_does_not_change_predictions(cls, kwargs, bidirectional):
    model = token_model(cls, bidirectional, **kwargs)
    alone = torch.tensor([[3, 4, 5, 6]])
    batch = torch.tensor([[3, 4, 5, 6, 0, 0, 0, 0, 0], [7, 8, 9, 10, 11, 12, 13, 14, 15]])
    with torch.no_grad():
        a = model(alone, torch.tensor([4]))
        b = model(batch, torch.tensor([4, 9]))
    if cls is SequenceTagger:
        assert torch.allclose(a[0], b[0, :4], atol=1e-6)
    else:
        assert torch.allclose(a[0], b[0], atol=1e-6)


# -- tagging ----------------------------------------------------------------------------------------------------
def test_tag_loss_ignores_padding_and_counts_real_tokens():
    model = token_model(SequenceTagger, True).train()
    x = torch.tensor([[3, 4, 5, 0], [6, 7, 0, 0]])
    y = torch.tensor([[0, 1, 2, IGNORE], [1, 1, IGNORE, IGNORE]])
    emissions = model(x, torch.tensor([3, 2]))
    loss, n = model.loss(emissions, Batch(x, torch.tensor([3, 2]), y), 0, 4)
    assert n == 5
    real = torch.cat([emissions[0, :3], emissions[1, :2]])
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(real, torch.tensor([0, 1, 2, 1, 1])))
    assert model.loss(emissions, Batch(x, torch.tensor([3, 2]), y), 3, 4) is None  # a window of padding only


def test_crf_head_loss_and_decoding_respect_lengths():
    model = token_model(SequenceTagger, False, head="crf")
    x = torch.tensor([[3, 4, 5], [6, 0, 0]])
    y = torch.tensor([[0, 1, 2], [1, IGNORE, IGNORE]])
    emissions = model(x, torch.tensor([3, 1]))
    loss, n = model.loss(emissions, Batch(x, torch.tensor([3, 1]), y), 0, 3)
    assert n == 4 and loss.ndim == 0 and torch.isfinite(loss)
    tags = model.predict_tags(emissions, y)
    assert tags.shape == (2, 3) and (tags[1, 1:] == 0).all()


def test_gold_corpus_parsing_brackets_ids_and_sentences():
    words, tags = parse_tagged(GOLD[1], "x:2")
    assert words == ["中央", "人民", "广播", "电台", "发表", "讲话", "。"] and tags[:4] == ["n", "n", "vn", "n"]
    assert parse_tagged(GOLD[2], "x:3")[0][0] == "中国"  # the line id is not a word
    pieces = sentences(*parse_tagged(GOLD[0], "x:1"))
    assert [len(w) for w, _ in pieces] == [7, 3]
    with pytest.raises(DataError, match="x:9: '孤词' is not `word/TAG`"):
        parse_tagged("好/a  孤词", "x:9")


def test_agreement_compares_words_on_the_same_characters():
    gold = [(["中国", "人民", "好"], ["ns", "n", "a"])]
    silver = [(["中国人民", "好"], ["nt", "a"])]
    report = agreement(gold, silver)
    assert report["same_segmentation_recall"] == pytest.approx(1 / 3)
    assert report["same_segmentation_precision"] == pytest.approx(1 / 2)
    assert report["same_tag_where_same_word"] == 1.0


def test_pos_gold_and_jieba_silver_train_end_to_end(cfg_factory, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(GOLD) + "\n", encoding="utf-8")
    record = train(
        cfg_factory(
            "dataset=pos_zh",
            f"dataset.corpus_file={corpus}",
            "debug=fdr",
            "cell.hidden_size=8",
            "embedding.dim=8",
            "task.head=crf",
            "dataset.batch_size=8",
            out=tmp_path / "run",
        )
    )  # its own run dir: tmp_path holds the corpus
    assert record["status"] == "ok" and record["task"] == "tag" and 0 <= record["test/acc"] <= 1
    assert {"test/f1", "test/oov_tokens"} <= set(record)
    raw = tmp_path / "raw.txt"
    raw.write_text("我们热爱和平。\n今天天气很好。\n中国人民决心继承遗志。\n" * 10, encoding="utf-8")
    dm = PosZh(labels="jieba", raw_file=str(raw), cache_dir=str(tmp_path / "cache"))
    dm.setup()
    assert "v" in dm.labels and "我们" in dm.vocab


def test_agreement_command_prints_a_report(tmp_path, capsys):
    from src.data.pos import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(GOLD) + "\n", encoding="utf-8")
    main(["agreement", "--corpus-file", str(corpus), "--lines", "3"])
    report = json.loads(capsys.readouterr().out)
    assert report["texts"] == 3 and report["gold_words"] == 10 + 7 + 6
    assert 0.5 < report["same_segmentation_recall"] <= 1 and 0 < report["same_tag_where_same_word"] <= 1


def test_silver_labels_from_the_corpus_log_the_agreement(tmp_path, caplog):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(GOLD) + "\n", encoding="utf-8")
    with caplog.at_level("INFO"):
        PosZh(labels="jieba", corpus_file=str(corpus), cache_dir=str(tmp_path / "cache")).setup()
    assert "jieba vs gold on the same 30 lines" in caplog.text and "same_tag_where_same_word" in caplog.text


# -- embeddings -------------------------------------------------------------------------------------------------
def glove_file(path: Path, dm, dim: int) -> Path:
    rng = np.random.default_rng(0)
    lines = [f"{w} " + " ".join(f"{v:.3f}" for v in rng.normal(size=dim)) for w in dm.vocab[2:5] + ["zzz"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_word2vec_and_pretrained_vectors_reach_the_model(tmp_path, caplog):
    dm = news(tmp_path, embedding={"kind": "word2vec", "dim": 8, "window": 2, "epochs": 2, "sg": 1})
    dm.setup()
    model = token_model(SequenceClassifier, False).__class__(
        spec=dm.spec,
        stack=functools.partial(RecurrentStack, cell=functools.partial(FusedRNN, hidden_size=4)),
        optimizer=torch.optim.Adam,
        embedding_dim=8,
        freeze_embedding=True,
    )
    vectors = np.load(dm.spec.vectors)["vectors"]
    assert torch.equal(model.encoder.weight, torch.from_numpy(vectors)) and not model.encoder.weight.requires_grad
    assert (vectors[0] == 0).all() and (np.abs(vectors[2:]).sum(1) > 0).all()

    plain = news(tmp_path)
    plain.setup()
    path = glove_file(tmp_path / "glove.txt", plain, 6)
    with caplog.at_level("INFO"):
        dm = news(tmp_path, embedding={"kind": "pretrained", "dim": 6, "path": str(path)})
        dm.setup()
    assert "vectors for" in caplog.text and f"(3 of {len(dm.vocab) - 2} entries)" in caplog.text
    with pytest.raises(ConfigError, match=r"glove\.txt:1: the vectors have 6 dimensions but embedding\.dim=5"):
        news(tmp_path, embedding={"kind": "pretrained", "dim": 5, "path": str(path)}).setup()


def test_embedding_config_group_composes(cfg_factory, tmp_path):
    cfg = cfg_factory("dataset=news_zh", "embedding=word2vec", "embedding.dim=32")
    assert cfg.task.embedding_dim == 32 and cfg.dataset.embedding.kind == "word2vec"
    cfg = cfg_factory("dataset=pos_zh", "embedding=pretrained", "embedding.path=/nowhere.txt")
    assert cfg.task._target_.endswith("SequenceTagger") and cfg.dataset.embedding.path == "/nowhere.txt"


# -- the real offline sources (cheap ones) ----------------------------------------------------------------------
def test_offline_sources_match_their_documented_counts():
    zh = SentimentZh(cache_dir=str(CACHE))
    records = zh.read()["train"]
    assert zh.stats == {"lines": 35123, "duplicates_dropped": 17713, "contradictory_dropped": 47, "kept": 17363}
    assert sorted(set(records.targets)) == ["neg", "pos"]
    en = SentimentEn(cache_dir=str(CACHE))
    snippets = en.read()["train"]
    assert len(snippets) == 10568 and en.stats == {"neutral_dropped": 37}
    assert snippets.targets.count("pos") == 5242
    headlines = NewsZh(cache_dir=str(CACHE)).read()["train"]
    assert len(headlines) == 10000 and len(set(headlines.targets)) == 10


def test_imdb_folder_and_sentiment_zh_folder(tmp_path):
    for split in ("train", "test"):
        for label, words in (("pos", "great fun"), ("neg", "dull mess")):
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(10):
                (folder / f"{i}_7.txt").write_text(f"A {words}!<br /><br />Film {i}.", encoding="utf-8")
    dm = SentimentEn(data_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"), max_len=400)
    dm.setup()
    assert len(dm.splits["test"][0]) == 20 and "br" not in dm.vocab and "great" in dm.vocab
    folder = tmp_path / "zh"
    folder.mkdir()
    (folder / "pos.txt").write_text("很好\n很好\n不错\n一般\n", encoding="utf-8")
    (folder / "neg.txt").write_text("很差\n一般\n糟糕\n", encoding="utf-8")
    records = SentimentZh(data_dir=str(folder), cache_dir=str(tmp_path / "cache")).read()["train"]
    assert sorted(records.texts) == sorted(["很好", "不错", "很差", "糟糕"])  # repeat and contradiction gone


def test_news_zh_from_the_command_line(tmp_path):
    from tests.conftest import run_cli

    done = run_cli(
        "dataset=news_zh", "debug=fdr", "dataset.tokenizer=char", "cell.hidden_size=8", f"hydra.run.dir={tmp_path}"
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["status"] == "ok" and record["dataset"] == "news_zh" and "test/acc" in record
    bad = run_cli("dataset=news_zh", "dataset.min_freq=100000", f"hydra.run.dir={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "lower dataset.min_freq" in bad.stderr
