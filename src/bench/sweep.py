"""python -m src.bench sweep [--jobs 8] [--parallel 4] [--epochs 3] [overrides ...]

Sweep throughput on one machine: the same N small training jobs (seeds 1..N of one config) run as a Hydra
multirun twice, through the command users type,
  1. one after another (Hydra's basic launcher), and
  2. `--parallel` at a time (hydra/launcher=gpu_pool: joblib worker processes; on a GPU, trainer=gpu_pool pins
     each worker to a GPU, so several small RNN jobs share one GPU),
and reports the total wall time of each and their ratio (sequential / parallel: > 1 means running jobs side by
side pays). A small RNN leaves most of a GPU idle (kernel launches, host-side Python), which is what the second
mode recovers.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src.bench import report
from src.records.record import find_records


def multirun(out_dir: Path, jobs: int, epochs: int, launcher: list[str], extra: list[str]) -> float:
    """Wall seconds of one multirun of `jobs` seeds; fails loudly if any job did not finish."""
    seeds = ",".join(str(s) for s in range(1, jobs + 1))
    cmd = [
        sys.executable,
        "-m",
        "src.train",
        "-m",
        f"seed={seeds}",
        f"trainer.max_epochs={epochs}",
        "logger=csv",
        "callbacks=none",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"hydra.sweep.dir={out_dir}",
        *launcher,
        *extra,
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: the multirun failed (exit {done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    metrics = [record for _, record in find_records([out_dir])[0]]
    failed = [m for m in metrics if m.get("status") != "ok"]
    if len(metrics) != jobs or failed:
        raise SystemExit(
            f"error: {len(metrics)} of {jobs} jobs wrote metrics.json, {len(failed)} failed; see {out_dir}"
        )
    return wall


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench sweep", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=8, help="jobs in the sweep (seeds 1..N)")
    parser.add_argument("--parallel", type=int, default=4, help="jobs at once in the parallel mode")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when torch sees a GPU)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every job, e.g. cell=gru")
    args = parser.parse_args(argv)
    import torch  # after parsing: `--help` answers without it

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    gpu = args.device == "cuda"
    sequential = ["trainer=gpu" if gpu else "trainer=cpu"]
    parallel = [
        "trainer=gpu_pool" if gpu else "trainer=cpu",
        "hydra/launcher=gpu_pool",
        f"hydra.launcher.n_jobs={args.parallel}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        seq_s = multirun(Path(tmp) / "sequential", args.jobs, args.epochs, sequential, args.overrides)
        par_s = multirun(Path(tmp) / "parallel", args.jobs, args.epochs, parallel, args.overrides)
    rows = [
        {"mode": "one after another", "jobs_at_once": 1, "wall_s": round(seq_s, 1)},
        {"mode": "gpu_pool" if gpu else "joblib", "jobs_at_once": args.parallel, "wall_s": round(par_s, 1)},
    ]
    summary = {
        "device": args.device,
        "jobs": args.jobs,
        "epochs": args.epochs,
        "parallel": args.parallel,
        "sequential_wall_s": round(seq_s, 1),
        "parallel_wall_s": round(par_s, 1),
        "speedup": round(seq_s / par_s, 2),
        "overrides": args.overrides,
    }
    report.publish(f"sweep-{args.device}", rows, "python -m src.bench sweep " + " ".join(argv), summary)
    return 0
