"""A run dir cannot be turned against its owner (issue 25, classes 1-3): nothing in a run dir or the cache is
followed through a symbolic link; every checkpoint a run tests or resumes is its own; a damaged checkpoint is
never read, and a failed resume never replaces a finished record. Every bad file here is made by the test."""

from __future__ import annotations

import json
import logging
import re
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from src.common.errors import ConfigError
from src.common.files import LinkError, atomic_write_json
from src.records import rundir
from src.records.checkpoints import AtomicCheckpointIO
from src.records.record import read_record
from src.train import train
from tests.conftest import run_cli

QUICK = ["dataset=digits", "debug=limit"]
SAVED = [*QUICK, "callbacks=default", "logger=csv"]
LINK = r"is a symbolic link \(-> .*\); rnn-bench never writes through a link in a run dir or the cache"


def refusal(call) -> str:
    """What `call()` was refused with (a ConfigError's message), or "(not refused)"; the tests check the files
    first, so a run that went on shows what it did to them."""
    try:
        call()
    except ConfigError as e:
        return str(e)
    return "(not refused)"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != rundir.LOCK
    }


@pytest.fixture
def victim(tmp_path) -> Path:
    """A file outside every run dir that a planted link points at: it must never change."""
    path = tmp_path / "elsewhere" / "precious.txt"
    path.parent.mkdir()
    path.write_text("precious\n")
    return path


# -- class 1: nothing in a run dir or the cache is followed through a symbolic link ------------------------------


def test_a_lock_planted_as_a_link_is_refused_and_not_written_through(cfg_factory, tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.LOCK).symlink_to(victim)
    refused = refusal(lambda: train(cfg_factory(*QUICK, out=run)))
    assert victim.read_text() == "precious\n"  # main wrote the run's pid into it
    assert re.search(rf"run/\.rnn_bench\.lock {LINK}.*rm '.*\.rnn_bench\.lock'", refused), refused
    assert not (run / "metrics.json").exists()


def test_a_record_planted_as_a_link_is_refused_not_read(cfg_factory, tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    victim.write_text(json.dumps({"status": "running", "config_hash": "feedfeedfeedfeed"}))
    (run / "metrics.json").symlink_to(victim)
    before = victim.read_text()
    with pytest.raises(LinkError, match=rf"run/metrics\.json {LINK}"):
        train(cfg_factory(*QUICK, out=run))
    assert victim.read_text() == before and (run / "metrics.json").is_symlink()  # main moved it aside and ran


def test_train_log_planted_as_a_link_is_never_appended_to(tmp_path, victim):
    run = tmp_path / "run"
    run.mkdir()
    (run / "train.log").symlink_to(victim)
    done = run_cli(*QUICK, "logger=csv", "callbacks=none", f"hydra.run.dir={run}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert victim.read_text() == "precious\n"  # main's Hydra file handler appended the run's log to it
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {run}/train.log is a symbolic link (-> {victim})")
    assert f"(rm '{run}/train.log')" in lines[0]


def test_a_fixed_probe_name_planted_as_a_link_creates_nothing_elsewhere(tmp_path):
    run, target = tmp_path / "run", tmp_path / "elsewhere" / "created-by-the-probe"
    run.mkdir()
    target.parent.mkdir()
    (run / ".write_test").symlink_to(target)  # Hydra's output-dir check touched this name
    done = run_cli(*QUICK, "logger=csv", "callbacks=none", f"hydra.run.dir={run}")
    assert not target.exists()
    assert done.returncode == 2 and f"error: {run}/.write_test is a symbolic link" in done.stderr


def test_previous_attempts_planted_as_a_link_keeps_the_earlier_attempt_in_the_run_dir(cfg_factory, tmp_path):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "failed", "config_hash": "feedfeedfeedfeed"}))
    (run / "previous_attempts").symlink_to(elsewhere)
    refused = refusal(lambda: train(cfg_factory(*QUICK, out=run)))
    assert list(elsewhere.iterdir()) == []  # main moved the earlier attempt out of the run dir, into the link
    assert re.search(rf"run/previous_attempts {LINK}", refused), refused
    assert json.loads((run / "metrics.json").read_text())["status"] == "failed"


