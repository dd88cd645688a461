"""python -m src.compare on hand-written run dirs (metrics.json, .hydra/overrides.yaml, csv/metrics.csv) laid out as
src.train writes them: seeds -> mean ± std, the best marked per task in the task's own direction, rows split by
any other override that varies, failures listed, CSV and plots written. (test_sweeps runs it on real runs.)"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from src.compare import main as compare


def make_run(root: Path, name: str, overrides: list[str], curve: list[float] = (), **record) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    base = {"status": "ok", "depth": 1, "direction": "uni", "truncation": "none", "params": 1000,
            "train_samples_per_s": 500.0, "wall_s": 10.0}
    (run / "metrics.json").write_text(json.dumps({**base, **record}))
    if curve:
        monitor = record["monitor"]
        (run / "csv").mkdir()
        with open(run / "csv" / "metrics.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["epoch", "step", "train/loss", monitor])
            for epoch, value in enumerate(curve):
                writer.writerow([epoch, 10 * epoch + 9, 1.0, ""])  # a training row: no validation value
                writer.writerow([epoch, 10 * epoch + 9, "", value])
    return run


@pytest.fixture
def sweep(tmp_path) -> Path:
    acc = dict(dataset="digits", task="classify", monitor="val/acc", monitor_mode="max")
    for seed, value in zip((1, 2, 3), (0.80, 0.90, 0.85)):
        make_run(tmp_path, f"gru{seed}", ["dataset=digits", "cell=gru", f"seed={seed}"], [0.5, 0.7], cell="gru",
                 seed=seed, **{"test/acc": value, "test/f1": 0.5}, **acc)
    for seed, value in zip((1, 2), (0.95, 0.97)):
        make_run(tmp_path, f"lstm{seed}", ["dataset=digits", "cell=lstm", "depth=2", "direction=bi", f"seed={seed}"],
                 [0.6, 0.9], cell="lstm", seed=seed, **{**acc, "depth": 2, "direction": "bi", "test/acc": value,
                                                        "test/f1": 0.4})
    make_run(tmp_path, "rnn1", ["dataset=digits", "cell=rnn", "seed=1"], dataset="digits", cell="rnn", seed=1,
             status="failed", error="FloatingPointError: the training loss became NaN or infinite")
    for variant, value in (("NIG", 0.7), ("CIFG", 0.75)):
        make_run(tmp_path, f"v{variant}", ["dataset=digits", "cell=lstm_variant", f"cell.variant={variant}",
                                           "seed=1"], cell="lstm_variant", seed=1, **acc, **{"test/acc": value})
    ppl = dict(dataset="lm_kjv", task="lm", monitor="val/ppl", monitor_mode="min")
    for cell, seed, value in (("lstm", 1, 120.0), ("lstm", 2, 130.0), ("gru", 1, 110.0)):
        make_run(tmp_path, f"lm_{cell}{seed}", [f"dataset=lm_kjv", f"cell={cell}", f"seed={seed}"], cell=cell,
                 seed=seed, **ppl, **{"test/ppl": value})
    return tmp_path


def test_leaderboard_per_task_with_mean_std_best_and_failures(sweep, capsys):
    assert compare([str(sweep)]) == 0
    board = (sweep / "leaderboard.md").read_text()
    assert capsys.readouterr().out.startswith("# Leaderboard")
    digits, lm = board.split("## digits (classify): test/acc, higher is better")[1].split(
        "## lm_kjv (lm): test/ppl, lower is better")
    lines = [line for line in digits.splitlines() if line.startswith("| ")][1:]
    assert lines[0].startswith("| lstm | 2 | bi | none |") and "**0.96 ± 0.014** ★" in lines[0]
    assert "| 0.85 ± 0.05 | 3 |" in lines[1] and "★" not in lines[1]
    assert any("cell.variant=CIFG" in line and "| 0.75 |" in line for line in lines)  # one row per variant
    assert any(line.startswith("| rnn |") and "failed" in line and "0 (+1 failed)" in line for line in lines)
    lm_rows = [line for line in lm.splitlines() if line.startswith("| ")][1:]
    assert lm_rows[0].startswith("| gru |") and "**110** ★" in lm_rows[0]  # lower perplexity wins
    assert "| 125 ± 7.1 | 2 |" in lm_rows[1]
    assert "## Failed runs" in board and "FloatingPointError: the training loss became NaN" in board

    rows = list(csv.DictReader(open(sweep / "leaderboard.csv")))
    best = [(r["dataset"], r["cell"]) for r in rows if r["best"] == "True"]
    assert best == [("digits", "lstm"), ("lm_kjv", "gru")]
    gru = next(r for r in rows if r["dataset"] == "digits" and r["cell"] == "gru")
    assert float(gru["mean"]) == pytest.approx(0.85) and float(gru["std"]) == pytest.approx(0.05)
    assert gru["seeds"] == "3" and gru["params"] == "1000"

    for name in ("digits_bars", "digits_val_curves", "lm_kjv_bars"):
        assert (sweep / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "](plots/digits_bars.png)" in board and "lm_kjv_val_curves" not in board  # lm_kjv: no CSV logs


def test_another_metric_and_output_dir(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    assert compare([str(sweep / "gru1"), str(sweep / "lstm1"), "--metric", "test/f1", "--out", str(out),
                    "--no-plots"]) == 0
    board = (out / "leaderboard.md").read_text()
    assert "test/f1, higher is better" in board and "**0.5** ★" in board and not (out / "plots").exists()


def test_no_runs_is_a_clear_error(tmp_path, capsys):
    assert compare([str(tmp_path)]) == 2
    assert "no metrics.json under" in capsys.readouterr().err


def test_gradient_flow_curves_of_a_task_are_overlaid(tmp_path):
    """Runs trained with +diagnostics=gradients get one picture per task: one curve per run."""
    from src.diagnostics import FLOW_COLUMNS, write_csv

    acc = dict(dataset="adding", task="regress", monitor="val/loss", monitor_mode="min")
    for cell, decay in (("rnn", 0.5), ("lstm", 0.98)):
        run = make_run(tmp_path, cell, ["dataset=adding", f"cell={cell}"], cell=cell, seed=1,
                       **acc, **{"test/loss": 0.1})
        rows = [{"epochs_done": 1, "step": 10, "layer": 0, "direction": 0, "t": t, "grad_h": decay ** (9 - t),
                 "grad_c": ""} for t in range(10)]
        write_csv(run / "diagnostics" / "gradient_flow.csv", rows, FLOW_COLUMNS)
    make_run(tmp_path, "gru", ["dataset=adding", "cell=gru"], cell="gru", seed=1, **acc, **{"test/loss": 0.2})
    assert compare([str(tmp_path)]) == 0
    png = tmp_path / "plots" / "adding_gradient_flow.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_damaged_records_are_skipped_with_their_file_named_and_listed(tmp_path, capsys):
    from src.compare import main as compare

    good = tmp_path / "good"
    good.mkdir()
    (good / "metrics.json").write_text(json.dumps({"status": "ok", "dataset": "digits", "cell": "gru", "depth": 1,
                                                   "direction": "uni", "truncation": "none", "seed": 1,
                                                   "monitor": "val/acc", "monitor_mode": "max", "test/acc": 0.9}))
    for name, text in (("list", "[1, 2]"), ("string", json.dumps({"status": "ok", "monitor": "val/acc",
                                                                    "test/acc": "0.9"})), ("junk", "{not json")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(text)
    (good / ".hydra").mkdir()
    (good / ".hydra" / "overrides.yaml").write_text("{unclosed: [")
    assert compare([str(tmp_path), "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: skipping") == 3 and "holds a list" in err and "'test/acc' holds '0.9'" in err
    board = (tmp_path / "leaderboard.md").read_text()
    assert "## Unreadable records (skipped)" in board and "**0.9** ★" in board
