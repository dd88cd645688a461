"""A stacked job's members are ordinary runs everywhere (src/runs/seeds.py, src/runs/loggers.py MemberLoggers,
src/runs/stacked_resume.py): each member has its own W&B run, the one its single run would have (name, group, tags,
job type, config, the id its metrics.json names), with its own metrics and finished when it ends, read back here from
the offline files W&B leaves; the job itself has none. The job resumed as a whole continues every member exactly
(1 epoch + 1 resumed = 2 epochs = the single runs), refusing by name a member whose checkpoint cannot resume."""

from __future__ import annotations

import csv
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from src.common.errors import ConfigError
from src.compare.leaderboard import row_curves
from src.compare.report import build_sections, find_runs
from src.records import identity
from src.runs.seeds import train_seeds
from src.train import train
from tests.conftest import ROOT, make_cfg, run_cli
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


def test_the_jobs_model_summary_is_a_members(seeds_job):
    """The summary of a stacked job is its members' architecture (one member's rows and parameters, headed as each
    member's), as its single run shows it, not the job's one row of S tasks."""
    log = (seeds_job / "train.log").read_text()
    summary = log[log.index("model summary") :].split("Total params")[0]
    assert summary.startswith("model summary (each of the 2 members):")
    assert "RecurrentStack" in summary and "ModuleList" not in summary
    params = json.loads((seeds_job / "seed=1" / "metrics.json").read_text())["params"]
    assert summary.splitlines()[-1].split()[0] == f"{params / 1000:.1f}"  # one member's total, as Lightning rounds it


def test_each_members_dir_holds_the_jobs_log_as_its_single_runs_holds_its_own(seeds_job):
    """<member dir>/train.log: the job's log from the member's start (the model summary, its result), as a packed
    member's dir holds its pack's; the job's own log stays in the job's dir."""
    job_log = (seeds_job / "train.log").read_text()
    for seed in (1, 2):
        log = (seeds_job / f"seed={seed}" / "train.log").read_text()
        record = json.loads((seeds_job / f"seed={seed}" / "metrics.json").read_text())
        assert "model summary (each of the 2 members):" in log
        assert f"result of seed={seed}: val/acc_best {record['val/acc_best']:.4g}" in log
        assert log.splitlines()[-1] in job_log
        # the lines of one member (its build's seed, its W&B run's place, its result) in its own log and the job's,
        # not in the other members' logs (1,000 members would each hold all 1,000 members' lines)
        other = 3 - seed
        assert f"Seed set to {seed}\n" in log and f"Seed set to {other}\n" not in log
        assert f"result of seed={other}:" not in log and f"result of seed={other}:" in job_log
        (wandb_line,) = [line for line in log.splitlines() if "W&B run" in line]
        assert f"seed={seed}/wandb" in wandb_line and wandb_line in job_log
    # the job's summary: each result line's values as mean ± std over the seeds
    records = [json.loads((seeds_job / f"seed={s}" / "metrics.json").read_text()) for s in (1, 2)]
    acc, loss = ([r[k] for r in records] for k in ("test/acc", "test/loss"))
    summary = f"over 2 seeds: val/acc_best {statistics.mean(r['val/acc_best'] for r in records):.4g} ± "
    assert summary in job_log
    assert f"test/acc {statistics.mean(acc):.4g} ± {statistics.stdev(acc):.2g}" in job_log
    assert f"test/loss {statistics.mean(loss):.4g} ± {statistics.stdev(loss):.2g}" in job_log


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


# -- a stacked job resumed as a whole (src/runs/stacked_resume.py) ---------------------------------------------------

SMALL = [
    "dataset=digits",
    "cell=gru",
    "cell.hidden_size=8",
    "trainer.limit_train_batches=3",
    "trainer.limit_val_batches=2",
    "trainer.limit_test_batches=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]  # the default callbacks: each member's best and last checkpoints


def config(out: Path, *overrides: str):
    """SMALL with `overrides` (logger=csv unless they name one), composed as src.train composes it, run dir `out`."""
    logger = [] if any(o.startswith("logger=") for o in overrides) else ["logger=csv"]
    return make_cfg(out, [*SMALL, *logger, *overrides])


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def assert_same_weights(a: Path, b: Path) -> None:
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=1e-5, msg=f"{a} vs {b}: {name}")