def test_a_sweep_job_is_not_skipped_on_a_record_linked_from_another_dir(cfg_factory, tmp_path):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict, read_write

    from src.runs.sweeps import completed_record

    train(cfg_factory(*QUICK, out=tmp_path / "other"))  # a finished run of the same config, in another dir
    job = tmp_path / "job"
    job.mkdir()
    (job / "metrics.json").symlink_to(tmp_path / "other" / "metrics.json")
    cfg = cfg_factory(*QUICK, out=job)
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    assert completed_record(cfg) is None  # main skipped the job as finished, on the other dir's record
    assert re.search(rf"job/metrics\.json {LINK}", refusal(lambda: train(cfg)))


@pytest.mark.parametrize("planted", ["checkpoints", "csv/metrics.csv", "checkpoints/last.ckpt", "wandb"])
def test_a_link_in_a_resumed_run_dir_is_refused_and_nothing_changes(cfg_factory, tmp_path, planted):
    run = tmp_path / "run"
    train(cfg_factory(*SAVED, out=run))
    elsewhere = tmp_path / "elsewhere"
    path = run / planted
    if path.exists():
        path.rename(elsewhere)  # the run's own file or folder, now outside, and a link to it in its place
    else:
        elsewhere.mkdir()
    path.symlink_to(elsewhere)
    before, outside = snapshot(run), (snapshot(elsewhere) if elsewhere.is_dir() else elsewhere.read_bytes())
    refused = refusal(lambda: train(cfg_factory(*SAVED, "trainer.max_epochs=3", "ckpt_path=last", out=run)))
    assert (snapshot(elsewhere) if elsewhere.is_dir() else elsewhere.read_bytes()) == outside
    assert snapshot(run) == before  # main trained on, writing checkpoints or csv rows through the link
    assert re.search(rf"run/{planted} {LINK}", refused), refused


@pytest.mark.parametrize("linked, folder", [(".hydra", True), (".hydra/config.yaml", False), ("checkpoints", True)])
def test_the_writers_refuse_a_link_on_their_way(tmp_path, linked, folder):
    """The writers themselves, should a link appear after the claim: the run's .hydra files, its checkpoints."""
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (run / linked).parent.mkdir(exist_ok=True)
    (run / linked).symlink_to(elsewhere if folder else elsewhere / "x")
    with pytest.raises(LinkError, match=rf"run/{linked} {LINK}"):
        if linked.startswith(".hydra"):
            rundir.write_hydra_files(run, {"a": 1}, {"run": {"dir": str(run)}}, ["a=1"])
        else:
            AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, run / "checkpoints" / "last.ckpt")
    assert list(elsewhere.iterdir()) == []


def test_the_cache_is_never_written_through_a_link(tmp_path):
    from src.data.sources import _extracted, cached_arrays

    cache, elsewhere = tmp_path / "cache", tmp_path / "elsewhere"
    cache.mkdir()
    elsewhere.mkdir()
    (cache / "parsed").symlink_to(elsewhere)
    refused = refusal(lambda: cached_arrays(cache, "toy", {"v": 1}, lambda: {"x": np.arange(3)}))
    assert list(elsewhere.iterdir()) == []  # main wrote the parsed arrays there
    assert re.search(rf"cache/parsed {LINK}", refused), refused
    # A member extracted from a verified archive, into a folder of the cache that is a link.
    archive = tmp_path / "pkg.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/a.txt", "payload")
    (cache / "pkg-1.0").symlink_to(elsewhere)
    refused = refusal(lambda: _extracted(lambda: archive, "data/a.txt", cache / "pkg-1.0" / "data" / "a.txt", cache))
    assert list(elsewhere.iterdir()) == []  # main extracted the member there
    assert re.search(rf"cache/pkg-1\.0 {LINK}", refused), refused


def test_records_keep_working_in_a_run_dir_that_is_itself_a_link(cfg_factory, tmp_path):
    """The run dir itself (or the cache) may be a link, e.g. to a scratch disk: that is the user's choice."""
    real = tmp_path / "scratch" / "run"
    real.mkdir(parents=True)
    (tmp_path / "run").symlink_to(real)
    record = train(cfg_factory(*QUICK, out=tmp_path / "run"))
    assert record["status"] == "ok" and read_record(real / "metrics.json")["status"] == "ok"
    atomic_write_json(tmp_path / "run" / "x.json", {"a": 1}, within=tmp_path / "run")
    assert json.loads((real / "x.json").read_text()) == {"a": 1}


