"""Budgets that say whether learning ended (src/runs/learning.py): the plateau rule on hand-made histories,
budget.updates as optimizer updates (one per window under truncation), its refusals, and metrics.json's `budget`,
`learning` and `plateau` for a single run and for the members of a stacked job."""

from __future__ import annotations

import csv
import json

import lightning as L
import pytest

from src.common.errors import ConfigError
from src.runs.build import build, check_config
from src.runs.learning import budgeted, learning_verdict
from src.runs.sweeps import config_hash
from tests.conftest import run_cli

TINY = ["dataset=digits", "cell=gru", "cell.hidden_size=16", "debug=limit"]


# -- the rule, on hand-made histories ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values,higher,expected",
    [
        ([0.5, 0.7, 0.8, 0.8, 0.8, 0.8], True, "plateau"),  # the last 3 no better than 0.8 before them
        ([0.5, 0.7, 0.8, 0.8, 0.8, 0.81], True, "budget"),  # 0.81 beats 0.8 by more than 0.1%
        ([0.5, 0.7, 0.8, 0.8, 0.8, 0.8005], True, "plateau"),  # within 0.1% of 0.8: not learning
        ([0.9, 0.6, 0.5, 0.55, 0.52, 0.51], False, "plateau"),  # a loss: the best before (0.5) not beaten
        ([0.9, 0.6, 0.5, 0.55, 0.52, 0.45], False, "budget"),  # a lower loss is better
        ([0.5, 0.7, 0.8], True, "unknown"),  # no validation before the last 3
        ([0.5, float("nan"), 0.7, 0.8], True, "unknown"),  # NaN is not a validation value
    ],
)
def test_the_plateau_rule_on_hand_made_histories(values, higher, expected):
    assert learning_verdict(values, higher, patience=3, min_delta=1e-3)[0] == expected


def test_the_rule_reports_its_gain_and_takes_an_absolute_tolerance():
    verdict, gain = learning_verdict([0.30, 0.20, 0.195, 0.19], higher=False, patience=2, min_delta=0.0)
    assert verdict == "budget" and gain == pytest.approx(0.01)
    assert learning_verdict([0.30, 0.20, 0.195, 0.19], False, patience=2, min_delta=0.0, min_delta_abs=0.02)[0] == (
        "plateau"
    )
    assert learning_verdict([0.1, 0.1, 0.1, 0.2], True, patience=1, min_delta=0.0) == ("budget", pytest.approx(0.1))


# -- the budget: its conversion and refusals ----------------------------------------------------------------------


def test_a_budget_of_updates_sets_the_trainer_limits_and_the_schedule_spans_it(cfg_factory):
    cfg = budgeted(cfg_factory(*TINY, "budget.updates=600"))
    assert cfg.trainer.max_steps == 600 and cfg.trainer.max_epochs == -1
    assert cfg.scheduler.T_max == 600 and cfg.task.scheduler_interval == "step"  # cosine over the 600 updates
    plain = cfg_factory(*TINY)
    assert budgeted(plain) is plain
    steps = budgeted(cfg_factory(*TINY, "budget.updates=600", "scheduler=step"))
    assert steps.scheduler.step_size == 10 and steps.task.scheduler_interval == "epoch"  # not one that spans the run


def test_the_config_hash_changes_with_a_budget_only_where_one_is_set(cfg_factory, tmp_path):
    plain = config_hash(cfg_factory(*TINY, out=tmp_path / "a"))
    assert plain == config_hash(cfg_factory(*TINY, "plateau.patience=5", out=tmp_path / "b"))  # a read-out rule
    assert plain != config_hash(cfg_factory(*TINY, "budget.updates=600", out=tmp_path / "c"))


@pytest.mark.parametrize(
    "override,match",
    [
        ("budget.updates=0", r"budget.updates=0 must be a positive integer"),
        ("budget.updates=-5", r"budget.updates=-5 must be a positive integer"),
        ("budget.updates=1.5", r"budget.updates=1.5 must be a positive integer"),
        ("budget.updates=true", r"budget.updates=True must be a positive integer"),
        ("+budget.tokens=1000", r"budget.tokens: no such budget; .* budget.updates="),
        ("plateau.patience=0", r"plateau.patience=0 must be a positive integer"),
        ("plateau.min_delta=-0.1", r"plateau.min_delta=-0.1 must be a number >= 0"),
        ("+plateau.window=4", r"plateau.window: no such setting; the plateau rule's are patience, min_delta"),
    ],
)
def test_nonsense_budgets_are_refused_with_one_line(cfg_factory, override, match):
    with pytest.raises(ConfigError, match=match):
        check_config(cfg_factory(*TINY, override))


