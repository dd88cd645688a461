"""Sweeps: every sweep config composes and names only options that exist (or are on their way), the W&B sweep files
match them and pass their overrides through, a failing job is recorded while the others finish, running the sweep
again skips the finished jobs, and parallel jobs get distinct GPU slots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict, read_write

from src.common.errors import ConfigError
from src.runs import gpus
from src.runs.sweeps import (
    ROOT,
    check_one_process_per_job,
    completed_record,
    config_hash,
    render_wandb_sweep,
    sweep_names,
)
from tests.conftest import CONF, run_cli

# Options the sweeps already name that other work is adding. Each is checked like any other once its config exists.
PENDING: dict[str, set] = {}
SWEEPS = sweep_names()


def grid(cfg) -> dict[str, list[str]]:
    """The values each swept key takes (choice lists only: an Optuna interval is not a list)."""
    parser = OverridesParser.create()
    values = {}
    for key, text in (cfg.hydra.sweeper.get("params") or {}).items():
        override = parser.parse_override(f"{key}={text}")
        if not override.is_sweep_override():
            values[key] = [override.get_value_element_as_str()]
        elif override.is_choice_sweep():
            values[key] = list(override.sweep_string_iterator())
    return values


def pending(values: dict[str, str]) -> list[str]:
    return [f"{k}={v}" for k, v in values.items() if (CONF / k).is_dir() and not (CONF / k / f"{v}.yaml").exists()]


def test_the_issue_sweeps_exist():
    assert {"quick", "cells", "odyssey", "lm", "optuna", "memory"} <= set(SWEEPS)


@pytest.mark.parametrize("name", SWEEPS)
def test_sweep_composes_and_names_only_real_options(cfg_factory, name):
    cfg = cfg_factory(f"sweep={name}", quiet=False)
    assert cfg.sweep_name == name
    assert Path(cfg.hydra.sweep.dir).parts[-1] in (name, cfg.hydra.runtime.choices.cell)  # fixed: re-runs skip
    values = grid(cfg)
    for key, options in values.items():
        for option in options:
            if pending({key: option}):
                assert option in PENDING.get(key, set()), f"sweep {name}: {key}={option} is no option of {key}/"
    for pick in (0, -1):  # the first and the last job of the grid, composed as the launcher composes them
        job = {key: options[pick] for key, options in values.items()}
        if pending(job):
            continue
        cfg = cfg_factory(f"sweep={name}", *[f"{k}={v}" for k, v in job.items()], quiet=False)
        OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True)


@pytest.mark.parametrize("name", SWEEPS)
def test_wandb_sweep_file_matches_and_passes_hydra_overrides(cfg_factory, name):
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

    path = ROOT / "sweeps" / f"wandb_{name}.yaml"
    assert path.read_text() == render_wandb_sweep(name), f"regenerate: python -m src.runs.sweeps wandb {name}"
    doc = yaml.safe_load(path.read_text())
    assert doc["command"][:4] == ["${env}", "python", "-m", "src.train"] and "${args_no_hyphens}" in doc["command"]
    # What the agent runs for the first grid point: `python -m src.train sweep=<name> ... key=value ...`
    first = {k: p["values"][0] if "values" in p else p.get("value", p.get("min")) for k, p in doc["parameters"].items()}
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in first.items()}})["args_no_hyphens"]
    fixed = [a for a in doc["command"][4:] if not a.startswith("${")]
    if not pending(dict(a.split("=", 1) for a in args)):
        cfg = cfg_factory(*fixed, *args, quiet=False)
        assert cfg.hydra.runtime.choices.dataset == str(first["dataset"])
        assert cfg.logger.wandb.offline is False and cfg.logger.wandb.job_type == name


def test_config_hash_ignores_where_outputs_go_and_sees_every_value(cfg_factory, tmp_path):
    a = config_hash(cfg_factory("cell=gru", out=tmp_path / "a"))
    assert a == config_hash(cfg_factory("cell=gru", out=tmp_path / "b"))
    assert a != config_hash(cfg_factory("cell=gru", "optimizer.lr=0.01", out=tmp_path / "c"))
    assert a != config_hash(cfg_factory("cell=lstm", out=tmp_path / "d"))
    # resumed from its own last checkpoint: the run it continues; from another file: another run
    assert a == config_hash(cfg_factory("cell=gru", "ckpt_path=last", out=tmp_path / "e"))
    assert a != config_hash(cfg_factory("cell=gru", "ckpt_path=other.ckpt", out=tmp_path / "f"))


@pytest.mark.parametrize("extra", [[], ["budget.updates=600"], ["ckpt_path=last"], ["plateau.patience=5"]])
def test_config_hash_is_the_same_as_before_for_every_config(tmp_path, extra):
    """The hash records in every finished run's metrics.json compare with (skip_completed): computed faster now, it
    must stay the hash of the config composed (sorted JSON of its unresolved values, less what never counts), so the
    finished jobs of an existing sweep dir are still recognised."""
    import hashlib

    from src.runs.sweeps import HASHED_WHEN_SET, NOT_HASHED
    from tests.conftest import make_cfg
    from tests.test_hydra_files import options

    for override in options()[::3]:
        try:
            cfg = make_cfg(tmp_path, [override, *extra])
        except Exception:  # an option that composes only beside others
            continue
        unset = [k for k in HASHED_WHEN_SET if all(v is None for v in (cfg.get(k) or {}).values())]
        kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NOT_HASHED and k not in unset])
        if kept.get("ckpt_path") == "last":
            with open_dict(kept):
                kept.ckpt_path = None
        text = json.dumps(OmegaConf.to_container(kept, resolve=False), sort_keys=True, default=str)
        assert config_hash(cfg) == hashlib.sha256(text.encode()).hexdigest()[:16], override


def as_multirun(cfg):
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    return cfg


def test_completed_record_only_for_an_ok_run_of_the_same_config_in_a_multirun(cfg_factory, tmp_path):
    cfg = as_multirun(cfg_factory("cell=gru"))
    record = {"status": "ok", "config_hash": config_hash(cfg), "monitor": "val/acc", "val/acc_best": 0.5}
    (tmp_path / "metrics.json").write_text(json.dumps(record))
    assert completed_record(cfg) == record
    assert completed_record(as_multirun(cfg_factory("cell=gru", "skip_completed=false"))) is None
    assert completed_record(as_multirun(cfg_factory("cell=gru", "seed=7"))) is None
    assert completed_record(cfg_factory("cell=gru")) is None  # a single run always runs
    (tmp_path / "metrics.json").write_text(json.dumps({**record, "status": "failed"}))
    assert completed_record(as_multirun(cfg_factory("cell=gru"))) is None  # failures are retried


def job_dirs(sweep_dir: Path) -> dict[tuple, Path]:
    """{(optimizer.lr, depth): job dir} of the failing-jobs sweep below, from each job's .hydra/overrides.yaml."""
    found = {}
    for overrides in sweep_dir.glob("*/.hydra/overrides.yaml"):
        values = dict(o.split("=", 1) for o in yaml.safe_load(overrides.read_text()))
        found[(values["optimizer.lr"], values["depth"])] = overrides.parent.parent
    return found


