"""Language-model corpora: text -> a vocabulary and one stream of token ids per split, through the text pipeline
(src/data/text_pipeline.py) that classification and tagging use too.

`level=char`: every character is a token (tokenizer `verbatim`) and each line ends with "\\n". `level=word`: the
corpus' word tokenizer (`kjv`, `whitespace`, `jieba`, or the corpus' own gold segmentation) and `<eos>` after
every line, as the PTB convention that pytorch/examples' word_language_model follows. The vocabulary comes from
the training split only (most frequent first); anything else is `<unk>`. Id 0 is `<pad>`, which no stream contains.
Two caches, as for classification: the tokenized lines, and the vocabulary with the id streams.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from src.common.errors import ConfigError, DataError, not_there
from src.common.files import sha256_file
from src.data.splits import carve
from src.data.streams import StreamDataModule
from src.data.text_pipeline import (
    SPLITS,
    Vocabulary,
    cached,
    clean,
    pack_splits,
    tokenizer,
    tokenizer_version,
    unpack_splits,
)
from src.data.tokens import EOS, PAD_ID

WORD_TOKENIZERS = ("whitespace", "kjv", "jieba")


def line_ends(level: str) -> str:
    """The token that ends every line: the character itself at char level, <eos> at word level."""
    return "\n" if level == "char" else EOS


def detokenize(tokens: Sequence[str], level: str) -> str:
    if level == "char":
        return "".join(tokens)
    return " ".join(tokens).replace(f" {EOS} ", "\n").replace(EOS, "\n")


class LanguageModelData(StreamDataModule):
    """Base for language-model corpora. Subclasses implement `load_lines` -> {split: [lines]} (train at least;
    val/test missing are the last fractions of train's lines, in order) and `source_key` (what identifies the
    source bytes, for the cache), and name their `word_tokenizer`."""

    task = "language_model"
    word_tokenizer = "whitespace"

    @property
    def NAME(self) -> str:  # the cache files' prefix, as TextDataModule.NAME
        return type(self).__name__.lower()

    def __init__(
        self,
        level: str = "char",
        min_freq: int = 1,
        max_words: int | None = None,
        tokenizer: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if level not in ("char", "word"):
            raise ConfigError(f"dataset.level={level!r} must be 'char' or 'word'")
        if level == "char" and tokenizer not in (None, "verbatim"):
            raise ConfigError(
                f"dataset.tokenizer={tokenizer!r} is for dataset.level=word; level=char reads every character "
                f"(leave dataset.tokenizer=null)"
            )
        tokenizer = tokenizer or (self.word_tokenizer if level == "word" else "verbatim")
        if level == "word" and tokenizer not in WORD_TOKENIZERS:
            raise ConfigError(f"dataset.tokenizer={tokenizer!r} is not one of {sorted(WORD_TOKENIZERS)}")
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ConfigError(f"dataset.min_freq={min_freq} must be a positive integer")
        if max_words is not None and (not isinstance(max_words, int) or max_words < 1):
            raise ConfigError(f"dataset.max_words={max_words!r} must be a positive integer or null (no limit)")
        self.level, self.min_freq, self.max_words, self.tokenizer = level, min_freq, max_words, tokenizer
        self.vocab: Vocabulary | None = None

    # -- to implement --------------------------------------------------------------------------------------
    def load_lines(self) -> dict[str, list[str]]:
        raise NotImplementedError

    def source_key(self) -> dict:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------
    def _split_lines(self) -> dict[str, list[str]]:
        lines = self.load_lines()
        name = type(self).__name__
        train = lines["train"]
        if not any(line.strip() for line in train):
            raise DataError(f"{name}: the corpus is empty (no text in the training part)")
        missing = [s for s in ("val", "test") if s not in lines]
        if missing:
            # As kjv_split.py (docs/results.md): the first 1 - val - test of the lines train, then val, then test.
            parts = carve(len(train), self.val_fraction, self.test_fraction, rounding="down", what=f"{name} (lines)")
            lines = {split: [train[i] for i in idx] for split, idx in parts.items()}
        for split, part in lines.items():
            if not part:
                raise DataError(
                    f"{name}: the {split} split has no lines ({len(train)} lines in all); use a longer corpus"
                )
        return lines

    def tokens_key(self) -> dict:
        return {
            "source": self.source_key(),
            "level": self.level,
            "tokenizer": tokenizer_version(self.tokenizer),
            "val": self.val_fraction,
            "test": self.test_fraction,
        }

    def tokenized(self, key: dict) -> dict[str, list[list[str]]]:
        """{split: one token list per line}, from the cache when this source + tokenizer was seen before."""

        def build() -> dict[str, np.ndarray]:
            tokenize, end = tokenizer(self.tokenizer), line_ends(self.level)
            splits = self._split_lines()
            return pack_splits(
                {split: [tokenize(clean(line)) + [end] for line in part] for split, part in splits.items()}
            )

        return cached(self.cache_dir, f"{self.NAME}-tokens", key, build, unpack_splits)

    def load_streams(self):
        tokens_key = self.tokens_key()  # source_key() may hash the user's files: once
        key = {"tokens": tokens_key, "min_freq": self.min_freq, "max_words": self.max_words}

        def build() -> dict[str, np.ndarray]:
            tokens = self.tokenized(tokens_key)
            vocab = Vocabulary.build(
                tokens["train"],
                self.min_freq,
                self.max_words,
                specials=[EOS] if self.level == "word" else [],
                count="occurrences",
                where=f"{self.NAME} (train)",
            )
            arrays = {
                split: np.array([i for line in part for i in vocab.encode(line)], dtype=np.int64)
                for split, part in tokens.items()
            }
            return {**arrays, "vocab": np.array(vocab.tokens, dtype=np.str_)}

        def read(arrays: dict) -> dict[str, np.ndarray]:
            vocab = Vocabulary(arrays["vocab"].tolist())
            streams = {split: arrays[split] for split in SPLITS}
            for split, ids in streams.items():
                vocab.check_ids(ids, split)
                if (ids == PAD_ID).any():
                    raise ValueError(f"the {split} stream holds <pad>")
            self.vocab = vocab
            return streams

        streams = cached(self.cache_dir, f"{self.NAME}-ids", key, build, read)
        self.vocab_size = len(self.vocab)
        return {split: (ids, None) for split, ids in streams.items()}

    def baselines(self) -> dict[str, float]:
        """The unigram model of the training stream, on the test stream (src/data/baselines.py)."""
        from src.data.baselines import unigram

        return unigram(self.splits["train"][0], self.splits["test"][0], self.vocab_size, self.level)

    def generation_info(self) -> dict:
        """What src.generate needs to map text to ids and back; stored in the checkpoint (plain types only)."""
        return {"vocab": list(self.vocab.tokens), "level": self.level, "tokenizer": self.tokenizer}


def read_text(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None


class TextFiles(LanguageModelData):
    """Your own text: `dataset.path=<file>` (any UTF-8 text, split by lines in order), or `dataset.data_dir`
    holding a train/valid/test layout: PTB's ptb.{train,valid,test}.txt, WikiText's wiki.{train,valid,test}.tokens,
    or {train,valid,test}.txt (pytorch/examples' word_language_model layout)."""

    LAYOUTS = (
        ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt"),
        ("wiki.train.tokens", "wiki.valid.tokens", "wiki.test.tokens"),
        ("train.txt", "valid.txt", "test.txt"),
    )

    def __init__(self, path: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.path = Path(path).expanduser() if path else None

    def files(self) -> dict[str, Path]:
        if self.path is not None:
            if not self.path.is_file():
                raise DataError(f"dataset.path={self.path} {not_there(self.path)}; give a UTF-8 text file")
            return {"train": self.path}
        if self.data_dir is None:
            raise DataError(
                "lm_text needs dataset.path=<a UTF-8 text file> or dataset.data_dir=<a folder with "
                "ptb.{train,valid,test}.txt, wiki.{train,valid,test}.tokens or {train,valid,test}.txt>"
            )
        if not self.data_dir.is_dir():
            raise DataError(f"dataset.data_dir={self.data_dir} {not_there(self.data_dir, 'folder')}")
        for layout in self.LAYOUTS:
            if all((self.data_dir / name).is_file() for name in layout):
                return {split: self.data_dir / name for split, name in zip(("train", "val", "test"), layout)}
        raise DataError(
            f"dataset.data_dir={self.data_dir} holds none of the layouts "
            f"{', '.join('/'.join(layout) for layout in self.LAYOUTS)}"
        )

    def source_key(self) -> dict:
        return {split: sha256_file(path) for split, path in self.files().items()}

    def load_lines(self) -> dict[str, list[str]]:
        lines = {split: read_text(path) for split, path in self.files().items()}
        if all(not line.strip() for part in lines.values() for line in part):
            raise DataError(f"{', '.join(str(p) for p in self.files().values())}: the corpus is empty")
        return lines
