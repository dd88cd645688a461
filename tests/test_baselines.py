"""Trivial baselines for the task families that had none (src/data/baselines.py): majority class, most frequent tag,
unigram language model, most frequent target token; recorded as test/baseline_* by every run."""

from __future__ import annotations

import math

import pytest
import torch

from src.data.baselines import constant_class, unigram
from src.data.tokens import IGNORE
from src.train import train


def test_majority_class_from_the_training_split():
    train_y, test_y = torch.tensor([0, 0, 1, 2]), torch.tensor([0, 1, 1, 0])
    found = constant_class(train_y, test_y, 3)
    assert found["acc"] == 0.5  # class 0, the training majority, is right on half the test labels
    prior = [3 / 7, 2 / 7, 2 / 7]  # add-one smoothed training frequencies
    assert found["loss"] == pytest.approx(-(2 * math.log(prior[0]) + 2 * math.log(prior[1])) / 4)
    # torchmetrics' macro F1 (the task's own metric) over the classes present: class 0 scores 2/3, class 1 nothing
    assert found["f1"] == pytest.approx((2 * 0.5 / 1.5) / 2)


def test_most_frequent_tag_leaves_padding_out():
    train_y = torch.tensor([[1, 1, 2, IGNORE], [1, IGNORE, IGNORE, IGNORE]])
    test_y = torch.tensor([[2, 1, IGNORE], [1, 1, 2]])
    assert constant_class(train_y, test_y, 3, ignore=IGNORE)["acc"] == pytest.approx(3 / 5)


@pytest.mark.parametrize("level,key", [("word", "ppl"), ("char", "bpc")])
def test_unigram_language_model(level, key):
    found = unigram(torch.tensor([1, 1, 2, 3]), torch.tensor([1, 2, 1]), 4, level)
    prior = [1 / 8, 3 / 8, 2 / 8, 2 / 8]
    loss = -(math.log(prior[2]) + math.log(prior[1])) / 2  # the next tokens 2, 1
    assert found["loss"] == pytest.approx(loss) and found["acc"] == 0.5
    assert found[key] == pytest.approx(math.exp(loss) if key == "ppl" else loss / math.log(2))


def test_a_classification_run_records_its_baseline(cfg_factory):
    record = train(cfg_factory("dataset=digits", "debug=fdr"))
    assert 0.05 < record["test/baseline_acc"] < 0.2  # ten balanced classes: about one in ten
    assert record["test/baseline_loss"] == pytest.approx(math.log(10), abs=0.05)
    assert "test/baseline_f1" in record
