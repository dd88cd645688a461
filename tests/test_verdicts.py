"""Verdicts with ties (python -m src.compare): per task the best row and every row not significantly different from it
are marked together (★, the winning group), a row at or below the trivial baseline never; the test is named; the
reference of --significance may be any combination of settings. On a hand-written fake sweep."""

from __future__ import annotations

import csv

import pytest

from src.compare.report import main as compare
from tests.test_compare import DIGITS, make_grid_run, make_run

# Per cell: three seeds. lstm and gru overlap (tied); rnn is clearly worse; minimal sits at the baseline (0.11).
VALUES = {
    "lstm": (0.90, 0.91, 0.92),
    "gru": (0.905, 0.895, 0.915),
    "rnn": (0.60, 0.61, 0.62),
    "minimal": (0.10, 0.11, 0.105),
}


@pytest.fixture
def fake_sweep(tmp_path):
    for cell, values in VALUES.items():
        for seed, value in enumerate(values, 1):
            make_run(
                tmp_path,
                f"{cell}{seed}",
                ["dataset=digits", f"cell={cell}", f"seed={seed}", "model.params=100000"],
                cell=cell,
                seed=seed,
                **DIGITS,
                **{"test/acc": value, "test/baseline_acc": 0.11, "state_floats": 64},
            )
    # A task where every row is worse than always answering the mean: no winner at all.
    for seed, value in enumerate((0.170, 0.171), 1):
        make_run(
            tmp_path,
            f"adding{seed}",
            ["dataset=adding", "cell=rnn", f"seed={seed}"],
            dataset="adding",
            task="regress",
            cell="rnn",
            seed=seed,
            monitor="val/loss",
            monitor_mode="min",
            **{"test/loss": value, "test/mse": value, "test/baseline_mse": 0.1667},
        )
    return tmp_path


def marked(out) -> dict[tuple[str, str], bool]:
    return {(r["dataset"], r["cell"]): r["best"] == "True" for r in csv.DictReader(open(out / "leaderboard.csv"))}


def test_tied_rows_share_the_mark_and_rows_at_the_baseline_never_get_it(fake_sweep):
    assert compare([str(fake_sweep), "--no-plots"]) == 0
    marks = marked(fake_sweep)
    assert marks[("digits", "lstm")] and marks[("digits", "gru")]  # Welch p = 0.57: one group
    assert not marks[("digits", "rnn")] and not marks[("digits", "minimal")]
    assert not marks[("adding", "rnn")]  # the best row of its task, but above the baseline's error
    board = (fake_sweep / "leaderboard.md").read_text()
    assert "Welch's t-test (two-sided, scipy), Holm-corrected over the task's comparisons, p < 0.05" in board
    rows = {r["cell"]: r for r in csv.DictReader(open(fake_sweep / "leaderboard.csv")) if r["dataset"] == "digits"}
    assert rows["minimal"]["beats_baseline"] == "False" and rows["lstm"]["state_floats"] == "64"
    across = board.split("## Across tasks")[1]
    assert "| lstm | 1 | 1.00 | 1 |" in across
    assert "| gru | 1 | 1.00 | 1 |" in across  # in the winning group: rank 1, a win


def test_a_rank_test_with_three_seeds_cannot_separate_them_but_the_baseline_still_rules(fake_sweep):
    """Mann-Whitney's smallest two-sided p with 3 seeds a side is 0.1: nothing is significantly worse than the best,
    so rnn joins the group; minimal, at the baseline, still does not."""
    assert compare([str(fake_sweep), "--no-plots", "--test", "mannwhitney"]) == 0
    marks = marked(fake_sweep)
    assert marks[("digits", "rnn")] and not marks[("digits", "minimal")]
    assert "the Mann-Whitney U test (two-sided, scipy)" in (fake_sweep / "leaderboard.md").read_text()


def test_a_reference_picked_by_several_settings(fake_sweep):
    argv = [str(fake_sweep), "--no-plots", "--significance", "cell=gru model.params=100000 depth=1"]
    assert compare(argv) == 0
    board = (fake_sweep / "leaderboard.md").read_text()
    section = board.split("## Significance against cell=gru model.params=100000 depth=1")[1]
    assert "Reference: gru-d1-uni-none" in section
    lines = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    assert "no significant difference" in lines["lstm-d1-uni-none"] and "**worse**" in lines["rnn-d1-uni-none"]
    assert compare([str(fake_sweep), "--no-plots", "--significance", "cell=gru model.params=5"]) == 0
    assert "no row match cell=gru model.params=5: no test" in (fake_sweep / "leaderboard.md").read_text()


# -- the tuning protocol: the grid point picked on validation, its test metric reported --------------------------
# Per cell and learning rate: (val/acc_best, test/acc) of two seeds. lstm: validation prefers 0.01, test would
# prefer 0.1 (they disagree); gru: validation prefers 0.1, the grid's highest point (an edge pick).
GRID = {
    "lstm": {
        "0.001": ((0.80, 0.81), (0.79, 0.80)),
        "0.01": ((0.90, 0.91), (0.85, 0.86)),
        "0.1": ((0.70, 0.71), (0.95, 0.96)),
    },
    "gru": {
        "0.001": ((0.60, 0.61), (0.60, 0.61)),
        "0.01": ((0.70, 0.71), (0.70, 0.71)),
        "0.1": ((0.88, 0.89), (0.86, 0.87)),
    },
}


@pytest.fixture
def lr_sweep(tmp_path):
    for cell, points in GRID.items():
        for lr, (vals, tests) in points.items():
            for seed, (val, test) in enumerate(zip(vals, tests), 1):
                make_grid_run(
                    tmp_path, cell, lr, seed, **{"val/acc_best": val, "test/acc": test, "test/baseline_acc": 0.11}
                )
    return tmp_path


def test_the_grid_point_is_picked_on_validation_and_its_test_metric_reported(lr_sweep):
    assert compare([str(lr_sweep), "--no-plots", "--tune", "optimizer.lr"]) == 0
    rows = {r["cell"]: r for r in csv.DictReader(open(lr_sweep / "leaderboard.csv"))}
    assert len(rows) == 2  # one row per architecture
    lstm, gru = rows["lstm"], rows["gru"]
    assert lstm["overrides"] == "optimizer.lr=0.01" and float(lstm["mean"]) == pytest.approx(0.855)  # not 0.955
    assert lstm["picked_on_validation"] == "lr 0.01 (2 of 3)"
    assert (
        gru["overrides"] == "optimizer.lr=0.1"
        and "at the grid's highest: widen the grid" in gru["picked_on_validation"]
    )
    # on the picked points gru (0.865) and lstm (0.855) are not significantly different: one winning group
    assert lstm["best"] == gru["best"] == "True"
    board = (lr_sweep / "leaderboard.md").read_text()
    assert "**lr 0.1 (3 of 3; at the grid's highest: widen the grid)**" in board


def test_all_points_keeps_every_grid_row_and_marks_only_picked_ones(lr_sweep):
    assert compare([str(lr_sweep), "--no-plots", "--tune", "optimizer.lr", "--all-points"]) == 0
    rows = list(csv.DictReader(open(lr_sweep / "leaderboard.csv")))
    assert len(rows) == 6
    lstm_01 = next(r for r in rows if r["cell"] == "lstm" and r["overrides"] == "optimizer.lr=0.1")
    assert lstm_01["picked_on_validation"] == "not picked" and lstm_01["best"] == "False"  # the best test, not picked
    assert compare([str(lr_sweep), "--all-points"]) == 2  # without a grid to show
