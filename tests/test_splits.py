"""src/data/splits.py: the one function that carves val and test parts out of a training set."""

from __future__ import annotations

import numpy as np
import pytest

from src.common.errors import DataError
from src.data.splits import carve


def test_in_order_cuts_round_to_nearest_or_down():
    # 309 values, 0.15 / 0.15: the cuts fall at 216.3 and 262.65.
    parts = carve(309, 0.15, 0.15)
    assert [len(parts[p]) for p in ("train", "val", "test")] == [216, 47, 46]
    assert np.array_equal(np.concatenate([parts["train"], parts["val"], parts["test"]]), np.arange(309))
    down = carve(309, 0.15, 0.15, rounding="down")
    assert [len(down[p]) for p in ("train", "val", "test")] == [216, 46, 47]
    # kjv_split.py's verse counts (docs/results.md): 31,102 verses, 90/5/5, cut with int().
    kjv = carve(31102, 0.05, 0.05, rounding="down")
    assert (kjv["val"][0], kjv["test"][0]) == (27991, 29546)
    with pytest.raises(ValueError, match="rounding='up'"):
        carve(10, 0.1, 0.1, rounding="up")


def test_shuffled_parts_are_seeded_disjoint_and_sized_from_what_is_left():
    parts = carve(1000, 0.1, 0.2, seed=3)
    together = np.concatenate(list(parts.values()))
    assert len(together) == 1000 and len(np.unique(together)) == 1000
    # test first (a fifth of 1000), then val a tenth of the 800 left
    assert [len(parts[p]) for p in ("train", "val", "test")] == [720, 80, 200]
    assert all(np.array_equal(parts[p], carve(1000, 0.1, 0.2, seed=3)[p]) for p in parts)
    assert not np.array_equal(parts["test"], carve(1000, 0.1, 0.2, seed=4)["test"])
    assert all(np.all(np.diff(idx) > 0) for idx in parts.values())  # sorted: the data keeps its order


def test_labels_stratify_every_class_in_proportion():
    labels = np.repeat(np.arange(4), [100, 60, 30, 10])
    parts = carve(len(labels), 0.1, 0.1, seed=0, labels=labels)
    assert np.bincount(labels[parts["test"]]).tolist() == [10, 6, 3, 1]
    assert np.bincount(labels[parts["val"]], minlength=4).tolist() == [9, 5, 3, 1]
    plain = carve(len(labels), 0.1, 0.1, seed=0)
    assert not np.array_equal(plain["test"], parts["test"])


def test_a_zero_fraction_carves_nothing():
    parts = carve(50, 0.1, 0, seed=1)  # the data set ships its own test part
    assert len(parts["test"]) == 0 and len(parts["val"]) == 5 and len(parts["train"]) == 45
    ordered = carve(50, 0.2, 0)
    assert ordered["val"].tolist() == list(range(40, 50)) and len(ordered["test"]) == 0


@pytest.mark.parametrize("seed", [None, 0])
def test_an_empty_part_is_refused_naming_the_fractions(seed):
    with pytest.raises(DataError, match=r"^corpus: 5 samples are too few for val_fraction=0.05, test_fraction=0.05 "):
        carve(5, 0.05, 0.05, seed=seed, what="corpus")
    with pytest.raises(DataError) as e:
        carve(0, 0.1, 0.1, seed=seed)
    assert "\n" not in str(e.value) and "the train part would be empty" in str(e.value)
