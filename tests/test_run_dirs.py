"""A run dir holds one run: never overwritten by another config, never shared by two live processes, an earlier
attempt kept aside; resuming continues the same history (csv rows, W&B run, LR schedule)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from src.common.errors import ConfigError
from src.records import rundir
from src.records.record import RecordError, find_records, read_record
from src.runs.build import resume_checkpoint
from src.train import train
from tests.conftest import run_cli

QUICK = ["dataset=digits", "debug=limit"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != rundir.LOCK
    }


def test_another_configs_finished_run_is_never_overwritten(cfg_factory, tmp_path):
    train(cfg_factory(*QUICK, "callbacks=default", "logger=csv"))
    before = snapshot(tmp_path)
    with pytest.raises(ConfigError, match=r"holds a run of another config: dataset=digits cell=lstm.*status ok"):
        train(cfg_factory(*QUICK, "cell=gru", "callbacks=default", "logger=csv"))
    assert snapshot(tmp_path) == before  # metrics.json, checkpoints, csv/, .hydra/: not a byte changed


def test_a_second_process_on_a_live_run_dir_is_refused(cfg_factory, tmp_path):
    held = rundir.claim(tmp_path, "0" * 16, resuming=False, fields={})
    try:
        with pytest.raises(ConfigError, match="in use by another running process"):
            train(cfg_factory(*QUICK))
    finally:
        held.release()
    assert read_record(tmp_path / "metrics.json")["status"] == "running"  # the live run's record, untouched


def test_a_killed_attempt_is_moved_aside_and_never_tested(cfg_factory, tmp_path):
    # What a killed job leaves: a record that says running (its lock died with it) and a checkpoint.
    (tmp_path / "checkpoints").mkdir()
    torch.save({"junk": 1}, tmp_path / "checkpoints" / "best.ckpt")
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "running", "config_hash": "feedfeedfeedfeed"}))
    record = train(cfg_factory(*QUICK, "callbacks=default"))
    assert record["status"] == "ok"
    kept = tmp_path / "previous_attempts" / "1"
    assert torch.load(kept / "checkpoints" / "best.ckpt", weights_only=True) == {"junk": 1}
    assert json.loads((kept / "metrics.json").read_text())["status"] == "running"
    assert record["tested_checkpoint"] == str(tmp_path / "checkpoints" / "best.ckpt")
    assert "rnn_bench" in torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    runs, problems = find_records([tmp_path])
    assert [d for d, _ in runs] == [tmp_path] and not problems  # the attempt aside is not a run of its own


def test_files_of_an_unknown_run_are_not_touched(cfg_factory, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "mine.ckpt").write_bytes(b"precious")
    with pytest.raises(ConfigError, match="already holds files of an unknown run"):
        train(cfg_factory(*QUICK))
    assert (tmp_path / "checkpoints" / "mine.ckpt").read_bytes() == b"precious"


def test_ckpt_path_last_gets_the_same_checks_as_a_path(cfg_factory, tmp_path):
    with pytest.raises(ConfigError, match=r"ckpt_path=last: .*last.ckpt does not exist"):
        train(cfg_factory(*QUICK, "ckpt_path=last"))
    assert "ckpt_path=last" in read_record(tmp_path / "metrics.json")["error"]  # an empty dir records the failure
    train(cfg_factory(*QUICK, "callbacks=default", "cell.hidden_size=16", out=tmp_path / "a"))
    with pytest.raises(ConfigError, match=r"cell.hidden_size: checkpoint 16, this run 32"):
        resume_checkpoint(cfg_factory(*QUICK, "cell.hidden_size=32", "ckpt_path=last", out=tmp_path / "a"))
    before = snapshot(tmp_path / "a")
    with pytest.raises(ConfigError, match=r"cell.hidden_size: checkpoint 16, this run 32"):
        train(cfg_factory(*QUICK, "cell.hidden_size=32", "ckpt_path=last", out=tmp_path / "a"))
    assert snapshot(tmp_path / "a") == before


def csv_rows(run: Path) -> list[dict]:
    with open(run / "csv" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_resuming_keeps_the_history_the_wandb_run_and_follows_the_new_schedule(cfg_factory, tmp_path):
    args = [*QUICK, "callbacks=default", "logger=csv", "optimizer.lr=0.01"]
    first = train(cfg_factory(*args, "trainer.max_epochs=2"))
    rows = csv_rows(tmp_path)
    assert {r["epoch"] for r in rows} == {"0", "1", "2"}  # two epochs, and the test rows at epoch 2
    # Resume with a longer run under the default cosine schedule (T_max = trainer.max_epochs).
    resumed = train(cfg_factory(*args, "trainer.max_epochs=4", "ckpt_path=last"))
    after = csv_rows(tmp_path)
    assert after[: len(rows)] == [{**r, **{k: "" for k in set(after[0]) - set(r)}} for r in rows]  # kept
    assert {r["epoch"] for r in after} == {"0", "1", "2", "3", "4"}
    assert resumed["wandb_id"] == first["wandb_id"] and resumed["resumed"] == 1
    assert (tmp_path / "previous_attempts" / "1" / "metrics.json").exists()  # the first attempt's record
    # The learning rate the resumed epochs trained at: cosine over 4 epochs from epoch 2 on, not 0.
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    scheduler = last["lr_schedulers"][0]
    assert scheduler["T_max"] == 4
    assert last["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(
        0.01 * (1 + math.cos(math.pi * 4 / 4)) / 2, abs=1e-12
    )
    # (The uninterrupted 4-epoch run ends at the same point: lr 0 after its 4th epoch; the resumed epochs 2 and
    # 3 trained at 0.005 and 0.0015 instead of 0, which the next test checks step by step.)


def test_resumed_schedule_lr_matches_a_run_that_had_it_from_the_start(cfg_factory, tmp_path):
    from src.updates.schedules import follow_config

    params = [torch.zeros(1, requires_grad=True)]
    make = lambda T: lambda optimizer: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=T)  # noqa: E731
    old_opt = torch.optim.SGD(params, lr=0.1)
    old = make(2)(old_opt)
    for _ in range(2):
        old_opt.step(), old.step()
    assert old_opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    changed = follow_config(old, make(6), old_opt)
    assert changed == ["T_max: 2 -> 6"]
    assert old_opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * 2 / 6)) / 2)
    old_opt.step(), old.step()
    assert old_opt.param_groups[0]["lr"] == pytest.approx(0.1 * (1 + math.cos(math.pi * 3 / 6)) / 2)
    cyclic = lambda mode: (
        lambda optimizer: torch.optim.lr_scheduler.CyclicLR(  # noqa: E731
            optimizer, base_lr=0.01, max_lr=0.1, mode=mode, cycle_momentum=False
        )
    )
    opt = torch.optim.SGD(params, lr=0.1)
    with pytest.raises(ConfigError, match=r"CyclicLR.*mode: triangular -> triangular2.*cannot be recomputed"):
        follow_config(cyclic("triangular")(opt), cyclic("triangular2"), opt)


def test_sweep_job_dirs_follow_the_config_not_the_position(tmp_path):
    """A value added in the middle of a sweep's list: every job finds its own dir (the finished ones are
    skipped), none runs into another config's results."""
    common = [
        "-m",
        "dataset=digits",
        "debug=limit",
        "trainer.max_epochs=1",
        "logger=csv",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        f"hydra.sweep.dir={tmp_path}",
    ]
    first = run_cli(*common, "seed=1,3")
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli(*common, "seed=1,2,3")
    assert second.returncode == 0, second.stderr[-2000:]
    assert second.stdout.count("skipped: it holds a completed run of this config") == 2
    records = {d.name: r for d, r in find_records([tmp_path])[0]}
    assert len(records) == 3
    for name, record in records.items():
        assert f"seed={record['seed']}" in name.split(","), name
        assert record["status"] == "ok"
    assert rundir.job_dir_name("a=x/y,b=1") != rundir.job_dir_name("a=x_y,b=1")  # no collision by sanitizing
    assert len(rundir.job_dir_name("k=" + "v" * 400)) <= 180


