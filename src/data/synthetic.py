"""The classic long-range problems, generated from a fixed seed (the same data for every run).

adding (Hochreiter & Schmidhuber 1997; as Arjovsky et al. 2016): T steps of (value ~ U(0, 1), marker); exactly
two markers, one in each half; the target is the sum of the two marked values. Always answering 1 scores
MSE = Var(U + U) = 1/6 ~ 0.167, so anything near that has learned nothing.

copy (Arjovsky et al. 2016): 10 symbols from 8, then T blanks of which the last is a delimiter, then 10 blanks;
the targets are blanks until the delimiter's 10 followers, which must reproduce the 10 symbols. A model that
remembers nothing predicts blank until then and a uniform guess after: cross-entropy 10 ln 8 / (T + 20).
"""

from __future__ import annotations

import math

import numpy as np

from src.common.errors import ConfigError
from src.data.tensors import TensorDataModule

SPLITS = ("train", "val", "test")


class Synthetic(TensorDataModule):
    def __init__(self, seq_len: int = 100, n_train: int = 20000, n_val: int = 1000, n_test: int = 2000, **kwargs):
        super().__init__(**kwargs)
        for name, value in (("seq_len", seq_len), ("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
            if not isinstance(value, int) or value < 2:
                raise ConfigError(f"dataset.{name}={value!r} must be an integer >= 2")
        self.seq_len, self.sizes = seq_len, {"train": n_train, "val": n_val, "test": n_test}

    def make(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def load_splits(self):
        # One generator per split, seeded from split_seed: changing n_train leaves val and test as they were.
        return {
            split: self.make(self.sizes[split], np.random.default_rng([self.split_seed, k]))
            for k, split in enumerate(SPLITS)
        }


class Adding(Synthetic):
    task = "regress"

    def make(self, n, rng):
        t = self.seq_len
        values = rng.random((n, t), dtype=np.float32)
        first = rng.integers(0, t // 2, n)
        second = rng.integers(t // 2, t, n)
        markers = np.zeros((n, t), dtype=np.float32)
        markers[np.arange(n), first] = 1.0
        markers[np.arange(n), second] = 1.0
        x = np.stack([values, markers], axis=-1)
        y = (values[np.arange(n), first] + values[np.arange(n), second]).reshape(n, 1)
        self.num_classes = 1
        return x, y.astype(np.float32)

    def baselines(self) -> dict[str, float]:
        """Always answering 1 (the mean of the target), measured on the test split."""
        y = self.splits["test"][2].numpy()
        return {"mse": float(np.mean((y - 1.0) ** 2)), "mae": float(np.mean(np.abs(y - 1.0)))}


class Copy(Synthetic):
    """Input ids: 0 padding (unused), 1 blank, 2..9 the 8 symbols, 10 the delimiter. Target classes: 0 blank,
    1..8 the symbols. Sequences are T + 20 steps long."""

    task = "steps"
    SYMBOLS, COPIED = 8, 10

    def make(self, n, rng):
        t, k = self.seq_len, self.COPIED
        symbols = rng.integers(1, self.SYMBOLS + 1, (n, k))
        x = np.ones((n, t + 2 * k), dtype=np.int64)  # blanks
        x[:, :k] = symbols + 1
        x[:, k + t - 1] = self.SYMBOLS + 2  # the delimiter: the last of the T blanks
        y = np.zeros((n, t + 2 * k), dtype=np.int64)
        y[:, -k:] = symbols
        self.vocab_size, self.num_classes = self.SYMBOLS + 3, self.SYMBOLS + 1
        return x, y

    def baselines(self) -> dict[str, float]:
        return {"loss": self.COPIED * math.log(self.SYMBOLS) / (self.seq_len + 2 * self.COPIED)}
