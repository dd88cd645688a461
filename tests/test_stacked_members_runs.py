"""A stacked job's members are ordinary runs for the loggers too (src/runs/seeds.py, src/runs/loggers.py
MemberLoggers): each member has its own W&B run, the one its single run would have (name, group, tags, job type,
config, the id its metrics.json names), with its own metrics and finished when it ends, read back here from the
offline files W&B leaves; the job itself has none."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from src.records import identity
from tests.conftest import make_cfg, run_cli
from tests.wandb_files import offline_runs

COMMON = ["dataset=digits", "cell=gru", "cell.hidden_size=8", "debug=limit", "trainer.enable_progress_bar=false"]


def csv_curve(run_dir: Path, column: str) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return {int(row["step"]): float(row[column]) for row in csv.DictReader(f) if row.get(column)}


def wandb_curve(history: list[dict], column: str) -> dict[int, float]:
    return {int(h["trainer/global_step"]): h[column] for h in history if column in h}


def single_run_identity(tmp_path: Path, overrides: list[str]) -> dict:
    """The W&B name, tags and `run` config that `python -m src.train <overrides>` (a single run) gets."""
    cfg = make_cfg(tmp_path / "single", overrides)
    return {"name": identity.name(cfg), "tags": identity.tags(cfg), "run": identity.wandb_run(cfg)}


@pytest.fixture(scope="module")
def seeds_job(tmp_path_factory) -> Path:
    job = tmp_path_factory.mktemp("members") / "job"
    done = run_cli("seeds=[1,2]", *COMMON, "logger=many", f"hydra.run.dir={job}")
    assert done.returncode == 0, done.stderr[-3000:]
    return job


def test_each_member_has_the_wandb_run_of_its_single_run(seeds_job, tmp_path):
    assert not (seeds_job / "wandb").exists()  # the job itself: no W&B run of its own
    for seed in (1, 2):
        member = seeds_job / f"seed={seed}"
        record = json.loads((member / "metrics.json").read_text())
        (run,) = offline_runs(member)
        assert run.id == record["wandb_id"] and run.finished
        single = single_run_identity(tmp_path, [*COMMON, f"seed={seed}"])
        assert run.name == single["name"] and run.name.endswith(f"-s{seed}")
        assert run.tags == single["tags"] and run.group == "digits" and run.job_type == "train"
        config = run.config
        assert config["seed"] == seed and config["seeds"] is None and config["params"] == record["params"]
        assert config["run"] == single["run"] and config["run"]["setting"] == record["setting"]
        assert config["cell"]["hidden_size"] == 8  # the resolved config, nested, as a single run logs it
        # its own metrics, unprefixed, at the steps its CSV curves have them
        for column in ("val/acc", "train/loss", "train/acc"):
            assert wandb_curve(run.history, column) == pytest.approx(csv_curve(member, column)), column
            assert csv_curve(member, column), column
        assert [h["test/acc"] for h in run.history if "test/acc" in h] == [pytest.approx(record["test/acc"])]
        # the monitored metric's best kept in the summary (WandbSummary), as a single run's
        assert run.summary["val/acc"]["max"] == pytest.approx(record["val/acc_best"])
        assert not any(k.startswith("seed=") for h in run.history for k in h)
