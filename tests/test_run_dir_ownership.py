"""A run dir cannot be turned against its owner (issue 25, classes 1-3): nothing in a run dir or the cache is
followed through a symbolic link; every checkpoint a run tests or resumes is its own; a damaged checkpoint is
never read, and a failed resume never replaces a finished record. Every bad file here is made by the test."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

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