def test_a_stacked_job_resumed_as_a_whole_continues_every_member_exactly(tmp_path):
    """A seeds=[1,2] job trained 1 epoch, then resumed to 2 (ckpt_path=last), equals a 2-epoch job and the members'
    single runs to 1e-5 (weights, best checkpoint, test loss; the cosine schedule over max_epochs follows the new
    limit, as a single run's does); each member's record, CSV curves and W&B run continue."""
    resumed, whole = tmp_path / "resumed", tmp_path / "whole"
    train_seeds(config(resumed, "logger=many", "seeds=[1,2]", "trainer.max_epochs=1"))
    first = {s: json.loads((resumed / f"seed={s}" / "metrics.json").read_text()) for s in (1, 2)}
    records = train_seeds(config(resumed, "logger=many", "seeds=[1,2]", "trainer.max_epochs=2", "ckpt_path=last"))
    assert [(r["seed"], r["status"], r["epochs"], r["resumed"]) for r in records] == [(1, "ok", 2, 1), (2, "ok", 2, 1)]
    train_seeds(config(whole, "seeds=[1,2]", "trainer.max_epochs=2"))
    train(config(tmp_path / "single", "seed=2", "trainer.max_epochs=2"))
    for s, record in zip((1, 2), records):
        member, again = resumed / f"seed={s}", whole / f"seed={s}"
        for name in ("last.ckpt", "best.ckpt"):
            assert_same_weights(member / "checkpoints" / name, again / "checkpoints" / name)
        alone = json.loads((again / "metrics.json").read_text())
        assert record["test/loss"] == pytest.approx(alone["test/loss"], abs=1e-5)
        assert record["val/acc_best"] == pytest.approx(alone["val/acc_best"], abs=1e-6)
        # its history continued: the first epoch's rows kept, the second's appended; the same W&B run resumed
        assert {row["epoch"] for row in csv.DictReader(open(member / "csv" / "metrics.csv"))} >= {"0", "1"}
        assert record["wandb_id"] == first[s]["wandb_id"]
        runs = offline_runs(member)
        assert [r.id for r in runs] == [record["wandb_id"]] * 2 and all(r.finished for r in runs)
        steps = [max(wandb_curve(r.history, "val/acc")) for r in runs]
        assert steps[1] > steps[0]  # the resumed run logs on from where the first attempt stopped
    single = tmp_path / "single" / "checkpoints"
    assert_same_weights(resumed / "seed=2" / "checkpoints" / "last.ckpt", single / "last.ckpt")
    assert_same_weights(resumed / "seed=2" / "checkpoints" / "best.ckpt", single / "best.ckpt")


@pytest.fixture(scope="module")
def one_epoch_job(tmp_path_factory) -> Path:
    """A seeds=[1,2] job trained one epoch, copied by each test that changes it."""
    job = tmp_path_factory.mktemp("one_epoch") / "job"
    cfg = config(job, "seeds=[1,2]", "trainer.max_epochs=1")
    train_seeds(cfg)
    return job


def resume(job: Path, *extra: str, epochs: int = 2) -> list[dict]:
    cfg = config(job, "seeds=[1,2]", f"trainer.max_epochs={epochs}", "ckpt_path=last", *extra)
    return train_seeds(cfg)


def copied(job: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(job, tmp_path / "job"))


@pytest.mark.parametrize(
    "damage, match",
    [
        ("missing", r"seed=2: ckpt_path=last: .*seed=2/checkpoints/last.ckpt does not exist"),
        ("flipped byte", r"seed=2: ckpt_path=.*seed=2/checkpoints/last.ckpt is damaged \(its data/"),
        (
            "another run's",
            r"seed=2: ckpt_path=.*seed=2/checkpoints/last.ckpt belongs to another run: seed: checkpoint 1",
        ),
    ],
)
def test_a_member_whose_last_checkpoint_cannot_resume_is_refused_by_name(one_epoch_job, tmp_path, damage, match):
    job = copied(one_epoch_job, tmp_path)
    last = job / "seed=2" / "checkpoints" / "last.ckpt"
    before = (job / "seed=1" / "metrics.json").read_text()
    if damage == "missing":
        last.unlink()
    elif damage == "flipped byte":
        data = bytearray(last.read_bytes())
        data[len(data) // 2] ^= 0xFF
        last.write_bytes(bytes(data))
    else:
        shutil.copy(job / "seed=1" / "checkpoints" / "last.ckpt", last)
    with pytest.raises(ConfigError, match=match):
        resume(job)
    assert (job / "seed=1" / "metrics.json").read_text() == before  # refused before any member was touched


def test_only_ckpt_path_last_resumes_a_stacked_job(one_epoch_job):
    last = one_epoch_job / "seed=1" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="resumes as a whole with ckpt_path=last"):
        train_seeds(config(one_epoch_job, "seeds=[1,2]", f"ckpt_path='{last}'"))
    with pytest.raises(ConfigError, match="train=false: to evaluate one member, run it alone"):
        resume(one_epoch_job, "train=false")