def test_a_budget_and_the_trainer_limit_it_sets_are_refused_together(tmp_path):
    done = run_cli(*TINY, "budget.updates=20", "trainer.max_epochs=5", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 2
    line = done.stderr.strip().splitlines()[-1]
    assert line.startswith("error: budget.updates=20 sets trainer.max_steps=20") and "drop trainer.max_epochs" in line


def test_under_truncation_the_budget_counts_every_windows_update(cfg_factory):
    """sin2cos (a target at every step, 50 steps): truncation.steps=25 makes two updates per batch, so a budget of
    6 updates trains 3 batches."""

    class Batches(L.Callback):
        seen = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            Batches.seen += 1

    cfg = cfg_factory(
        "dataset=sin2cos", "cell=gru", "cell.hidden_size=8", "debug=limit", "truncation=tbptt",
        "truncation.steps=25", "budget.updates=6", "test=false", "update=truncated",  # a Lightning step a batch
    )  # fmt: skip
    datamodule, model, trainer = build(cfg)
    trainer.callbacks.append(Batches())
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 6 and Batches.seen == 3


def test_grouped_updates_stop_at_the_budget_inside_a_group(cfg_factory):
    """update=grouped: 3 batches (3 updates) per Lightning step; a budget of 5 ends inside the second group."""
    cfg = cfg_factory(*TINY, "update=grouped", "update.per_step=3", "budget.updates=5", "test=false")
    datamodule, model, trainer = build(cfg)
    trainer.fit(model, datamodule=datamodule)
    assert trainer.global_step == 5
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine over the 5 updates


# -- end to end: metrics.json of a single run and of stacked members -----------------------------------------------


def assert_verdict_of_logged_values(record: dict, run_dir, validations: int) -> None:
    """The record's verdict is the rule's on the val/acc values the run logged (its csv/metrics.csv)."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        values = [float(row["val/acc"]) for row in csv.DictReader(f) if row.get("val/acc")]
    assert len(values) == validations == record["plateau"]["validations"]
    verdict, gain = learning_verdict(values, True, patience=record["plateau"]["patience"])
    assert record["learning"] == verdict and record["plateau"]["gain"] == pytest.approx(gain)


def test_a_single_run_records_its_budget_and_verdict(tmp_path):
    """debug=limit: 4 batches an epoch; 10 updates end inside the third epoch, which is still validated."""
    done = run_cli(*TINY, "budget.updates=10", "plateau.patience=2", "logger=csv", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["budget"] == {"kind": "updates", "value": 10, "used": 10, "set_by": "budget.updates"}
    assert record["plateau"]["validations"] == 3 and record["plateau"]["patience"] == 2
    assert record["state_floats"] == 16
    assert_verdict_of_logged_values(record, tmp_path, 3)  # the part-epoch's validation included


def test_without_a_budget_the_epochs_are_the_budget_and_too_few_validations_say_unknown(tmp_path):
    done = run_cli(*TINY, "logger=csv", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["budget"] == {"kind": "epochs", "value": 2, "used": 2, "set_by": "trainer.max_epochs"}
    assert record["learning"] == "unknown" and record["plateau"]["validations"] == 2  # not more than patience 3


def test_early_stopping_is_recorded_as_such(tmp_path):
    done = run_cli(
        *TINY, "trainer.max_epochs=8", "callbacks=early_stopping", "callbacks.early_stopping.patience=0",
        "optimizer.lr=1e-9", "logger=csv", f"hydra.run.dir={tmp_path}",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "metrics.json").read_text())
    assert record["learning"] == "early_stopped" and record["budget"]["used"] < 8


def test_each_stacked_member_records_its_own_verdict(tmp_path):
    done = run_cli(*TINY, "seeds=[1,2]", "budget.updates=14", "plateau.patience=2", f"hydra.run.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-2000:]
    for seed in (1, 2):
        record = json.loads((tmp_path / f"seed={seed}" / "metrics.json").read_text())
        assert record["budget"] == {"kind": "updates", "value": 14, "used": 14, "set_by": "budget.updates"}
        assert "stacked" in record and record["state_floats"] == 16  # a GRU's h: as a single run records it
        assert_verdict_of_logged_values(record, tmp_path / f"seed={seed}", 4)  # 4 + 4 + 4 + 2 updates


# -- the leaderboard's columns: markdown, CSV and the HTML dashboard -----------------------------------------------

BUDGET = {"kind": "updates", "value": 600, "used": 600, "set_by": "budget.updates"}
# Per cell, per seed: (val/acc_best, test/acc, learning); rnn's runs predate the verdict (no `learning`).
ENDED = {
    "lstm": ((0.90, 0.88, "plateau"), (0.91, 0.89, "plateau")),
    "gru": ((0.85, 0.84, "plateau"), (0.86, 0.85, "budget")),
    "rnn": ((0.60, 0.61, None), (0.61, 0.62, None)),
}


@pytest.fixture
def ended_sweep(tmp_path):
    from tests.test_compare import make_grid_run

    for cell, seeds in ENDED.items():
        for seed, (val, test, learning) in enumerate(seeds, 1):
            for lr in ("0.01", "0.1"):  # a grid for --tune: 0.1 is the worse point everywhere
                shift = 0.0 if lr == "0.01" else -0.2
                make_grid_run(
                    tmp_path,
                    cell,
                    lr,
                    seed,
                    state_floats=64 if cell == "lstm" else 32,
                    **{"val/acc_best": val + shift, "test/acc": test + shift},
                    **({"learning": learning, "budget": BUDGET} if learning else {}),
                )
    return tmp_path


def test_the_leaderboard_says_how_each_rows_runs_ended(ended_sweep):
    from src.compare.report import main as compare

    assert compare([str(ended_sweep), "--no-plots", "--tune", "optimizer.lr"]) == 0
    rows = {r["cell"]: r for r in csv.DictReader(open(ended_sweep / "leaderboard.csv"))}
    assert rows["lstm"]["ended"] == "plateau 2/2" and rows["lstm"]["budget"] == "600 updates"
    assert rows["gru"]["ended"] == "plateau 1/2, still learning 1/2"
    assert rows["rnn"]["ended"] == "" and rows["rnn"]["budget"] == ""  # not recorded: nothing claimed
    board = (ended_sweep / "leaderboard.md").read_text()
    table = board.split("## Across tasks")[0]
    lines = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 600 updates | plateau 1/2, **still learning** 1/2 |" in lines["gru"]
    assert "| 600 updates | plateau 2/2 |" in lines["lstm"]
    assert "***still learning***, the *budget*" in board  # the rule stated above the tables


def test_the_dashboard_has_the_markdown_leaderboards_columns(ended_sweep):
    import re

    from src.compare.html_dashboard import board_table
    from src.compare.leaderboard import build_sections, find_runs

    (section,) = build_sections(find_runs([ended_sweep]), tune=["optimizer.lr"])
    table = board_table(section)
    headers = re.findall(r"<th [^>]*>([^<]*)</th>", table)
    for name in ("picked on validation", "budget", "ended", "params", "state"):
        assert name in headers
    rows = {}
    for tr in re.findall(r'<tr class="run[^"]*"[^>]*>(.*?)</tr>', table):
        cells = [re.sub(r"<[^>]+>", "", c) for c in re.findall(r"<td[^>]*>(.*?)</td>", tr)]
        rows[cells[1]] = dict(zip(headers, cells))
    assert rows["gru"]["ended"] == "plateau 1/2, still learning 1/2" and rows["gru"]["budget"] == "600 updates"
    assert rows["lstm"]["state"] == "64" and rows["gru"]["state"] == "32"
    assert rows["lstm"]["picked on validation"].startswith("lr 0.01 (1 of 2")
    assert '<td class="learning">plateau 1/2, still learning 1/2</td>' in table  # in bold
    untuned = board_table(build_sections(find_runs([ended_sweep]))[0])
    assert "picked on validation" not in untuned and ">state<" in untuned
