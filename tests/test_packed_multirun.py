"""A multirun packs itself (hydra/launcher=packed, src/runs/packing.py): jobs that differ only in seed, learning
rate, ... train as one stacked job, and each leaves what its unpacked job leaves: the same run dir, a record with
the same identity and results (to 1e-5), its ledger entry; a rerun skips them; what may not stack runs alone."""

from __future__ import annotations

import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from src.compare.report import build_sections, find_runs
from src.runs.packing import is_member_key, pack_key, packs, unpackable
from src.runs.sweeps import read_ledger
from tests.conftest import CACHE, ROOT, run_cli

TINY = [
    "dataset=digits",
    "dataset.batch_size=16",
    "cell=gru",
    "cell.hidden_size=8",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "logger=csv",
    "trainer.enable_progress_bar=false",
]
GRID = ["optimizer.lr=0.01,0.05", "seed=1,2"]
# What a stacked member records beyond its single run: how it was trained, when, how fast.
ALONE = "grouped(manual, K=8)"  # what update=auto runs on a CPU for a job alone
HOW = {"update", "update_reason", "stacked", "wall_s", "started_at", "finished_at", "wandb_id", "train_samples_per_s"}


def multirun(sweep_dir: Path, *args: str, base: list[str] = TINY) -> str:
    done = run_cli("-m", *base, *args, f"hydra.sweep.dir={sweep_dir}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout + done.stderr


def records(sweep_dir: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")}


def ledger(sweep_dir: Path) -> list[tuple[str, str]]:
    return sorted((Path(e["dir"]).name, e["status"]) for e in read_ledger(sweep_dir))


@pytest.fixture(scope="module")
def packed_and_not(tmp_path_factory):
    """The same 2x2 multirun (lr x seed), packed and with packing off."""
    root = tmp_path_factory.mktemp("packing")
    packed, unpacked = root / "packed", root / "unpacked"
    return (packed, multirun(packed, *GRID)), (unpacked, multirun(unpacked, *GRID, "hydra.launcher.pack=false"))


def test_a_multirun_over_lr_and_seed_is_one_stacked_job_equal_to_its_unpacked_jobs(packed_and_not):
    (packed, log), (unpacked, plain_log) = packed_and_not
    assert "packed: 4 jobs of this multirun train as one stacked job" in log
    assert "4 members stacked in one process" in log  # the plan line (members, memory)
    assert "of this multirun train as one" not in plain_log
    mine, theirs = records(packed), records(unpacked)
    assert sorted(mine) == sorted(theirs) and len(mine) == 4  # the same run dirs
    for name, record in mine.items():
        alone = theirs[name]
        assert record["status"] == alone["status"] == "ok"
        assert record["update"].startswith("stacked(S=4") and alone["update"] == ALONE
        assert "stacked" not in alone
        assert set(record) - HOW == set(alone) - HOW  # the same fields, state_floats and width included
        for key in set(alone) - HOW:
            if isinstance(alone[key], float):
                assert record[key] == pytest.approx(alone[key], abs=1e-5), (name, key)
            elif key not in ("tested_checkpoint",):
                assert record[key] == alone[key], (name, key)
        assert record["width"] == 8 and record["state_floats"] == alone["state_floats"] > 0
        assert (packed / name / "checkpoints" / "best.ckpt").is_file()
        assert (packed / name / "csv" / "metrics.csv").is_file() and (packed / name / "train.log").is_file()
        overrides = OmegaConf.load(packed / name / ".hydra" / "overrides.yaml")
        assert list(overrides) == list(OmegaConf.load(unpacked / name / ".hydra" / "overrides.yaml"))
    # the members trained apart: their own learning rates and seeds
    assert len({r["test/loss"] for r in mine.values()}) == 4
    assert ledger(packed) == ledger(unpacked) == sorted((n, "ok") for n in mine)
    rows = [[len(row.runs) for row in s.rows] for s in build_sections(find_runs([packed]))]
    assert rows == [[len(row.runs) for row in s.rows] for s in build_sections(find_runs([unpacked]))]


def test_each_learning_rate_of_a_pack_is_summed_up_over_its_seeds_without_a_table_per_member(packed_and_not):
    """The pack's log states, per learning rate, the mean ± std over its seeds of what each member's result line
    states; Lightning's table of test values (a row per member and metric) is not printed."""
    (packed, log), _ = packed_and_not
    mine = records(packed)
    for lr in ("0.01", "0.05"):
        group = [r for name, r in mine.items() if f"optimizer.lr={lr}," in name]
        (line,) = [line for line in log.splitlines() if f"optimizer.lr={lr} over 2 seeds: " in line]
        for key in ("val/acc_best", "test/acc", "test/loss"):
            values = [r[key] for r in group]
            assert f"{key} {statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}" in line, key
        assert "baseline" not in line
        for record in group:  # each member's own line, named by what sets it apart in the pack
            assert f"result of optimizer.lr={lr},seed={record['seed']}: val/acc_best " in log
    for name, record in mine.items():  # each job's log, the first's (the pack's) too: its own result, no other's
        results = [line for line in (packed / name / "train.log").read_text().splitlines() if "result of" in line]
        lr = next(part for part in name.split(",") if part.startswith("optimizer.lr="))
        assert len(results) == 1 and f"result of {lr},seed={record['seed']}: " in results[0], (name, results)
    assert "Test metric" not in log


def test_a_rerun_skips_finished_members_and_trains_only_a_missing_one(packed_and_not, tmp_path):
    (packed, _), _ = packed_and_not
    sweep = tmp_path / "sweep"
    shutil.copytree(packed, sweep)
    before = records(sweep)
    log = multirun(sweep, *GRID)
    assert "4 ok, 0 failed (4 skipped" in log and "of this multirun train as one" not in log
    assert records(sweep) == before
    gone = sorted(before)[1]
    shutil.rmtree(sweep / gone)
    log = multirun(sweep, *GRID)
    assert "4 ok, 0 failed (3 skipped" in log
    after = records(sweep)
    assert {k: v for k, v in after.items() if k != gone} == {k: v for k, v in before.items() if k != gone}
    assert after[gone]["status"] == "ok" and after[gone]["update"] == ALONE  # alone: nothing to stack with
    assert after[gone]["test/loss"] == pytest.approx(before[gone]["test/loss"], abs=1e-5)


def test_members_of_other_shapes_are_packed_apart(tmp_path):
    log = multirun(tmp_path, "cell.hidden_size=8,16", "seed=1,2", "trainer.max_epochs=1", "test=false")
    assert log.count("packed: 2 jobs of this multirun") == 2
    found = records(tmp_path)
    assert sorted((r["width"], r["seed"]) for r in found.values()) == [(8, 1), (8, 2), (16, 1), (16, 2)]
    for record in found.values():
        assert record["update"].startswith("stacked(S=2") and record["status"] == "ok"
        assert len({found[n]["width"] for n in record["stacked"]["pack"] if n in found} | {record["width"]}) == 1


def test_jobs_differing_in_optimizer_and_schedule_pack_and_equal_their_unpacked_jobs(tmp_path):
    grid = ["optimizer=adam,sgd", "scheduler=cosine,step"]
    log = multirun(tmp_path / "packed", *grid)
    assert "packed: 4 jobs of this multirun train as one stacked job" in log
    assert (
        "(optimizer=adam,scheduler=cosine, optimizer=adam,scheduler=step, optimizer=sgd,scheduler=cosine, ...)" in log
    )
    multirun(tmp_path / "unpacked", *grid, "hydra.launcher.pack=false")
    mine, theirs = records(tmp_path / "packed"), records(tmp_path / "unpacked")
    assert sorted(mine) == sorted(theirs) and len(mine) == 4
    for name, record in mine.items():
        assert record["update"].startswith("stacked(S=4") and theirs[name]["update"] == ALONE
        for key in ("val/loss", "test/loss", "train/loss"):
            assert record[key] == pytest.approx(theirs[name][key], abs=1e-5), (name, key)
    # each trained its own way (the schedules part after the first of the two epochs: the last validation shows it)
    assert len({r["val/loss"] for r in mine.values()}) == 4


def test_a_job_that_may_not_stack_runs_alone(tmp_path):
    log = multirun(tmp_path, "depth=2", "stack.dropout=0.1", "seed=1,2", "trainer.max_epochs=1", "test=false")
    assert "of this multirun train as one" not in log
    found = records(tmp_path)
    assert len(found) == 2 and all(r["update"] == ALONE and "stacked" not in r for r in found.values())
    assert ledger(tmp_path) == sorted((n, "ok") for n in found)


def test_the_cap_cuts_a_pack(tmp_path):
    log = multirun(tmp_path, "seed=1,2,3", "hydra.launcher.max_members=2", "trainer.max_epochs=1", "test=false")
    assert log.count("packed: 2 jobs") == 1 and "Launching 3 jobs" in log
    updates = sorted(r["update"] for r in records(tmp_path).values())
    assert updates[0] == ALONE and all(u.startswith("stacked(S=2") for u in updates[1:]), updates


# Epochs long enough (digits in batches of 16: 81 updates each) that a poll sees the first epoch's checkpoints
# well before the last epoch ends.
KILLABLE = ["dataset=digits", "dataset.batch_size=16", "cell=gru", "cell.hidden_size=64", "trainer.max_epochs=4"]
# members of their own optimizers and LR schedules: each resumes its own optimizer's state and schedule
KILLABLE += [
    "logger=csv",
    "trainer.enable_progress_bar=false",
    "test=false",
    "optimizer=adam,sgd",
    "scheduler=cosine,step",
]


def last_weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_a_killed_packed_multirun_resumes_as_a_whole_in_its_own_dirs(tmp_path):
    """SIGKILL a packed 2x2 multirun after its first epoch; the same command with ckpt_path=last resumes the pack as
    one stacked job in the same dirs, every member to the weights of the uninterrupted multirun (1e-5), its record
    and curves continued; the command without ckpt_path then finds all four done."""
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    multirun(whole, base=KILLABLE)
    env = {**os.environ, "RNN_BENCH_CACHE": str(CACHE)}
    command = [sys.executable, "-m", "src.train", "-m", *KILLABLE, f"hydra.sweep.dir={killed}"]
    victim = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if len(list(killed.glob("*/checkpoints/last.ckpt"))) == 4:  # every member's first epoch written
            break
        time.sleep(0.02)
    victim.kill()
    victim.wait()
    dirs = sorted(p.name for p in killed.glob("*/metrics.json"))
    assert len(dirs) == 4 and {r["status"] for r in records(killed).values()} == {"running"}  # killed mid-pack
    log = multirun(killed, "ckpt_path=last", base=KILLABLE)
    assert "packed: 4 jobs of this multirun train as one stacked job" in log
    assert sorted(p.name for p in killed.glob("*/metrics.json")) == dirs  # the same dirs, no new one
    alone = records(whole)
    for name, record in records(killed).items():
        assert record["status"] == "ok" and record["resumed"] == 1 and record["epochs"] == 4
        assert record["config_hash"] == alone[name]["config_hash"]  # ckpt_path=last: the run it continues
        assert record["update"].startswith("stacked(S=4")
        assert {row["epoch"] for row in csv.DictReader(open(killed / name / "csv" / "metrics.csv"))} == {
            "0",
            "1",
            "2",
            "3",
        }
        ours, theirs = last_weights(killed / name), last_weights(whole / name)
        for key in theirs:
            torch.testing.assert_close(
                ours[key], theirs[key], rtol=0, atol=1e-5, msg=lambda m, at=f"{name} {key}": f"{at}: {m}"
            )
    log = multirun(killed, base=KILLABLE)
    assert "4 ok, 0 failed (4 skipped" in log


def test_resuming_a_multirun_skips_its_finished_jobs_and_fails_one_with_nothing_to_resume(tmp_path):
    multirun(tmp_path, "seed=1,2", "trainer.max_epochs=1", "test=false")
    before = records(tmp_path)
    done = run_cli(
        "-m", *TINY, "seed=1,2,3", "trainer.max_epochs=1", "test=false", "ckpt_path=last", f"hydra.sweep.dir={tmp_path}"
    )
    log = done.stdout + done.stderr
    assert done.returncode != 0 and "2 ok, 1 failed (2 skipped" in log, log[-3000:]
    after = records(tmp_path)
    assert {k: after[k] for k in before} == before  # the finished jobs, as they were
    (third,) = set(after) - set(before)
    assert after[third]["status"] == "failed" and "last.ckpt does not exist" in after[third]["error"]


# -- the grouping, on composed configs ------------------------------------------------------------------------


def test_only_member_keys_and_bookkeeping_may_differ_within_a_pack(cfg_factory):
    base = pack_key(cfg_factory("dataset=digits"))
    members = ["seed=3", "optimizer.lr=0.5", "optimizer.weight_decay=0.1", "update.gradient_clip_val=1"]
    members += ["optimizer=sgd", "+optimizer.amsgrad=true", "+optimizer.eps=1e-6", "scheduler=step"]
    members += ["+scheduler.eta_min=0.001", "scheduler=none", "task.scheduler_interval=step"]
    for member in members:
        assert pack_key(cfg_factory("dataset=digits", member)) == base, member
    assert pack_key(cfg_factory("dataset=digits", "tags=[a]", "skip_completed=false")) == base
    for other in ("cell.hidden_size=16", "cell=gru", "dataset.batch_size=8", "trainer.max_epochs=3", "depth=2"):
        assert pack_key(cfg_factory("dataset=digits", other)) != base, other
    assert all(is_member_key(k) for k in ("seed", "optimizer", "optimizer.betas", "scheduler.T_max"))
    assert not any(is_member_key(k) for k in ("seeds", "optimizers", "task", "task.kind", "update"))
    assert unpackable(cfg_factory("dataset=digits", "seeds=[1,2]")) is not None
    assert unpackable(cfg_factory("dataset=digits", "callbacks=early_stopping")) == "early stopping"
    assert unpackable(cfg_factory("dataset=digits")) is None


class _Job:
    def __init__(self, key, name):
        self.key, self.dir, self.idx = key, Path(name), name


def test_packs_keep_the_sweeps_order_and_never_hold_one_dir_twice():
    jobs = [_Job("a", "1"), _Job("b", "2"), _Job("a", "3"), _Job(None, "4"), _Job("a", "1"), _Job("a", "5")]
    assert [[j.idx for j in p] for p in packs(jobs, 8)] == [["1", "3"], ["2"], ["4"], ["1", "5"]]
    assert [[j.idx for j in p] for p in packs(jobs, 1)] == [["1"], ["2"], ["3"], ["4"], ["1"], ["5"]]


@pytest.mark.parametrize("bad", ["hydra.launcher.max_members=0", "hydra.launcher.pack=maybe"])
def test_a_bad_launcher_setting_is_one_line_and_exit_2(tmp_path, bad):
    done = run_cli("-m", "dataset=digits", "seed=1,2", bad, f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 2 and done.stderr.strip().startswith(f"error: {bad.split('=')[0]}="), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_packed_members_tensorboard_holds_their_settings_and_final_metrics(tmp_path):
    """logger=tensorboard: each member's own event files, its HParams (settings, best value, test metrics) as its
    single run's (tests/test_tools.py checks those of unpacked jobs)."""
    from src.records.events import hparams

    log = multirun(tmp_path, "seed=1,2", "trainer.max_epochs=1", "logger=tensorboard")
    assert "packed: 2 jobs of this multirun" in log
    for name, record in records(tmp_path).items():
        found = hparams(tmp_path / name / "tensorboard")
        assert set(found["metrics"]) >= {"val/acc_best", "test/acc", "test/loss"}
        assert found["metrics"]["test/acc"] == pytest.approx(record["test/acc"], abs=1e-6)
        assert found["hparams"]["run/seed"] == record["seed"] and found["hparams"]["params"] == record["params"]


def test_a_job_that_does_not_compose_fails_the_multirun_before_any_job_ran(tmp_path):
    """Every job is composed before any runs (Hydra's sweeper checks the batch; the packed launcher composes every
    job before it packs them): no job of the grid trains, no job dir."""
    base = [a for a in TINY if not a.startswith("cell=")]
    done = run_cli("-m", *base, "seed=1,2", "cell=gru,no_such_cell", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode != 0 and "Could not find 'cell/no_such_cell'" in done.stderr, done.stderr[-2000:]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == []
