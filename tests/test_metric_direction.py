"""One rule says which way a metric improves: the task's monitor check and the leaderboard's ranking agree."""

import pytest

from src.common.metrics import better
from src.compare.leaderboard import metric_of


@pytest.mark.parametrize(
    "name, direction",
    [
        ("val/loss", "min"),
        ("test/rollout_mse", "min"),
        ("test/ppl", "min"),
        ("val_loss", "min"),
        ("test/acc", "max"),
        ("val/exact_match", "max"),
        ("test/F1", "max"),
        ("test/baseline_acc", "max"),
        ("test/samples_per_s", None),
    ],
)
def test_the_direction_comes_from_the_words_of_the_name(name, direction):
    assert better(name) == direction


@pytest.mark.parametrize("name", ["test/loss", "test/rollout_mse", "test/acc", "test/exact_match", "test/bpc"])
def test_the_leaderboard_ranks_as_the_rule_says(name):
    # a record whose monitor is another metric: the leaderboard falls back to the rule
    _, higher = metric_of({"monitor": "val/other", "monitor_mode": "max"}, name)
    assert higher == (better(name) == "max")
