"""Past one machine: the SLURM and Ray launchers run real sweeps here, not only compose.

- submitit: a sweep through hydra/launcher=slurm_local, submitit's local executor (the code path of
  hydra/launcher=slurm minus sbatch: the jobs are pickled, run in processes of their own, and their results read
  back); the sbatch script of hydra/launcher=slurm rendered by the dry run.
- Ray: a sweep through Hydra's Ray launcher (hydra/launcher=ray_gpus) on a local Ray instance that this test starts,
  with fractional CPUs and GPUs per job (Ray is told of one GPU; the jobs train on the CPU).
- DDP inside a sweep on SLURM: allowed where each job's processes are SLURM tasks, refused elsewhere; a DDP sweep
  through the real SLURM launcher against a stand-in for sbatch/srun/sacct (each job 2 CPU processes).

Both sweeps check the record contract a cluster user relies on: one run dir per job under the sweep dir, metrics.json
(status ok, or failed with the error), a W&B offline run per job, the sweep summary counted from jobs that ran in
other processes and exit status 1 when a job failed, a rerun that skips the finished job, and the leaderboard.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from src.common.errors import ConfigError
from src.runs.sweeps import check_one_process_per_job, sbatch_script
from tests.conftest import run_cli
from tests.test_sweeps import as_multirun

# One job trains (lr 0.002), one fails (lr 1e30: the loss becomes NaN), each W&B-logged offline.
SWEEP = [
    "-m",
    "dataset=digits",
    "optimizer.lr=0.002,1e30",
    "debug=limit",
    "logger=many",
    "callbacks=none",
    "trainer=cpu",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
]


def job_dirs(sweep_dir: Path) -> dict[str, Path]:
    found = {}
    for overrides in sweep_dir.glob("*/.hydra/overrides.yaml"):
        values = dict(o.split("=", 1) for o in yaml.safe_load(overrides.read_text()))
        found[values["optimizer.lr"]] = overrides.parent.parent
    return found


def check_sweep_contract(sweep_dir: Path, run, launcher_says: str) -> None:
    first = run()
    assert first.returncode == 1, first.stdout[-2000:] + first.stderr[-4000:]
    assert launcher_says in first.stdout + first.stderr
    assert f"sweep {sweep_dir}: 1 ok, 1 failed" in first.stdout, first.stdout[-3000:]
    assert "error: 1 job(s) of this sweep failed" in first.stderr, first.stderr[-3000:]
    dirs = job_dirs(sweep_dir)
    assert set(dirs) == {"0.002", "1e+30"} and all(d.parent == sweep_dir for d in dirs.values())
    ok, failed = (json.loads((dirs[k] / "metrics.json").read_text()) for k in ("0.002", "1e+30"))
    assert ok["status"] == "ok" and ok["test/acc"] > 0 and ok["device"] == "cpu"
    assert failed["status"] == "failed" and failed["error"].startswith("TrainingDiverged")
    assert f"failed: {dirs['1e+30']}: TrainingDiverged" in first.stdout
    for d in dirs.values():  # a W&B offline run per job, in its own dir, with the id its record names
        runs = list((d / "wandb").glob("offline-run-*"))
        assert len(runs) == 1, f"{d}: {runs}"
        assert runs[0].name.endswith(json.loads((d / "metrics.json").read_text())["wandb_id"])

    done = (dirs["0.002"] / "metrics.json").stat().st_mtime_ns
    again = run()
    assert again.returncode == 1, again.stdout[-2000:] + again.stderr[-4000:]
    assert (dirs["0.002"] / "metrics.json").stat().st_mtime_ns == done
    assert f"sweep {sweep_dir}: 1 ok, 1 failed (1 skipped: finished before)" in again.stdout
    assert (dirs["1e+30"] / "previous_attempts" / "1" / "metrics.json").exists()

    from src.compare.report import main as compare

    assert compare([str(sweep_dir), "--no-plots"]) == 0
    board = (sweep_dir / "leaderboard.md").read_text()
    assert "## Failed runs" in board and "TrainingDiverged" in board and "| **" in board


def test_a_sweep_through_submitit_keeps_the_record_contract(tmp_path):
    """hydra/launcher=slurm_local: submitit pickles each job, runs it in a process of its own (where src must
    import and the run dir must be the same as under the basic launcher) and reads its result back."""
    sweep_dir = tmp_path / "sweep"
    check_sweep_contract(
        sweep_dir,
        lambda: run_cli(*SWEEP, "hydra/launcher=slurm_local", f"hydra.sweep.dir={sweep_dir}"),
        "Submitit 'local' sweep output dir",
    )
    logs = list((sweep_dir / ".submitit").glob("*/*_log.out"))  # where a SLURM job's stdout goes, per job
    assert len(logs) >= 2 and any("run dir:" in p.read_text() for p in logs)


def test_a_sweep_through_ray_keeps_the_record_contract(tmp_path):
    """hydra/launcher=ray_gpus as it is (num_gpus 0.25 per job), on a local Ray instance started by the launcher
    with 1 CPU and 1 (logical) GPU, each job asking for half a CPU: Ray packs both jobs at once."""
    try:
        import hydra_plugins.hydra_ray_launcher  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        pytest.fail(f"the ray extra is not installed ({e}): pip install -e '.[ray]' (make test installs it)")
    sweep_dir = tmp_path / "sweep"
    ray_args = [
        "hydra/launcher=ray_gpus",
        "hydra.launcher.ray.remote.num_cpus=0.5",
        "+hydra.launcher.ray.init.num_cpus=1",
        "+hydra.launcher.ray.init.num_gpus=1",
        "+hydra.launcher.ray.init.include_dashboard=false",
    ]
    check_sweep_contract(
        sweep_dir,
        lambda: run_cli(*SWEEP, *ray_args, f"hydra.sweep.dir={sweep_dir}"),
        "Ray Launcher is launching 2 jobs",
    )


def test_the_sbatch_dry_run_renders_what_a_cluster_needs(tmp_path):
    script, jobs = sbatch_script(
        [
            "sweep=quick",
            "trainer=gpu",
            "seed=1,2",
            "hydra.launcher.partition=gpu",
            f"hydra.sweep.dir={tmp_path}",
            "hydra.launcher.timeout_min=90",
            "hydra.launcher.setup=[module load cuda/12]",
        ]
    )
    # (the sweep's seeds=[1,2] stays in each job; the seed given on the command line wins: src/runs/seeds.py)
    assert len(jobs) == 16 * 3 * 2 and jobs[0] == [
        "dataset=smnist5k",
        "cell=rnn",
        "seeds=[1,2]",
        "direction=uni",
        "depth=1",
        "truncation=none",
        "sweep=quick",
        "trainer=gpu",
        "seed=1",
    ]
    _, few = sbatch_script(["sweep=quick", "dataset=digits,sine", "seed=3"])  # the command line wins
    assert len(few) == 2 * 3 and all("seed=3" in job for job in few)
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --time=90",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=16GB",
        f"#SBATCH --array=0-{len(jobs) - 1}%",
        f"#SBATCH --output={tmp_path}/.submitit/%A_%a/",
        "module load cuda/12",
        "srun ",
        "-m submitit.core._submit",
    ):
        assert line in script, f"{line!r} not in:\n{script}"
    default, _ = sbatch_script(["dataset=digits", f"hydra.sweep.dir={tmp_path}"])
    import sys

    assert f"source {sys.prefix}/bin/activate" in default and "#SBATCH --array" not in default  # one job
    ddp, _ = sbatch_script(["trainer=ddp", "hydra/launcher=slurm_ddp", "hydra.launcher.gpus_per_node=4"])
    assert "#SBATCH --gpus-per-node=4" in ddp and "#SBATCH --ntasks-per-node=4" in ddp
    out = run_cli_sweeps("sbatch", "dataset=digits", "seed=1,2,3", f"hydra.sweep.dir={tmp_path}")
    assert (
        out.returncode == 0 and "#SBATCH --array=0-2%3" in out.stdout and "#   2: dataset=digits seed=3" in out.stdout
    )
    bad = run_cli_sweeps("sbatch", "hydra/launcher=joblib")
    assert bad.returncode == 2 and "not a SLURM launcher" in bad.stderr


def run_cli_sweeps(*args: str):
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    return subprocess.run(
        [sys.executable, "-m", "src.runs.sweeps", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )


# What srun sets in each task of a job with 2 tasks on one node (sbatch --ntasks-per-node=2).
SLURM_TASK = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "2",
    "SLURM_NTASKS_PER_NODE": "2",
    "SLURM_NNODES": "1",
    "SLURM_PROCID": "1",
    "SLURM_LOCALID": "1",
    "SLURM_NODELIST": "gpu-node-01",
}


def test_ddp_in_a_sweep_is_allowed_only_where_slurm_starts_its_processes(cfg_factory):
    ddp = as_multirun(cfg_factory("trainer=ddp", "hydra/launcher=slurm_ddp"))
    assert ddp.hydra.launcher.tasks_per_node == ddp.hydra.launcher.gpus_per_node == 2
    check_one_process_per_job(ddp, env=SLURM_TASK)  # one task per GPU, started by srun: Lightning's SLURM env
    explicit = as_multirun(
        cfg_factory(
            "trainer=gpu",
            "trainer.devices=2",
            "+trainer.strategy=ddp",
            "hydra/launcher=slurm",
            "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.tasks_per_node=2",
        )
    )
    check_one_process_per_job(explicit, env=SLURM_TASK)
    refused = {
        "one task for 2 GPUs": (
            ["trainer=ddp", "hydra/launcher=slurm", "hydra.launcher.gpus_per_node=2"],
            SLURM_TASK,
            "tasks_per_node=1",
        ),
        "devices != tasks": (
            ["trainer=ddp", "trainer.devices=4", "hydra/launcher=slurm_ddp"],
            SLURM_TASK,
            "one task per device",
        ),
        "not started by srun": (
            ["trainer=ddp", "hydra/launcher=slurm_ddp"],
            {"SLURM_JOB_ID": "1"},
            "not started by srun",
        ),
        "interactive job": (
            ["trainer=ddp", "hydra/launcher=slurm_ddp"],
            {**SLURM_TASK, "SLURM_JOB_NAME": "interactive"},
            "not started by srun",
        ),
        "tasks per node differ": (
            ["trainer=ddp", "hydra/launcher=slurm_ddp"],
            {**SLURM_TASK, "SLURM_NTASKS_PER_NODE": "1"},
            "tasks per node",
        ),
        "nodes differ": (
            ["trainer=ddp", "hydra/launcher=slurm_ddp", "hydra.launcher.nodes=2"],
            SLURM_TASK,
            "num_nodes",
        ),
        "local submitit": (["trainer=ddp", "hydra/launcher=slurm_local"], SLURM_TASK, "whole sweep again"),
        "joblib": (["trainer=ddp", "hydra/launcher=joblib"], SLURM_TASK, "whole sweep again"),
        "basic launcher in an allocation": (["trainer=ddp"], SLURM_TASK, "whole sweep again"),
    }
    for case, (overrides, env, why) in refused.items():
        with pytest.raises(ConfigError, match=why):
            check_one_process_per_job(as_multirun(cfg_factory(*overrides)), env=env)
            pytest.fail(f"{case}: not refused")
    for ok in (["trainer=ddp_sim", "hydra/launcher=slurm_local"], ["trainer=gpu", "hydra/launcher=slurm"]):
        check_one_process_per_job(as_multirun(cfg_factory(*ok)), env={})


def test_the_ledger_counts_this_multiruns_jobs_from_any_process_and_only_rank_zero(
    cfg_factory, tmp_path, capsys, monkeypatch
):
    from lightning.fabric.utilities.rank_zero import rank_zero_only
    from omegaconf import OmegaConf

    from src.runs import commands
    from src.runs.sweeps import LEDGER, SweepSummary, log_job

    monkeypatch.setattr(commands, "started", False)  # the summary marks the command as started
    cfg = as_multirun(cfg_factory(out=tmp_path / "job"))
    sweep = Path(cfg.hydra.sweep.dir)
    log_job(cfg, "failed", "from an earlier multirun")  # before this one started: not counted
    summary = SweepSummary()
    summary.on_multirun_start(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))
    log_job(cfg, "ok")
    monkeypatch.setattr(rank_zero_only, "rank", 1, raising=False)  # another process of a DDP job: writes nothing
    log_job(cfg, "failed", "rank 1")
    monkeypatch.setattr(rank_zero_only, "rank", 0, raising=False)
    (sweep / LEDGER / "0-damaged.json").write_text("{not json")  # skipped with a warning
    entries = list((sweep / LEDGER).glob("*.json"))
    assert len(entries) == 3
    summary.on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}}))  # no SystemExit: 1 ok
    assert f"sweep {sweep}: 1 ok, 0 failed" in capsys.readouterr().out


# -- The SLURM launcher itself, against a stand-in for SLURM ------------------------------------------------------
# sbatch, srun and sacct as small scripts on PATH: sbatch runs the script submitit wrote (its setup lines, then
# srun) in the background with the environment SLURM gives a job (array index, job id, tasks per node); srun
# starts the tasks with their ranks (SLURM_PROCID, SLURM_LOCALID) and log files; sacct knows nothing, so submitit
# waits for the jobs' result files as on a cluster. No scheduling, no cgroups, no GPUs: what it checks is what the
# launcher, submitit and Lightning's SLURMEnvironment do with what SLURM sets.

SBATCH = r"""
import os, re, subprocess, sys
path = sys.argv[-1]
text = open(path).read()
with open(os.path.join(os.environ["FAKE_SLURM_DIR"], "submitted.sh"), "a") as log:
    log.write(text)
array = re.search(r"^#SBATCH --array=0-(\d+)", text, re.M)
tasks = re.search(r"^#SBATCH --ntasks-per-node=(\d+)", text, re.M).group(1)
name = re.search(r"^#SBATCH --job-name=(\S+)", text, re.M).group(1)
for i in range(int(array.group(1)) + 1 if array else 1):
    env = {**os.environ, "SLURM_JOB_ID": str(4300 + i) if array else "4242", "SLURM_JOB_NAME": name,
           "SLURM_NNODES": "1", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "localhost",
           "SLURM_NODELIST": "localhost", "SLURM_NTASKS_PER_NODE": tasks, "SLURM_NTASKS": tasks}
    if array:
        env.update(SLURM_ARRAY_JOB_ID="4242", SLURM_ARRAY_TASK_ID=str(i))
    subprocess.Popen(["bash", path], env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print("Submitted batch job 4242")
"""

SRUN = r"""
import os, subprocess, sys, time
args, files, i = sys.argv[1:], {}, 0
while args[i].startswith("--"):
    if args[i] in ("--output", "--error"):
        files[args[i]] = args[i + 1]
        i += 1
    i += 1
command = args[i:]
array = os.environ.get("SLURM_ARRAY_JOB_ID")
job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
folder = command[-1].replace("%j", job)
for _ in range(600):  # submitit moves the job's pickle in place once sbatch has answered
    if os.path.exists(os.path.join(folder, f"{job}_submitted.pkl")):
        break
    time.sleep(0.1)
def expand(pattern, task):
    return (pattern.replace("%A", array or "").replace("%a", os.environ.get("SLURM_ARRAY_TASK_ID", ""))
            .replace("%j", os.environ["SLURM_JOB_ID"]).replace("%t", str(task)))
procs = []
for task in range(int(os.environ["SLURM_NTASKS"])):
    out, err = expand(files["--output"], task), expand(files["--error"], task)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    env = {**os.environ, "SLURM_PROCID": str(task), "SLURM_LOCALID": str(task), "SLURM_STEP_ID": "0"}
    procs.append(subprocess.Popen(command, env=env, stdout=open(out, "a"), stderr=open(err, "a")))
sys.exit(max(p.wait() for p in procs))
"""

SACCT = 'print("JobID|State|NodeList")\n'


def stand_in_for_slurm(folder: Path) -> dict[str, str]:
    import os
    import sys

    bin_dir = folder / "bin"
    bin_dir.mkdir(parents=True)
    for name, code in (("sbatch", SBATCH), ("srun", SRUN), ("sacct", SACCT)):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{code}")
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "FAKE_SLURM_DIR": str(folder),
        "WANDB_MODE": "offline",
        "HYDRA_FULL_ERROR": "0",
    }


def test_a_ddp_sweep_through_the_slurm_launcher_runs_each_job_as_srun_tasks(tmp_path):
    """hydra/launcher=slurm_ddp with 2 tasks per job: a 2-job array, each job DDP over 2 processes (on the CPU,
    gloo) that srun started, not Lightning; each job's run dir written once, by rank 0, and no sweep run twice."""
    import subprocess
    import sys

    from tests.conftest import CACHE, ROOT

    env = {**stand_in_for_slurm(tmp_path / "slurm"), "RNN_BENCH_CACHE": str(CACHE), "OMP_NUM_THREADS": "1"}
    sweep_dir = tmp_path / "sweep"
    args = [
        "-m",
        "dataset=digits",
        "seed=1,2",
        "debug=limit",
        "logger=csv",
        "callbacks=none",
        "trainer=cpu",
        "trainer.devices=2",
        "+trainer.strategy=ddp",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "hydra/launcher=slurm_ddp",
        "hydra.launcher.gpus_per_node=null",
        "hydra.launcher.tasks_per_node=2",
        "hydra.launcher.partition=debug",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "src.train", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    logs = sorted((sweep_dir / ".submitit").glob("*/*_log.*"))
    report = done.stdout[-2000:] + done.stderr[-3000:] + "".join(f"\n== {p}\n{p.read_text()[-1500:]}" for p in logs)
    assert done.returncode == 0, report
    assert f"sweep {sweep_dir}: 2 ok, 0 failed" in done.stdout, report
    script = (tmp_path / "slurm" / "submitted.sh").read_text()
    assert script.count("#!/bin/bash") == 1  # one submission: the array
    assert "#SBATCH --array=0-1%2" in script and "#SBATCH --ntasks-per-node=2" in script
    assert "#SBATCH --partition=debug" in script and "srun " in script
    dirs = sorted(p.parent for p in sweep_dir.glob("*/metrics.json"))
    assert [d.name.split("seed=")[1].split(",")[0] for d in dirs] == ["1", "2"], dirs
    for d in dirs:
        record = json.loads((d / "metrics.json").read_text())
        assert record["status"] == "ok" and record["test/acc"] > 0, record
    for d in dirs:  # both tasks of each job ran, as the 2 members of one process group (Lightning logs it)
        log = (d / "train.log").read_text()
        assert "MEMBER: 1/2" in log and "MEMBER: 2/2" in log, report + log[-3000:]
    assert len(list((sweep_dir / ".jobs").glob("*.json"))) == 2  # one ledger entry per job: rank 0's