def test_sweep_with_failing_jobs_records_them_and_a_rerun_skips_finished_jobs(tmp_path):
    """Through the real command line: one job trains, one is a config error, one's loss becomes NaN (lr 1e30),
    one both. The sweep runs every job, says what failed and exits 1. Run again, now with the parallel launcher
    (hydra/launcher=gpu_pool: joblib worker processes, which resolve ${gpu_pool:} too), it skips the finished
    job and retries the others. Each job's dir is named by its overrides, not its place in the list."""
    args = [
        "-m",
        "dataset=digits",
        "optimizer.lr=0.002,1e30",
        "depth=1,0",
        "debug=limit",
        "logger=csv",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "trainer.devices=${gpu_pool:}",
        f"hydra.sweep.dir={tmp_path}",
    ]
    first = run_cli(*args)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "error: 3 job(s) of this sweep failed" in first.stderr
    dirs = job_dirs(tmp_path)
    assert len(dirs) == 4
    ok, diverged = dirs[("0.002", "1")], dirs[("1e+30", "1")]
    assert "optimizer.lr=0.002" in ok.name and "depth=1" in ok.name
    records = {d: json.loads((d / "metrics.json").read_text()) for d in (ok, diverged)}
    assert records[ok]["status"] == "ok" and records[ok]["test/acc"] > 0 and records[ok]["config_hash"]
    assert records[diverged]["error"].startswith("TrainingDiverged: the training loss became NaN or inf")
    config_error = json.loads((dirs[("0.002", "0")] / "metrics.json").read_text())
    assert "ConfigError: depth=0 must be a positive integer" in config_error["error"]
    assert f"sweep {tmp_path}: 1 ok, 3 failed" in first.stdout
    assert f"failed: {diverged}: TrainingDiverged" in first.stdout

    done = (ok / "metrics.json").stat().st_mtime_ns
    retried = (diverged / "metrics.json").stat().st_mtime_ns
    again = run_cli(*args, "hydra/launcher=gpu_pool", "hydra.launcher.n_jobs=2")
    assert again.returncode == 1, again.stderr[-3000:]
    assert again.stdout.count("skipped: it holds a completed run of this config") == 1
    assert (ok / "metrics.json").stat().st_mtime_ns == done
    assert (diverged / "metrics.json").stat().st_mtime_ns > retried
    assert f"sweep {tmp_path}: 1 ok, 3 failed (1 skipped: finished before)" in again.stdout
    assert (diverged / "previous_attempts" / "1" / "metrics.json").exists()  # the first attempt, kept aside

    from src.compare.report import main as compare  # and the leaderboard of it lists the failures

    assert compare([str(tmp_path), "--no-plots"]) == 0
    board = (tmp_path / "leaderboard.md").read_text()
    assert "## Failed runs" in board and "TrainingDiverged" in board and "| **" in board


