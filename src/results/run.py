"""Running a table: its multirun as a `python -m src.train -m` process, timed (wall and CPU), and the runs it
produced, read from the sweep's ledger (src/runs/sweeps.py), so the page shows this invocation's jobs and no
stale run left in the dir by an older version of the page."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from src.common.files import atomic_write_text
from src.compare.leaderboard import Run, find_runs
from src.runs.sweeps import ledger_names, read_ledger

COSTS = ".results_cost.json"  # in the table's sweep dir: one entry per invocation


@dataclass
class Cost:
    invocations: int
    wall_s: float  # the multiruns' wall time, every invocation
    cpu_s: float  # user + system CPU time of the multirun processes, every invocation
    last_wall_s: float
    runs_wall_s: float  # the runs' own wall_s, each job once (a stacked job's members share one)
    jobs: int
    skipped: int  # jobs of the last invocation that had finished before


def run_multirun(command: list[str], sweep_dir: Path, cwd: Path) -> tuple[int, set[str], dict]:
    """Runs `command` (its output to the console); (exit status, the dirs of the jobs it ran or skipped, the
    invocation's cost entry, also appended to the sweep's cost file)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    before = ledger_names(sweep_dir)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, cwd=cwd, env={**os.environ, "HYDRA_FULL_ERROR": os.environ.get("HYDRA_FULL_ERROR", "0")}
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    entries = read_ledger(sweep_dir, before)
    latest = {str(e.get("dir")): str(e.get("status")) for e in entries}
    entry = {
        "at": time.time(),
        "wall_s": round(wall, 3),
        "cpu_s": round((after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime), 3),
        "returncode": done.returncode,
        "jobs": len(latest),
        "skipped": sum(s == "skipped" for s in latest.values()),
        "failed": sum(s == "failed" for s in latest.values()),
    }
    history = read_costs(sweep_dir)
    atomic_write_text(sweep_dir / COSTS, json.dumps([*history, entry], indent=1))
    return done.returncode, set(latest), entry


def read_costs(sweep_dir: Path) -> list[dict]:
    try:
        found = json.loads((sweep_dir / COSTS).read_text())
    except (OSError, ValueError):
        return []
    return [e for e in found if isinstance(e, dict)] if isinstance(found, list) else []


def job_runs(sweep_dir: Path, job_dirs: set[str]) -> list[Run]:
    """The runs of the given jobs: a job's own record, or its stacked members' (<job dir>/seed=<s>/)."""
    wanted = {str(Path(d).resolve()) for d in job_dirs}
    runs = find_runs([sweep_dir]) if sweep_dir.is_dir() else []
    return [r for r in runs if str(r.dir.resolve()) in wanted or str(r.dir.resolve().parent) in wanted]


def cost(sweep_dir: Path, runs: list[Run]) -> Cost:
    history = read_costs(sweep_dir)
    per_job: dict[str, float] = {}
    for run in runs:
        wall = run.record.get("wall_s")
        if not isinstance(wall, (int, float)):
            continue
        stacked = run.record.get("stacked")
        job = str(stacked.get("dir")) if isinstance(stacked, dict) and stacked.get("dir") else str(run.dir)
        per_job[job] = max(per_job.get(job, 0.0), float(wall))
    last = history[-1] if history else {}
    return Cost(
        invocations=len(history),
        wall_s=sum(float(e.get("wall_s", 0)) for e in history),
        cpu_s=sum(float(e.get("cpu_s", 0)) for e in history),
        last_wall_s=float(last.get("wall_s", 0)),
        runs_wall_s=sum(per_job.values()),
        jobs=int(last.get("jobs", 0)),
        skipped=int(last.get("skipped", 0)),
    )
