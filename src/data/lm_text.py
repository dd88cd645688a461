"""Language-model corpora: text -> a vocabulary and one stream of token ids per split.

`level=char`: every character is a token and each line ends with "\\n". `level=word`: the corpus' word
tokenizer (`kjv`, `whitespace`, `jieba`, or the corpus' own gold segmentation) and `<eos>` after every line,
as the PTB convention that pytorch/examples' word_language_model follows. The vocabulary comes from the
training split only; anything else is `<unk>`. Id 0 is `<pad>`, which no stream contains.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from src.data.sources import cached_arrays
from src.data.splits import carve
from src.data.streams import StreamDataModule
from src.data.tokens import EOS, PAD, UNK
from src.errors import ConfigError, DataError
from src.files import sha256_file


def _kjv_words(line: str) -> list[str]:
    # The same tokenization as kjv_split.py (docs/results.md): lower-case, words with inner apostrophes, and every
    # other non-space character (punctuation) a token of its own.
    return re.findall(r"[a-z]+(?:'[a-z]+)?|[^\sa-z]", line.lower())


def _jieba_words(line: str) -> list[str]:
    import jieba

    jieba.setLogLevel(60)  # its "Building prefix dict" chatter
    return [w for w in jieba.lcut(line) if w.strip()]


WORD_TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "whitespace": str.split,
    "kjv": _kjv_words,
    "jieba": _jieba_words,
}


def tokenize(line: str, level: str, tokenizer: str) -> list[str]:
    """One line -> its tokens, end-of-line marker included."""
    if level == "char":
        return list(line) + ["\n"]
    return WORD_TOKENIZERS[tokenizer](line) + [EOS]


class Vocab:
    """Tokens <-> ids. Saved with every run (in the checkpoint, as a plain list) so generation can map tokens."""

    def __init__(self, tokens: Sequence[str]):
        self.tokens = list(tokens)
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if self.tokens[:2] != [PAD, UNK] or len(self.index) != len(self.tokens):
            raise DataError("a vocabulary starts with <pad>, <unk> and holds each token once")

    @classmethod
    def build(cls, lines: Iterable[list[str]], level: str, min_freq: int = 1, max_size: int | None = None) -> Vocab:
        counts = collections.Counter(t for tokens in lines for t in tokens)
        specials = [PAD, UNK] + ([EOS] if level == "word" else [])
        for s in specials:
            counts.pop(s, None)  # a corpus may spell <unk> itself (PTB does)
        ranked = [t for t, n in counts.most_common() if n >= min_freq]  # ties keep first-seen order
        return cls(specials + ranked[:max_size])

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Iterable[str]) -> list[int]:
        unk = self.index[UNK]
        return [self.index.get(t, unk) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]


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
        tokenizer = tokenizer or (self.word_tokenizer if level == "word" else "char")
        if level == "word" and tokenizer not in WORD_TOKENIZERS:
            raise ConfigError(f"dataset.tokenizer={tokenizer!r} is not one of {sorted(WORD_TOKENIZERS)}")
        if not isinstance(min_freq, int) or min_freq < 1:
            raise ConfigError(f"dataset.min_freq={min_freq} must be a positive integer")
        self.level, self.min_freq, self.max_words, self.tokenizer = level, min_freq, max_words, tokenizer
        self.vocab: Vocab | None = None

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

    def load_streams(self):
        key = {
            **self.source_key(),
            "level": self.level,
            "tokenizer": self.tokenizer,
            "min_freq": self.min_freq,
            "max_words": self.max_words,
            "val": self.val_fraction,
            "test": self.test_fraction,
            "v": 1,
        }

        def build() -> dict[str, np.ndarray]:
            tokens = {
                split: [tokenize(line, self.level, self.tokenizer) for line in part]
                for split, part in self._split_lines().items()
            }
            vocab = Vocab.build(tokens["train"], self.level, self.min_freq, self.max_words)
            arrays = {
                split: np.array(vocab.encode(t for line in part for t in line), dtype=np.int64)
                for split, part in tokens.items()
            }
            return {**arrays, "vocab": np.array(vocab.tokens, dtype=np.str_)}

        arrays = cached_arrays(self.cache_dir, type(self).__name__.lower(), key, build)
        self.vocab = Vocab(arrays["vocab"].tolist())
        self.vocab_size = len(self.vocab)
        return {split: (arrays[split], None) for split in ("train", "val", "test")}

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
                raise DataError(f"dataset.path={self.path} is not a file")
            return {"train": self.path}
        if self.data_dir is None:
            raise DataError(
                "lm_text needs dataset.path=<a UTF-8 text file> or dataset.data_dir=<a folder with "
                "ptb.{train,valid,test}.txt, wiki.{train,valid,test}.tokens or {train,valid,test}.txt>"
            )
        if not self.data_dir.is_dir():
            raise DataError(f"dataset.data_dir={self.data_dir} does not exist")
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
