"""scikit-learn's bundled 8x8 digits (1,797 images) read row by row: 8 steps x 8 features, no download."""

from __future__ import annotations

import numpy as np

from src.data.tensors import TensorDataModule


class Digits(TensorDataModule):
    def load_splits(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        return {"train": (digits.images.astype(np.float32) / 16.0, digits.target.astype(np.int64))}