def test_finished_members_are_skipped_and_members_at_other_points_refused(one_epoch_job, tmp_path):
    job = copied(one_epoch_job, tmp_path)
    # seed=2 resumed alone to 2 epochs: the job resumed to 2 trains seed=1 alone and leaves seed=2 as it is
    member = job / "seed=2"
    cfg = config(member, "seed=2", "trainer.max_epochs=2", "ckpt_path=last")
    train(cfg)
    alone = (member / "metrics.json").read_text()
    records = resume(job)
    assert [(r["seed"], r["epochs"], r["status"]) for r in records] == [(1, 2, "ok"), (2, 2, "ok")]  # in seeds order
    assert (member / "metrics.json").read_text() == alone
    assert json.loads((job / "seed=1" / "metrics.json").read_text())["resumed"] == 1
    # every member finished: nothing trained
    records = resume(job)
    assert (member / "metrics.json").read_text() == alone and [r["epochs"] for r in records] == [2, 2]
    # seed=2 further alone, seed=1 not: they cannot resume together
    train(config(member, "seed=2", "trainer.max_epochs=3", "ckpt_path=last"))
    with pytest.raises(ConfigError, match=r"different points \(seed=1 at epoch 1 \(step \d+\), seed=2 at epoch 2"):
        resume(job, epochs=4)


