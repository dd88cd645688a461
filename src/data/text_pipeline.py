"""The one text pipeline of every text data set (classification, tagging, language models): text -> tokens
(a tokenizer by name) -> ids (a Vocabulary, built with gensim's Dictionary), each stage cached.

Caches are .npz (no pickle) named by the sha256 of their key (the source's checksums and every setting that
shapes them, plus FORMAT), written atomically (src.data.sources.cached_arrays), and read back through a reader
that checks what it reads: a cache that does not hold what its reader expects is refused and rebuilt.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import logging
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.common.errors import ConfigError, DataError
from src.data.sources import cache_path, cached_arrays
from src.data.tokens import PAD, PAD_ID, UNK, UNK_ID

logging.getLogger("gensim").setLevel(logging.WARNING)  # its INFO lines per call would drown the run's log

# The special tokens and their ids, the same in every vocabulary: ids 0 and 1 always; <eos> (language models at
# word level) is 2 where the vocabulary has it. The embedding's padding_idx is PAD_ID.
SPLITS = ("train", "val", "test")
# Part of every cache key: caches written by an older layout of the pipeline are never read, only rebuilt.
FORMAT = 2

# -- tokenizers -------------------------------------------------------------------------------------------------
_ENGLISH = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[^\sa-z0-9]")
# The tokenization of kjv_split.py (docs/results.md): lower-case, words with inner apostrophes, every other
# non-space character (punctuation, digits) a token of its own.
_KJV = re.compile(r"[a-z]+(?:'[a-z]+)?|[^\sa-z]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
# Separators of the tokens cache; clean() removes them (all control characters) from texts before tokenizing.
_TOK, _DOC = "\x1f", "\x1e"


@functools.cache
def jieba():
    """The jieba module, set up once for every user (its "Building prefix dict" lines silenced)."""
    import jieba as module

    module.setLogLevel(logging.WARNING)
    return module


def _jieba_words(text: str) -> list[str]:
    return [w for w in jieba().lcut(text) if not w.isspace()]


def _characters(text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "char": _characters,  # one token per character, whitespace dropped
    "verbatim": list,  # every character as written, spaces included (character-level language models)
    "whitespace": str.split,
    "english": lambda text: _ENGLISH.findall(text.lower()),  # lower-case words and numbers, punctuation
    "kjv": lambda text: _KJV.findall(text.lower()),
    "jieba": _jieba_words,  # jieba's word segmentation (Chinese)
    "word": _jieba_words,  # the classification configs' name for jieba
}


def tokenizer(kind: str) -> Callable[[str], list[str]]:
    """The tokenizer of that name. No tokenizer but `verbatim` ever yields whitespace as a token."""
    if kind not in TOKENIZERS:
        raise ConfigError(f"dataset.tokenizer={kind!r} is not one of {sorted(TOKENIZERS)}")
    return TOKENIZERS[kind]


def tokenizer_version(kind: str) -> str:
    """Part of the cache keys: a new jieba may segment differently."""
    if kind in ("jieba", "word"):
        return f"jieba-{jieba().__version__}"
    return f"{kind}-1"


def clean(text: str) -> str:
    """Control characters (tab and newline excepted) read as spaces."""
    return _CONTROL.sub(" ", text)


# -- vocabulary -------------------------------------------------------------------------------------------------
class Vocabulary:
    """Tokens <-> ids: <pad> (0), <unk> (1), the data set's other special tokens, then the kept tokens. gensim's
    Dictionary counts and filters the training tokens (build); runs, caches and checkpoints keep the plain token
    list, and Vocabulary(tokens) maps with it without importing gensim (a second or more per process).
    Indexing, `in` and iteration are the token list's."""

    def __init__(self, tokens: Iterable[str]):
        self.tokens = [str(t) for t in tokens]
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if self.tokens[:2] != [PAD, UNK] or len(self.index) != len(self.tokens):
            raise DataError(f"a vocabulary starts with {PAD}, {UNK} and holds each token once: {self.tokens[:5]}...")

    def __repr__(self) -> str:  # by content (a data module's splits_key reads it), not by address
        digest = hashlib.sha256("\n".join(self.tokens).encode()).hexdigest()[:16]
        return f"Vocabulary({len(self.tokens)} tokens, sha256 {digest})"

    @classmethod
    def build(
        cls,
        docs: Sequence[Sequence[str]],
        min_freq: int = 1,
        max_size: int | None = None,
        specials: Sequence[str] = (),
        count: str = "documents",
        where: str = "the training split",
    ) -> Vocabulary:
        """From the training docs. count="documents" (classification, tagging): a token is kept if it occurs in
        at least `min_freq` docs, the `max_size` in the most docs kept (gensim's filter_extremes, as in the
        tutorial), in gensim's order. count="occurrences" (language models): at least `min_freq` occurrences,
        the `max_size` most frequent kept, most frequent first (ties in order of first appearance). A special token spelt in
        the text (PTB writes <unk>) reads as that special token."""
        from gensim.corpora import Dictionary

        if not isinstance(min_freq, int) or isinstance(min_freq, bool) or min_freq < 1:
            raise ConfigError(f"dataset.min_freq={min_freq!r} must be a positive integer")
        if max_size is not None and (not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 1):
            raise ConfigError(f"dataset.max_size={max_size!r} must be a positive integer or null (no limit)")
        if count not in ("documents", "occurrences"):
            raise ValueError(f"count={count!r}")
        specials = [PAD, UNK, *specials]
        dictionary = Dictionary(docs)
        dictionary.filter_tokens(bad_ids=[dictionary.token2id[t] for t in specials if t in dictionary.token2id])
        if count == "documents":
            most = max(dictionary.dfs.values(), default=0)
            dictionary.filter_extremes(no_below=min_freq, no_above=1.0, keep_n=max_size)
            kept = [dictionary[i] for i in range(len(dictionary))]
        else:
            most = max(dictionary.cfs.values(), default=0)
            counts = {t: dictionary.cfs[i] for t, i in dictionary.token2id.items()}
            # Ties in order of first appearance, as collections.Counter.most_common ranks them: kjv_split.py
            # (docs/results.md) made the peer check's corpus that way, and lm_kjv must keep the same 9,999 words.
            seen = (t for t in dict.fromkeys(itertools.chain.from_iterable(docs)) if t in counts)
            ranked = sorted(seen, key=counts.__getitem__, reverse=True)
            kept = [t for t in ranked if counts[t] >= min_freq][:max_size]
        if not kept:
            if count == "documents":
                how = f"training texts (the most common appears in {most})"
            else:
                how = f"places in training (the most common appears {most} times)"
            raise ConfigError(
                f"dataset.min_freq={min_freq} leaves an empty vocabulary: no token of {where} appears in that many "
                f"{how}; lower dataset.min_freq"
            )
        return cls(specials + kept)

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, index):
        return self.tokens[index]

    def __iter__(self):
        return iter(self.tokens)

    def __contains__(self, token) -> bool:
        return token in self.index

    def encode(self, tokens: Iterable[str]) -> list[int]:
        """Ids; a token outside the vocabulary is UNK_ID (as gensim's Dictionary.doc2idx with that default)."""
        index = self.index
        return [index.get(t, UNK_ID) for t in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def encode_padded(self, docs: Sequence[Sequence[str]], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Padded ids [N, T] (T = the longest kept length; PAD_ID after each doc's end) and true lengths [N];
        tokens past max_len are cut."""
        lengths = np.array([min(len(d), max_len) for d in docs], dtype=np.int64)
        x = np.full((len(docs), int(lengths.max(initial=1))), PAD_ID, dtype=np.int32)
        for i, doc in enumerate(docs):
            x[i, : lengths[i]] = self.encode(doc[:max_len])
        return x, lengths

    def check_ids(self, ids: np.ndarray, what: str) -> None:
        """A cache's ids must index this vocabulary: raises ValueError (the cache is then rebuilt)."""
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= len(self)):
            raise ValueError(f"{what} holds ids outside 0..{len(self) - 1}")


# -- the tokens cache's layout: token lists as one UTF-8 byte array --------------------------------------------
def pack(docs: Sequence[Sequence[str]]) -> dict[str, np.ndarray]:
    """Token lists -> {"tokens": bytes, "n": count}; no pickle in caches. Tokens come from clean() text (and
    POS tags from whitespace-split text), so the separators cannot occur in them."""
    blob = _DOC.join(_TOK.join(d) for d in docs).encode("utf-8")
    return {"tokens": np.frombuffer(blob, dtype=np.uint8), "n": np.array(len(docs))}


def unpack(tokens: np.ndarray, n: np.ndarray) -> list[list[str]]:
    """pack's inverse; a count that does not match is a damaged cache (ValueError)."""
    n = int(n)
    docs = [] if n == 0 else [d.split(_TOK) if d else [] for d in tokens.tobytes().decode("utf-8").split(_DOC)]
    if len(docs) != n:
        raise ValueError(f"{len(docs)} token lists where {n} were written")
    return docs


def pack_splits(splits: dict[str, Sequence[Sequence[str]]]) -> dict[str, np.ndarray]:
    return {f"{split}_{k}": v for split, docs in splits.items() for k, v in pack(docs).items()}


def unpack_splits(arrays: dict[str, np.ndarray]) -> dict[str, list[list[str]]]:
    return {split: unpack(arrays[f"{split}_tokens"], arrays[f"{split}_n"]) for split in SPLITS}


# -- caches -----------------------------------------------------------------------------------------------------
def cache_file(cache_dir: Path, name: str, key: dict) -> Path:
    """Where cached() keeps the arrays for (name, key)."""
    return cache_path(cache_dir, name, {**key, "text_format": FORMAT})


def cached(
    cache_dir: Path,
    name: str,
    key: dict,
    build: Callable[[], dict[str, np.ndarray]],
    read: Callable[[dict[str, np.ndarray]], Any],
) -> Any:
    """read(arrays) of the cache for (name, key), built with build() when absent. If read fails on a stored
    cache (a missing array, a count or an id that does not fit, bytes that are not UTF-8), the cache is
    refused: deleted, rebuilt and read again, with a warning. A fresh build that read refuses is a bug: raised."""
    path = cache_file(cache_dir, name, key)
    key = {**key, "text_format": FORMAT}
    stored = path.exists()
    arrays = cached_arrays(cache_dir, name, key, build)
    if not stored:
        return read(arrays)
    try:
        return read(arrays)
    except (KeyError, ValueError, IndexError, UnicodeDecodeError, DataError) as e:
        path.unlink(missing_ok=True)
        print(f"warning: cache {path} did not hold what was written ({e}); rebuilt it", file=sys.stderr)
    return read(cached_arrays(cache_dir, name, key, build))
