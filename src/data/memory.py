"""The memory tasks: generated token problems that separate recurrent architectures by what they can store and recall.

Every task is many-to-many ('steps'): an answer class at some steps, IGNORE (-100) at every other, so the loss,
`acc` (token accuracy) and `exact_match` (every answer of a sequence right) count the answer steps only. Input ids
start at 1 (0 is padding, unused); `vocab_size` counts the task's data symbols, the special tokens come on top.

selective_copy (Gu & Dao 2023, Mamba; Feng et al. 2024, minGRU Table 1): `n_tokens` data symbols (of
    `vocab_size`) at random positions among noise tokens in the first seq_len - n_tokens steps, then n_tokens
    marker steps; at the markers, the data symbols in the order they came. seq_len is the whole length.
mqar (Arora et al. 2023, Zoology's multi-query associative recall): `num_pairs` key-value pairs (distinct keys from
    the first half of `vocab_size`, distinct values from the second), k1 v1 k2 v2 ..., then every key once more,
    in random order at random positions among blanks; at each queried key, its value. seq_len is the whole length.
    Its test/baseline_context_acc = 1 / num_pairs: guessing among the sequence's own values, no key-value recall.
parity (Deletang et al. 2023; the xLSTM paper's formal languages): a bit string; at every step, the parity of the
    bits so far. Train and val strings have `seq_len` bits, test strings `test_len` (longer: length
    generalisation), so val/* is the trained length and test/* the longer one.
induction (Olsson et al. 2022; the safari / zoology synthetics): random symbols of `vocab_size`, with a trigger
    token `n_triggers` times (the last at the final step); at each trigger after the first, the symbol that followed
    the trigger's previous occurrence.

Each split has its own generator seeded from (split_seed, split), so n_train leaves val and test as they were.
Val and test hold no sequence that is also in an earlier split: one that is gets replaced by a fresh draw (in
practice only parity's short strings ever collide; the others' sequences are far too many).
`baselines()` (logged as test/baseline_*) is what always answering the test split's most frequent answer class
scores: acc, exact_match, and loss = the entropy of the answer classes (predicting their frequencies).
"""

from __future__ import annotations

import hashlib

import numpy as np

from src.common.errors import ConfigError, DataError
from src.data.synthetic import SPLITS, Synthetic
from src.data.tokens import IGNORE