def test_a_member_resumed_alone_keeps_its_best_checkpoint_as_its_single_run(tmp_path):
    """A member's checkpoints carry the state its single run's ModelCheckpoints would (the best so far, where it
    is), so resumed alone it keeps best.ckpt as that run would (no best-v1.ckpt, no first epoch taken as the best):
    seed=2 trained 1 epoch stacked, then 1 more alone, has the checkpoints of its 2-epoch single run. (Not in a
    copied dir: there Lightning restores no paths, for a single run's checkpoints too.)"""
    job = tmp_path / "job"
    train_seeds(config(job, "seeds=[1,2]", "trainer.max_epochs=1"))
    member = job / "seed=2"
    record = train(config(member, "seed=2", "trainer.max_epochs=2", "ckpt_path=last"))
    assert sorted(p.name for p in (member / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert record["tested_checkpoint"] == str(member / "checkpoints" / "best.ckpt")
    train(config(tmp_path / "single", "seed=2", "trainer.max_epochs=2"))
    for name in ("best.ckpt", "last.ckpt"):
        assert_same_weights(member / "checkpoints" / name, tmp_path / "single" / "checkpoints" / name)


# -- a multirun of stacked jobs: every member its own W&B run and its own curves -----------------------------------


@pytest.mark.parametrize(
    "grid, jobs",
    [
        (["optimizer.lr=0.01,0.02", "seed=1,2"], 1),  # packed (hydra/launcher=packed): one stacked job of 4
        (["optimizer.lr=0.01,0.02", "seeds=[1,2]"], 2),  # two seeds=[1,2] jobs
    ],
    ids=["packed", "seeds"],
)
def test_a_2x2_multirun_has_4_wandb_runs_with_their_own_settings_and_4_curves(tmp_path, grid, jobs):
    sweep = tmp_path / "sweep"
    done = run_cli("-m", *grid, *COMMON, "logger=many", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    records = {p.parent: json.loads(p.read_text()) for p in sweep.rglob("metrics.json")}
    assert len(records) == 4 and all(r["update"] == f"stacked(S={4 // jobs}, full)" for r in records.values())
    assert not list(sweep.rglob("wandb")) or all(p.parent in records for p in sweep.rglob("wandb"))
    seen = set()
    for member, record in records.items():
        (run,) = offline_runs(member)
        lr, seed = run.config["optimizer"]["lr"], run.config["seed"]
        seen.add((lr, seed))
        assert run.id == record["wandb_id"] and run.finished and (record["seed"], lr) == (seed, lr)
        assert run.config["run"]["optimizer_lr"] == lr and run.config["run"]["seed"] == seed
        assert f"lr={lr}" in run.name and run.name.endswith(f"-s{seed}") and f"optimizer.lr={lr}" in run.tags
        assert run.job_type == "multirun" and run.config["run"]["sweep_dir"] == str(sweep)
        assert wandb_curve(run.history, "val/acc") == pytest.approx(csv_curve(member, "val/acc"))
        # its checkpoints carry its own single run's ModelCheckpoint state, in its own dir
        states = torch.load(member / "checkpoints" / "last.ckpt", weights_only=True)["callbacks"]
        assert len(states) == 2 and {Path(v["dirpath"]) for v in states.values()} == {
            (member / "checkpoints").resolve()
        }
    assert seen == {(0.01, 1), (0.01, 2), (0.02, 1), (0.02, 2)}
    assert len({r["wandb_id"] for r in records.values()}) == 4
    # the leaderboard: one row per learning rate, each with both seeds' curves (training loss, monitored metric)
    compared = subprocess.run(
        [sys.executable, "-m", "src.compare", str(sweep)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert compared.returncode == 0, compared.stderr[-3000:]
    assert (sweep / "plots" / "digits_curves.png").is_file()
    (section,) = build_sections(find_runs([sweep]))
    assert sorted(len(row.runs) for row in section.rows) == [2, 2]
    for row in section.rows:
        curves = row_curves(row, ["train/loss", "val/acc"])
        assert {column: curve.seeds for column, curve in curves.items()} == {"train/loss": 2, "val/acc": 2}


def logged_where(run_dir: Path) -> set[tuple[int, str]]:
    """(step, column) of every value in a run's CSV curves."""
    with open(run_dir / "csv" / "metrics.csv", newline="") as f:
        return {(int(row["step"]), k) for row in csv.DictReader(f) for k, v in row.items() if v and k != "step"}


def test_a_members_curves_are_its_single_runs_on_a_task_without_training_metrics(tmp_path):
    """A regression task logs no training epoch metric, so the job's throughput at an epoch's end arrives alone at
    the members' loggers: each member gets it, as its single run logs it (it reached none before)."""
    args = ["dataset=sine", "cell=gru", "cell.hidden_size=8", "debug=limit", "logger=csv"]
    args.append("trainer.enable_progress_bar=false")
    job = run_cli("seeds=[1,2]", *args, f"hydra.run.dir={tmp_path / 'job'}")
    assert job.returncode == 0, job.stderr[-3000:]
    single = run_cli("seed=2", *args, f"hydra.run.dir={tmp_path / 'single'}")
    assert single.returncode == 0, single.stderr[-3000:]
    expected = logged_where(tmp_path / "single")
    assert {k for _, k in expected} >= {"perf/train_samples_per_s", "train/loss", "val/loss", "test/loss"}
    for seed in (1, 2):
        assert logged_where(tmp_path / "job" / f"seed={seed}") == expected


def run_with_open_file_limit(soft: int, hard: int, *args: str) -> subprocess.CompletedProcess:
    """`python -m src.train <args>` in a process that may open `soft` files (`hard` once it raises its limit)."""
    import resource

    return run_cli(*args, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))


@pytest.mark.skipif(sys.platform == "win32", reason="no limit on open files to set")
def test_a_job_of_more_members_than_the_open_file_limit_raises_it_or_is_refused_before_it_starts(tmp_path):
    """Each member keeps its log and its run dir's lock open: 40 members need more than a process allowed 64 open
    files (many systems allow 1,024 by default, and issue 28 asks for 1,000 seeds). The job raises its limit as far
    as the system allows (before, it failed halfway with "Too many open files"); where the system allows too few,
    the job is refused in one line before any member's dir is made."""
    import resource

    seeds = f"seeds=[{','.join(str(s) for s in range(1, 41))}]"
    args = [*COMMON, "logger=csv", "trainer.enable_model_summary=false", seeds]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    raised = run_with_open_file_limit(64, hard, *args, f"hydra.run.dir={tmp_path / 'raised'}")
    assert raised.returncode == 0, raised.stderr[-3000:]
    assert len(list((tmp_path / "raised").glob("seed=*/metrics.json"))) == 40
    refused = run_with_open_file_limit(64, 64, *args, f"hydra.run.dir={tmp_path / 'refused'}")
    lines = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-3000:]
    assert "40 members stacked keep about 2 files open each" in lines[0] and "(ulimit -n: 64, at most 64)" in lines[0]
    assert "Traceback" not in refused.stderr and not list((tmp_path / "refused").glob("seed=*"))


def test_the_logged_values_are_split_by_member_prefix_in_one_pass():
    """MemberLoggers and the members' records split the job's values by member: each member's own without its
    prefix, the job's (no member's prefix) apart; seed=1/ is not seed=10/'s, and a name may hold a '/'."""
    from src.runs.loggers import split_by_member

    values = {"seed=1/val/acc": 1, "seed=10/val/acc": 10, "epoch": 3, "val/acc": 0, "lr=a/b/train/loss": 7}
    shared, owns = split_by_member(values, ["seed=1/", "seed=10/", "lr=a/b/", "seed=2/"])
    assert shared == {"epoch": 3, "val/acc": 0}
    assert owns == [{"val/acc": 1}, {"val/acc": 10}, {"train/loss": 7}, {}]