def test_ckpt_path_last_names_no_dir_of_its_own_and_another_checkpoint_does():
    """The same multirun with ckpt_path=last resumes each job in its own dir; starting from a file is a new run."""
    name = rundir.job_dir_name("cell=gru,seed=1")
    assert rundir.job_dir_name("cell=gru,ckpt_path=last,seed=1") == name
    assert rundir.job_dir_name("ckpt_path=last,seed=1") == rundir.job_dir_name("seed=1")
    assert rundir.job_dir_name("ckpt_path=last") == rundir.job_dir_name("") == "defaults"
    assert rundir.job_dir_name("cell=gru,ckpt_path=lastly.ckpt,seed=1") != name
    assert rundir.job_dir_name("cell=gru,ckpt_path=a_last,seed=1") != name


def test_damaged_records_are_named_not_read(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "metrics.json").write_text("[1, 2]")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.json").write_text(json.dumps({"status": "ok", "monitor": "val/acc", "test/acc": "0.9"}))
    runs, problems = find_records([tmp_path])
    assert runs == [] and len(problems) == 2
    assert "a/metrics.json: a run record is a JSON object, this file holds a list" in problems[0][1]
    assert "field 'test/acc' holds '0.9', which is not a number" in problems[1][1]
    with pytest.raises(RecordError):
        read_record(tmp_path / "a" / "metrics.json")