def _integer(name: str, value, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ConfigError(f"dataset.{name}={value!r} must be an integer >= {minimum}")
    return value


def random_subsets(rng: np.random.Generator, n: int, size: int, k: int, ordered: bool = False) -> np.ndarray:
    """[n, k] distinct integers of range(size) per row: sorted, or in random order with `ordered`."""
    rows = max(1, (1 << 22) // size)  # a chunk of rows at a time: n * size random floats need not fit at once
    parts = []
    for start in range(0, n, rows):
        keys = rng.random((min(rows, n - start), size))
        parts.append(np.argsort(keys, axis=1)[:, :k])
    picked = np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)
    return picked if ordered else np.sort(picked, axis=1)


def _digests(x: np.ndarray) -> list[bytes]:
    return [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in np.ascontiguousarray(x)]


def constant_baselines(y: np.ndarray) -> dict[str, float]:
    """What always answering the most frequent answer class of y scores (answers are y != IGNORE)."""
    valid = y != IGNORE
    counts = np.bincount(y[valid])
    top, p = int(counts.argmax()), counts[counts > 0] / counts.sum()
    answered = valid.any(axis=1)
    whole = np.all((y == top) | ~valid, axis=1)[answered]
    return {
        "acc": float(counts[top] / counts.sum()),
        "exact_match": float(whole.mean()),
        "loss": float(-(p * np.log(p)).sum()),
    }


class MemoryTask(Synthetic):
    task = "steps"
    SPECIAL = 1  # input ids below the data symbols' (0, padding, and the task's own tokens)

    def __init__(self, seq_len: int = 64, vocab_size: int = 8, **kwargs):
        super().__init__(seq_len=seq_len, **kwargs)
        self.symbols = _integer("vocab_size", vocab_size, 2)
        self.vocab_size = self.SPECIAL + self.symbols  # input ids (the data module's vocab_size)

    def make(self, n: int, rng: np.random.Generator, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load_splits(self):
        splits, seen = {}, set()
        for k, split in enumerate(SPLITS):
            rng = np.random.default_rng([self.split_seed, k])
            x, y = self.make(self.sizes[split], rng, split)
            if split != "train":
                x, y = self._unseen(x, y, rng, split, seen)
            seen.update(_digests(x))
            splits[split] = (x, y)
        return splits

    def _unseen(self, x, y, rng, split, seen, rounds: int = 1000):
        """x, y without the sequences of earlier splits, topped up with fresh ones from the same generator."""
        keep = np.array([d not in seen for d in _digests(x)], dtype=bool)
        xs, ys, have = [x[keep]], [y[keep]], int(keep.sum())
        for _ in range(rounds):
            if have >= len(x):
                break
            more_x, more_y = self.make(len(x) - have, rng, split)
            keep = np.array([d not in seen for d in _digests(more_x)], dtype=bool)
            xs.append(more_x[keep])
            ys.append(more_y[keep])
            have += int(keep.sum())
        if have < len(x):
            raise DataError(
                f"{type(self).__name__}: could not draw {len(x)} {split} sequences unlike the earlier "
                f"splits'; lower dataset.n_{split} or make the sequences longer"
            )
        return np.concatenate(xs)[: len(x)], np.concatenate(ys)[: len(x)]

    def baselines(self) -> dict[str, float]:
        return constant_baselines(self.splits["test"][2].numpy())


class SelectiveCopy(MemoryTask):
    """Input ids: 0 padding, 1 noise, 2 the marker, 3.. the data symbols. Classes: the data symbols."""

    SPECIAL = 3
    NOISE, MARKER = 1, 2

    def __init__(self, seq_len: int = 128, n_tokens: int = 8, vocab_size: int = 8, **kwargs):
        super().__init__(seq_len=seq_len, vocab_size=vocab_size, **kwargs)
        self.n_tokens = _integer("n_tokens", n_tokens, 1)
        if seq_len < 2 * n_tokens:
            raise ConfigError(
                f"dataset.seq_len={seq_len} leaves too few steps for dataset.n_tokens={n_tokens} data "
                f"tokens and their {n_tokens} answer steps; use seq_len >= {2 * n_tokens}"
            )
        self.num_classes = self.symbols

    def make(self, n, rng, split="train"):
        k, region = self.n_tokens, self.seq_len - self.n_tokens
        where = random_subsets(rng, n, region, k)
        data = rng.integers(0, self.symbols, (n, k))
        x = np.full((n, self.seq_len), self.NOISE, dtype=np.int64)
        x[np.arange(n)[:, None], where] = data + self.SPECIAL
        x[:, region:] = self.MARKER
        y = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        y[:, region:] = data
        return x, y


class MQAR(MemoryTask):
    """Input ids: 0 padding, 1 blank, 2.. the keys (vocab_size // 2), then the values. Classes: the values."""

    SPECIAL = 2
    BLANK = 1

    def __init__(self, seq_len: int = 64, num_pairs: int = 8, vocab_size: int = 64, **kwargs):
        super().__init__(seq_len=seq_len, vocab_size=vocab_size, **kwargs)
        self.num_pairs = _integer("num_pairs", num_pairs, 1)
        self.keys, self.values = vocab_size // 2, vocab_size - vocab_size // 2
        if self.keys < num_pairs:
            raise ConfigError(
                f"dataset.vocab_size={vocab_size} has {self.keys} keys, fewer than the "
                f"dataset.num_pairs={num_pairs} distinct keys a sequence needs; use vocab_size >= "
                f"{2 * num_pairs}"
            )
        if seq_len < 3 * num_pairs:
            raise ConfigError(
                f"dataset.seq_len={seq_len} cannot hold dataset.num_pairs={num_pairs} pairs (2 steps "
                f"each) and their {num_pairs} queries; use seq_len >= {3 * num_pairs}"
            )
        self.num_classes = self.values

    def make(self, n, rng, split="train"):
        p, context = self.num_pairs, 2 * self.num_pairs
        keys = random_subsets(rng, n, self.keys, p, ordered=True)
        values = random_subsets(rng, n, self.values, p, ordered=True)
        x = np.full((n, self.seq_len), self.BLANK, dtype=np.int64)
        x[:, 0:context:2] = keys + self.SPECIAL
        x[:, 1:context:2] = values + self.SPECIAL + self.keys
        where = context + random_subsets(rng, n, self.seq_len - context, p)  # the query steps, in order
        asked = random_subsets(rng, n, p, p, ordered=True)  # which pair each query asks for
        rows = np.arange(n)[:, None]
        x[rows, where] = np.take_along_axis(keys, asked, axis=1) + self.SPECIAL
        y = np.full((n, self.seq_len), IGNORE, dtype=np.int64)
        y[rows, where] = np.take_along_axis(values, asked, axis=1)
        return x, y

    def baselines(self) -> dict[str, float]:
        """Also context_acc: a uniform guess among the sequence's own num_pairs values, what a model scores that
        has learnt to answer a value from the context but not which key it goes with."""
        return {**super().baselines(), "context_acc": 1 / self.num_pairs}


class Parity(MemoryTask):
    """Input ids: 0 padding, 1 bit 0, 2 bit 1. Classes: the parity so far (0 even, 1 odd), at every step."""

    SPECIAL = 1

    def __init__(self, seq_len: int = 32, test_len: int = 64, **kwargs):
        super().__init__(seq_len=seq_len, vocab_size=2, **kwargs)
        self.test_len = _integer("test_len", test_len, seq_len)
        if seq_len < 64:  # short strings: val (and a test of the same length) must find enough strings unlike train's
            need = self.sizes["train"] + self.sizes["val"] + (self.sizes["test"] if test_len == seq_len else 0)
            if 2**seq_len < need:
                raise ConfigError(
                    f"dataset.seq_len={seq_len} has only {2**seq_len} bit strings, fewer than the "
                    f"{need} of the splits (which must not share one); use a longer seq_len or "
                    f"fewer dataset.n_train / n_val"
                )
        self.num_classes = 2

    def make(self, n, rng, split="train"):
        bits = rng.integers(0, 2, (n, self.test_len if split == "test" else self.seq_len))
        return bits + self.SPECIAL, np.cumsum(bits, axis=1) % 2


class Induction(MemoryTask):
    """Input ids: 0 padding, 1 the trigger, 2.. the symbols. Classes: the symbols."""

    SPECIAL = 2
    TRIGGER = 1

    def __init__(self, seq_len: int = 64, n_triggers: int = 2, vocab_size: int = 16, **kwargs):
        super().__init__(seq_len=seq_len, vocab_size=vocab_size, **kwargs)
        self.n_triggers = _integer("n_triggers", n_triggers, 2)
        if seq_len < 2 * n_triggers - 1:
            raise ConfigError(
                f"dataset.seq_len={seq_len} cannot hold dataset.n_triggers={n_triggers} triggers, each "
                f"but the last followed by a symbol; use seq_len >= {2 * n_triggers - 1}"
            )
        self.num_classes = self.symbols

    def make(self, n, rng, split="train"):
        m, t = self.n_triggers, self.seq_len
        x = rng.integers(0, self.symbols, (n, t)) + self.SPECIAL
        # Triggers at p_1 < ... < p_{m-1} <= t - 3, two steps apart at least (a symbol after each), and at t - 1.
        early = random_subsets(rng, n, t - m, m - 1) + np.arange(m - 1)
        where = np.concatenate([early, np.full((n, 1), t - 1)], axis=1)
        rows = np.arange(n)[:, None]
        x[rows, where] = self.TRIGGER
        y = np.full((n, t), IGNORE, dtype=np.int64)
        y[rows, where[:, 1:]] = x[rows, where[:, :-1] + 1] - self.SPECIAL
        return x, y
