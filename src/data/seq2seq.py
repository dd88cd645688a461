"""Synthetic transduction of digit strings for the encoder-decoder: `reverse` ("0123" -> "3210", fixed length)
or `add` ("57+168" -> "225", operands of 1..length digits, so sources and targets vary in length).

Ids: 0 <pad>, 1 <bos>, 2 <eos>, then the digits 0-9 and "+". Targets end in <eos> and are padded with 0.
Generated from a fixed seed; no source string occurs in more than one split.
"""

from __future__ import annotations

import numpy as np

from src.common.errors import ConfigError
from src.data.tensors import TensorDataModule
from src.data.tokens import BOS, EOS, PAD, PAD_ID

TOKENS = [PAD, BOS, EOS, *"0123456789", "+"]
ID = {t: i for i, t in enumerate(TOKENS)}
BOS_ID, EOS_ID = ID[BOS], ID[EOS]  # (PAD_ID is 0, as in every vocabulary)


def encode(text: str, eos: bool = False) -> list[int]:
    return [ID[c] for c in text] + ([EOS_ID] if eos else [])


def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.full((len(rows), lengths.max()), PAD_ID, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


class DigitTransduction(TensorDataModule):
    task = "seq2seq"

    def __init__(
        self,
        problem: str = "reverse",
        length: int = 10,
        n_train: int = 20000,
        n_val: int = 1000,
        n_test: int = 1000,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if problem not in ("reverse", "add"):
            raise ConfigError(f"dataset.problem={problem!r} must be 'reverse' or 'add'")
        if not isinstance(length, int) or length < 1:
            raise ConfigError(f"dataset.length={length!r} must be a positive integer")
        total = n_train + n_val + n_test
        space = 10**length if problem == "reverse" else (10**length) ** 2
        if total > space // 2:
            raise ConfigError(
                f"dataset.length={length} allows too few distinct {problem} problems for "
                f"{total} samples; use a longer length or fewer samples"
            )
        self.problem, self.length, self.sizes = problem, length, (n_train, n_val, n_test)
        self.vocab_size = self.num_classes = len(TOKENS)

    def pair(self, rng: np.random.Generator) -> tuple[str, str]:
        if self.problem == "reverse":
            source = "".join(rng.choice(list("0123456789"), self.length))
            return source, source[::-1]
        a, b = (int(rng.integers(0, 10 ** int(rng.integers(1, self.length + 1)))) for _ in range(2))
        return f"{a}+{b}", str(a + b)

    def load_splits(self):
        rng = np.random.default_rng(self.split_seed)
        pairs: dict[str, str] = {}
        while len(pairs) < sum(self.sizes):  # distinct sources, so no test problem was seen in training
            source, target = self.pair(rng)
            pairs.setdefault(source, target)
        items = list(pairs.items())
        out, start = {}, 0
        for split, n in zip(("train", "val", "test"), self.sizes):
            part = items[start : start + n]
            start += n
            x, lengths = pad([encode(s) for s, _ in part])
            y, _ = pad([encode(t, eos=True) for _, t in part])
            # Fixed-length sources need no lengths (and no packing).
            out[split] = (x, None if lengths.min() == lengths.max() else lengths, y)
        return out

    def decode(self, ids) -> str:
        return "".join(TOKENS[i] for i in ids if i > EOS_ID)  # the digits and "+", not the special tokens