def test_ddp_is_refused_inside_a_multirun_but_not_in_a_single_run(cfg_factory):
    with pytest.raises(ConfigError, match="DDP would start the whole sweep again"):
        check_one_process_per_job(as_multirun(cfg_factory("trainer=ddp")))
    with pytest.raises(ConfigError):
        check_one_process_per_job(as_multirun(cfg_factory("trainer=gpu", "trainer.devices=2")))
    for ok in (["trainer=ddp_sim"], ["trainer=gpu_pool"], ["trainer=cpu"]):  # ddp_spawn; one device per job
        check_one_process_per_job(as_multirun(cfg_factory(*ok)))
    check_one_process_per_job(cfg_factory("trainer=ddp"))  # a single run may


def test_gpu_slots_are_distinct_while_held_and_reused_when_freed(tmp_path):
    first, second = gpus.claim_slot(tmp_path), gpus.claim_slot(tmp_path)
    assert (first[0], second[0]) == (0, 1)
    first[1].close()  # that worker process ended
    third = gpus.claim_slot(tmp_path)
    assert third[0] == 0
    second[1].close(), third[1].close()


def test_launcher_configs_compose(cfg_factory):
    for launcher, target in (("gpu_pool", "JoblibLauncher"), ("slurm", "SlurmLauncher")):
        cfg = cfg_factory(f"hydra/launcher={launcher}", "trainer=gpu_pool", quiet=False)
        assert cfg.hydra.launcher._target_.endswith(target)
    assert cfg.hydra.launcher.gpus_per_node == 1
    assert OmegaConf.to_container(cfg.trainer, resolve=True)["devices"] == gpus.pool_device()