# -- class 2: every checkpoint a run tests or resumes is its own -------------------------------------------------


def finished(cfg_factory, run: Path, *extra: str) -> dict:
    record = train(cfg_factory(*SAVED, *extra, out=run))
    assert record["status"] == "ok"
    return record


@pytest.fixture
def job_log(tmp_path):
    """The log file Hydra's job logging gives a job run from the command line (<tmp_path>/train.log), for a job
    called in-process; the root logger's handlers as they were afterwards."""
    from src.runs.console import RunLogFile

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    handler = RunLogFile(str(tmp_path / "train.log"), delay=True)
    handler.setFormatter(logging.Formatter("[%(name)s][%(levelname)s] - %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield tmp_path / "train.log"
    for extra in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(extra)
        extra.close()
    root.setLevel(level)


@pytest.mark.parametrize("stacked", [True, False], ids=["stacked", "one-by-one"])
def test_a_seeds_job_leaves_a_members_dir_holding_another_run_as_it_is(cfg_factory, tmp_path, stacked, capsys, job_log):
    """seeds=[1,2] where seed=1/ holds another config's finished run: that run's files stay byte for byte (its log
    too: no line of this job goes into it), seed 1 fails alone with the refusal, seed 2 trains, with the job's log
    in its dir, and the job exits 1. Before: stacked, the whole job was refused (seed 2 recorded failed with seed
    1's refusal); one by one (seeds that cannot stack: dropout), the other run's metrics.json and .hydra/ were
    rewritten as seed 1's and reported ok."""
    from src.runs import seeds

    finished(cfg_factory, tmp_path / "seed=1", "cell=rnn")
    (tmp_path / "seed=1" / "train.log").write_text("the other run's log\n")
    before = snapshot(tmp_path / "seed=1")
    apart = [] if stacked else ["depth=2", "stack.dropout=0.2"]
    with pytest.raises(SystemExit) as ended:
        seeds.run(cfg_factory(*SAVED, *apart, "seeds=[1,2]", out=tmp_path), single=train)
    assert ended.value.code == 1
    said = capsys.readouterr()
    assert "seed=1 (failed)" in said.out and "seed=2 (ok)" in said.out
    assert "error: seed=1 failed: ConfigError: run dir" in said.err and "holds a run of another config" in said.err
    assert snapshot(tmp_path / "seed=1") == before
    assert read_record(tmp_path / "seed=2" / "metrics.json")["update"].startswith("stacked(" if stacked else "grouped(")
    assert "result of seed=2: val/acc_best" in (tmp_path / "seed=2" / "train.log").read_text()
    assert "result of seed=2: val/acc_best" in job_log.read_text()  # the job's own log, in its dir


def test_a_seeds_job_refused_a_single_runs_dir_leaves_it_as_it_was(cfg_factory, tmp_path):
    """seeds=[1,2] pointed at a single run's dir: refused in one line naming the dir and the run, before any line
    of its log, any member dir or any curve lands among that run's files. Before: the job's log was appended to
    that run's train.log and seed=1/, seed=2/ were made beside its checkpoints."""
    run = tmp_path / "run"
    finished(cfg_factory, run, "cell=rnn")
    (run / "train.log").write_text("the run's own log\n")
    before = snapshot(run)
    done = run_cli(*SAVED, "seeds=[1,2]", f"hydra.run.dir={run}")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.startswith(f"error: {run} holds a run, dataset=digits cell=rnn")
    assert "hydra.run.dir=<dir>" in done.stderr and done.stderr.count("\n") == 1
    assert snapshot(run) == before


def test_a_seeds_jobs_log_planted_as_a_link_is_refused_and_not_written_through(cfg_factory, tmp_path, victim, job_log):
    from src.runs import seeds

    (tmp_path / "train.log").symlink_to(victim)
    said = refusal(lambda: seeds.run(cfg_factory(*SAVED, "seeds=[1,2]", out=tmp_path)))
    assert re.match(f"{tmp_path}/train.log {LINK}", said), said
    assert victim.read_text() == "precious\n" and not (tmp_path / "seed=1").exists()


def test_a_packed_multiruns_job_whose_dir_holds_another_run_fails_alone(cfg_factory, tmp_path):
    """As unpacked: that job fails with the refusal, its dir byte for byte as it was; the pack's other jobs train
    (the claims of the pack failed every member, the sweep 0 ok, 2 failed)."""
    finished(cfg_factory, tmp_path / "seed=1", "cell=rnn")
    before = snapshot(tmp_path / "seed=1")
    done = run_cli("-m", *SAVED, "seed=1,2,3", f"hydra.sweep.dir={tmp_path}", 'hydra.sweep.subdir="seed=${seed}"')
    assert done.returncode == 1, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert (
        f"failed: {tmp_path / 'seed=1'}: ConfigError: run dir" in said and f"sweep {tmp_path}: 2 ok, 1 failed" in said
    )
    assert snapshot(tmp_path / "seed=1") == before
    assert {read_record(tmp_path / f"seed={s}" / "metrics.json")["update"][:8] for s in (2, 3)} == {"stacked("}


def test_a_moved_run_dir_tests_its_own_best_checkpoint_not_the_old_location(cfg_factory, tmp_path):
    old, moved = tmp_path / "old", tmp_path / "moved"
    first = finished(cfg_factory, old)
    old.rename(moved)
    finished(cfg_factory, old, "seed=7")  # another run (another seed) now lives at the old location
    # Resumed where it now lies, with nothing left to train: only the test runs.
    record = train(cfg_factory(*SAVED, "ckpt_path=last", out=moved))
    assert record["tested_checkpoint"] == str(moved / "checkpoints" / "best.ckpt")  # main: old/checkpoints/...
    assert record["test/loss"] == first["test/loss"] and record["test/acc"] == first["test/acc"]
    # The resume succeeded: the earlier attempt's record and .hydra/ are kept, no copy of its history.
    assert sorted(p.name for p in (moved / "previous_attempts" / "1").iterdir()) == [".hydra", "metrics.json"]


def test_a_moved_run_dir_without_its_best_checkpoint_tests_the_final_weights_and_says_so(cfg_factory, tmp_path):
    old, moved = tmp_path / "old", tmp_path / "moved"
    finished(cfg_factory, old)
    old.rename(moved)
    (moved / "checkpoints" / "best.ckpt").unlink()
    finished(cfg_factory, old, "seed=7")
    record = train(cfg_factory(*SAVED, "ckpt_path=last", out=moved))
    assert record["tested_checkpoint"] == "final weights"  # main tested old/checkpoints/best.ckpt, another run's


def test_resuming_with_another_seed_is_refused_and_nothing_changes(cfg_factory, tmp_path):
    run = tmp_path / "run"
    finished(cfg_factory, run)
    before = snapshot(run)
    refused = refusal(lambda: train(cfg_factory(*SAVED, "seed=7", "trainer.max_epochs=3", "ckpt_path=last", out=run)))
    assert snapshot(run) == before  # main trained on and recorded the run as seed 7
    assert re.fullmatch(
        rf"ckpt_path={run}/checkpoints/last\.ckpt belongs to another run: seed: checkpoint 42, this run 7\. To "
        r"resume it, use its settings \(seed=42\); to start a new run with these settings, drop ckpt_path and choose "
        r"a new dir \(hydra\.run\.dir=<new dir>\)",
        refused,
    ), refused


def test_evaluating_a_checkpoint_under_another_seed_is_refused(cfg_factory, tmp_path):
    finished(cfg_factory, tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    refused = refusal(
        lambda: train(cfg_factory(*QUICK, "train=false", "seed=3", f"ckpt_path={best}", out=tmp_path / "e"))
    )
    assert "belongs to another run: seed: checkpoint 42, this run 3. To evaluate it, use its settings (seed=42)" in (
        refused
    )
    assert read_record(tmp_path / "e" / "metrics.json")["status"] == "failed"  # main recorded seed 3's "result"


def test_a_checkpoint_of_another_run_planted_in_the_run_dir_is_not_tested(cfg_factory, tmp_path):
    run = tmp_path / "run"
    finished(cfg_factory, run)
    finished(cfg_factory, tmp_path / "other", "seed=7")
    shutil.copy(tmp_path / "other" / "checkpoints" / "best.ckpt", run / "checkpoints" / "best.ckpt")
    refused = refusal(lambda: train(cfg_factory(*SAVED, "ckpt_path=last", out=run)))
    assert "checkpoints/best.ckpt belongs to another run: seed: checkpoint 7, this run 42" in refused, refused


def test_resuming_with_another_optimizer_is_one_line_naming_the_option(cfg_factory, tmp_path):
    run = tmp_path / "run"
    finished(cfg_factory, run)
    before = snapshot(run)
    refused = refusal(
        lambda: train(cfg_factory(*SAVED, "optimizer=sgd", "trainer.max_epochs=3", "ckpt_path=last", out=run))
    )
    assert "belongs to another run: optimizer._target_: checkpoint Adam, this run SGD" in refused, refused
    assert "use its settings (optimizer=adam)" in refused  # main: a KeyError from inside torch's SGD
    assert snapshot(run) == before


def test_an_lr_given_on_resume_is_refused_not_silently_ignored(cfg_factory, tmp_path):
    run = tmp_path / "run"
    finished(cfg_factory, run)
    refused = refusal(
        lambda: train(cfg_factory(*SAVED, "optimizer.lr=0.05", "trainer.max_epochs=3", "ckpt_path=last", out=run))
    )
    # main resumed at the checkpoint's lr (0.002) and recorded the run under optimizer.lr=0.05
    assert "optimizer.lr: checkpoint 0.002, this run 0.05" in refused and "(optimizer.lr=0.002)" in refused


# -- class 3: a damaged checkpoint is never read; a failed resume never replaces a finished record ---------------


def damage(path: Path, member: str = "data/0", where: str = "data") -> None:
    """Flip one bit of a checkpoint: in the bytes of a member (a weight tensor, the pickled structure), or in the
    CRC-32 the zip's central directory records for it."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = next(i for i in zf.infolist() if i.filename.endswith("/" + member))
    if where == "data":
        name_len, extra_len = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
        raw[info.header_offset + 30 + name_len + extra_len + info.compress_size // 2] ^= 0x40
    else:
        entry = raw.index(b"PK\x01\x02")
        while raw[entry + 46 : entry + 46 + len(info.filename)] != info.filename.encode():
            entry = raw.index(b"PK\x01\x02", entry + 4)
        raw[entry + 16] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("member, where", [("data/0", "data"), ("data.pkl", "data"), ("data/0", "directory")])
def test_a_damaged_checkpoint_is_refused_before_anything_is_read(cfg_factory, tmp_path, member, where):
    finished(cfg_factory, tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    damage(best, member, where)
    refused = refusal(lambda: train(cfg_factory(*QUICK, "train=false", f"ckpt_path={best}", out=tmp_path / "e")))
    assert refused == (
        f"ckpt_path={best} is damaged (its {member} fails the zip's CRC check: it changed after it was written); "
        f"nothing was read from it. Restore it from a copy, use another checkpoint of the run, or train afresh"
    )  # main evaluated the changed weights as a result
    assert read_record(tmp_path / "e" / "metrics.json")["status"] == "failed"


def test_a_damaged_last_checkpoint_is_not_resumed_and_the_finished_run_stays(cfg_factory, tmp_path):
    run = tmp_path / "run"
    finished(cfg_factory, run)
    damage(run / "checkpoints" / "last.ckpt")
    before = snapshot(run)
    refused = refusal(lambda: train(cfg_factory(*SAVED, "trainer.max_epochs=3", "ckpt_path=last", out=run)))
    assert snapshot(run) == before  # main resumed the changed weights and replaced the finished record
    assert "last.ckpt is damaged (its data/0 fails the zip's CRC check" in refused, refused


def test_every_checkpoint_lightning_reads_is_verified(tmp_path):
    """The checkpoint a run tests after fitting is read by Lightning, through the suite's checkpoint IO."""
    path = tmp_path / "checkpoints" / "best.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(64.0)}}, path)
    damage(path)
    refused = refusal(lambda: AtomicCheckpointIO().load_checkpoint(path, weights_only=True))
    assert refused.startswith(f"checkpoint {path} is damaged (its data/0 fails the zip's CRC check"), refused


def test_generate_refuses_a_damaged_checkpoint(tmp_path):
    from src.generate import load_language_model

    path = tmp_path / "checkpoints" / "best.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.arange(64.0)}, "rnn_bench": {}}, path)
    damage(path)
    refused = refusal(lambda: load_language_model(path))
    assert refused.startswith(f"ckpt={path} is damaged (its data/0 fails"), refused


def test_a_failed_resume_never_replaces_the_finished_run(cfg_factory, tmp_path, monkeypatch):
    import src.train

    run = tmp_path / "run"
    finished(cfg_factory, run)
    before = snapshot(run)
    real = src.train.fit_and_test

    def fails_after_training(*args, **kwargs):  # the resumed epochs run (and write checkpoints), then it fails
        real(*args, **kwargs)
        raise FloatingPointError("the training loss became NaN")

    monkeypatch.setattr(src.train, "fit_and_test", fails_after_training)
    with pytest.raises(FloatingPointError):
        train(cfg_factory(*SAVED, "trainer.max_epochs=4", "ckpt_path=last", out=run))
    after = snapshot(run)
    attempt = run / "previous_attempts" / "1"
    failed = read_record(attempt / "metrics.json")
    assert failed["status"] == "failed" and "NaN" in failed["error"] and failed["resumed"] == 1
    assert torch.load(attempt / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3  # kept, not lost
    kept = {k: v for k, v in after.items() if not k.startswith("previous_attempts/")}
    assert kept == before  # the finished record, .hydra/, checkpoints and csv rows as they were (main: "failed")


@pytest.mark.parametrize("planted", ["a single run", "multirun.yaml as a link"])
def test_a_multiruns_sweep_dir_that_is_not_its_own_is_refused_and_nothing_changes(
    cfg_factory, tmp_path, victim, planted
):
    """hydra.sweep.dir pointed at a single run's dir, or holding multirun.yaml planted as a link: refused in one
    line (exit code 2) before Hydra writes multirun.yaml or any job runs. Before: Hydra wrote the sweep's config
    through the link (the file elsewhere overwritten), and the jobs' dirs and ledger went among the run's files."""
    sweep = tmp_path / "sweep"
    if planted == "a single run":
        finished(cfg_factory, sweep, "cell=rnn")
        expected = f"error: {sweep} holds a run, dataset=digits cell=rnn"
    else:
        sweep.mkdir()
        (sweep / "multirun.yaml").symlink_to(victim)
        expected = f"error: {sweep}/multirun.yaml is a symbolic link (-> {victim})"
    before, names = snapshot(sweep), sorted(p.name for p in sweep.iterdir())
    done = run_cli("-m", *SAVED, "seed=1,2", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 2 and done.stderr.startswith(expected), done.stderr[-2000:]
    assert done.stderr.count("\n") == 1
    assert snapshot(sweep) == before and sorted(p.name for p in sweep.iterdir()) == names
    assert victim.read_text() == "precious\n"


def test_the_leaderboard_never_writes_through_a_link_planted_in_its_dir(cfg_factory, tmp_path, capsys):
    """src.compare writes leaderboard.md, leaderboard.csv and plots/ into the sweep's dir: plots/ planted as a link
    to another folder is refused in one line before anything is written (its files there were replaced), and a
    `.write_test` planted as a dangling link is never followed (the probe created the file it points at)."""
    from src.compare.report import main as compare

    sweep = tmp_path / "sweep"
    finished(cfg_factory, sweep / "job")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "digits_bars.png").write_bytes(b"precious")
    (sweep / ".write_test").symlink_to(tmp_path / "created-elsewhere.txt")
    (sweep / "plots").symlink_to(elsewhere, target_is_directory=True)
    assert compare([str(sweep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {sweep}/plots is a symbolic link (-> {elsewhere})") and err.count("\n") == 1
    assert sorted(p.name for p in elsewhere.iterdir()) == ["digits_bars.png"]
    assert (elsewhere / "digits_bars.png").read_bytes() == b"precious" and not (sweep / "leaderboard.md").exists()
    (sweep / "plots").unlink()
    assert compare([str(sweep)]) == 0
    assert (sweep / "plots" / "digits_bars.png").is_file() and not (tmp_path / "created-elsewhere.txt").exists()
