"""Carving val and test parts out of a training set: the one place that decides which sample goes where.

`carve(n, val_fraction, test_fraction, ...)` -> {"train", "val", "test"}: sorted index arrays into the n samples.
A fraction of 0 carves nothing (the data set ships that part itself); its index array is empty. Two ways:

- in order (`seed=None`): time series and text streams, whose neighbouring samples are not independent. Train is
  the first samples, then val, then test (the end); the cuts are at n * (1 - val - test) and n * (1 - test),
  rounded to the nearest sample, or down with `rounding="down"` (the language-model corpora, as kjv_split.py in
  docs/results.md does: the split its word-level KJV comparison was made on).
- shuffled (`seed=s`): test is drawn first (seed s), then val from what is left (seed s + 1), each its fraction of
  what it is drawn from; stratified by class when `labels` (one integer class per sample) are given, so every
  class is spread in proportion. The same seed gives the same indices, so runs with other seeds see the same data.

A part that would come out empty is refused (a DataError naming the fractions), never trained or tested on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from src.common.errors import DataError

PARTS = ("train", "val", "test")


def carve(
    n: int,
    val_fraction: float,
    test_fraction: float,
    seed: int | None = None,
    labels: np.ndarray | None = None,
    rounding: str = "nearest",
    what: str = "the data",
) -> dict[str, np.ndarray]:
    """Index arrays of the train, val and test parts of n samples (module docstring: the rules)."""
    if rounding not in ("nearest", "down"):
        raise ValueError(f"rounding={rounding!r} must be 'nearest' or 'down'")
    if seed is None:
        cut = (lambda v: int(v)) if rounding == "down" else (lambda v: int(round(v)))
        # The two expressions as every in-order split wrote them, so the cuts (floats) land where they did.
        val_start, test_start = cut(n * (1 - val_fraction - test_fraction)), cut(n * (1 - test_fraction))
        parts = {
            "train": np.arange(0, val_start),
            "val": np.arange(val_start, test_start),
            "test": np.arange(test_start, n),
        }
    else:
        train = np.arange(n)
        parts = {}
        for name, fraction, part_seed in (("test", test_fraction, seed), ("val", val_fraction, seed + 1)):
            if not fraction:
                parts[name] = np.arange(0)
                continue
            if labels is None:
                keep, held = seeded_split(len(train), [1 - fraction, fraction], part_seed)
            else:
                keep, held = stratified_split(np.asarray(labels)[train], [1 - fraction, fraction], part_seed)
            parts[name], train = train[held], train[keep]
        parts["train"] = train
    for name, fraction in (("train", 1), ("val", val_fraction), ("test", test_fraction)):
        if fraction and len(parts[name]) == 0:
            raise DataError(
                f"{what}: {n} samples are too few for val_fraction={val_fraction}, test_fraction="
                f"{test_fraction} (the {name} part would be empty); use more data or change dataset.val_fraction "
                f"/ dataset.test_fraction"
            )
    return {name: parts[name] for name in PARTS}


def seeded_split(n: int, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Sorted index arrays, one per fraction, of a seeded random permutation of n samples."""
    idx = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * n).astype(int)
    return [np.sort(part) for part in np.split(idx, bounds[:-1])]


def stratified_split(y: np.ndarray, fractions: Sequence[float], seed: int) -> list[np.ndarray]:
    """Index arrays, one per fraction, with every class spread in proportion; the same for the same seed."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[] for _ in fractions]
    for cls in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == cls))
        bounds = np.round(np.cumsum(fractions) / np.sum(fractions) * len(idx)).astype(int)
        for k, chunk in enumerate(np.split(idx, bounds[:-1])):
            parts[k].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]
