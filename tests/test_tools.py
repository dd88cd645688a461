"""The tools researchers already use, read back as they would read them: TensorBoard's HParams tab and curves, a
persisted Optuna study, the W&B report's dry run, `--help`, and the package installed with pip."""

from __future__ import annotations

import json

from conftest import run_cli

from src.compare import leaderboard
from src.records.events import hparams, scalars

# -- TensorBoard ----------------------------------------------------------------------------------------------------


def test_tensorboard_hparams_of_a_multirun_hold_each_runs_settings_and_final_metrics(tmp_path):
    sweep = tmp_path / "sweep"
    done = run_cli(
        "-m",
        "dataset=digits",
        "debug=limit",
        "logger=tensorboard",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "cell.hidden_size=8,16",
        f"hydra.sweep.dir={sweep}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "logging interval" not in done.stderr  # Lightning's warning, wrong once the interval follows the epoch
    runs = sorted(p for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert len(runs) == 2
    seen = {}
    for run in runs:
        record = json.loads((run / "metrics.json").read_text())
        found = hparams(run / "tensorboard")
        sizes = {v for k, v in found["hparams"].items() if k.endswith("hidden_size")}
        assert len(sizes) == 1, found["hparams"]
        seen[sizes.pop()] = found
        # the final metrics beside the settings: the best monitored value and the test metrics, as metrics.json
        assert set(found["metrics"]) >= {"val/acc_best", "test/acc", "test/loss"}
        for name in ("val/acc_best", "test/acc"):
            assert abs(found["metrics"][name] - record[name]) < 1e-6, name
        assert found["hparams"]["run/dataset"] == "digits" and found["hparams"]["params"] == record["params"]
    assert set(seen) == {8, 16}

    # logger=tensorboard alone: the comparison's curves come from the event files
    run = leaderboard.find_runs([sweep])[0]
    curves = leaderboard.read_curves(run, ["val/acc", "train/loss"])
    assert len(curves["val/acc"]) == 2  # an epoch each
    # 4 batches an epoch (debug=limit), fewer than trainer.log_every_n_steps=20: still logged once per epoch
    assert sorted(curves["train/loss"]) == [3, 7]
    assert curves["val/acc"] == scalars(run.dir / "tensorboard", ["val/acc"])["val/acc"]
