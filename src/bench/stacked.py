"""python -m src.bench stacked [--sizes 32,128] [--members 8] [--epochs 2] [--repeats 3] [overrides...]

S members trained as one stacked job (`python -m src.train seeds=[1..S]`, one process) against the same S
single runs (`python -m src.train seed=<s>`, one process each), through the command users type, at each hidden
size, interleaved `--repeats` times (each repeat runs both at every size, the order of the two alternating, so
that a machine's changing load hits both alike). Two figures, medians with min and max over the repeats:

    whole job       the S single processes' wall time, summed, over the stacked process's
    compute only    the S single runs' wall_s (their metrics.json: data, model, fit and test, without the
                    process's start-up and imports), summed, over the stacked members' wall_s (the same span of
                    the stacked job, which all its members share)

and the largest difference between a member's test metric and its single run's (they train as exactly the same
runs: the stacked test pass evaluates each member on its own best checkpoint).

The default recipe: cell=lstm (torch's fused LSTM) on smnist5k, 2 epochs, as issue 28 measured it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src.bench import report
from src.records.record import RECORD

COMMON = ["logger=csv", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def train(args: list[str], out: Path) -> float:
    """Wall seconds of `python -m src.train <args>` with its outputs in `out`; fails loudly if it failed."""
    return timed([sys.executable, "-m", "src.train", *COMMON, *args, f"hydra.run.dir={out}"])


def timed(cmd: list[str]) -> float:
    """Wall seconds of the command `cmd`; fails loudly, with its stderr's end, if it failed."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(cmd)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return wall


def records(out: Path) -> list[dict]:
    found = [json.loads(p.read_text()) for p in sorted(out.rglob(RECORD))]
    if not found or any(r.get("status") != "ok" for r in found):
        raise SystemExit(f"error: a run in {out} did not finish ok; see its metrics.json")
    return found


def singles(recipe: list[str], seeds: list[int], out: Path) -> tuple[float, float, dict[int, dict]]:
    """(processes' wall time, runs' wall_s, {seed: record}) of one single run per seed."""
    wall, runs = 0.0, {}
    for seed in seeds:
        wall += train([*recipe, f"seed={seed}"], out / f"seed-{seed}")
        runs[seed] = records(out / f"seed-{seed}")[0]
    return wall, sum(r["wall_s"] for r in runs.values()), runs


def stacked(recipe: list[str], seeds: list[int], out: Path) -> tuple[float, float, dict[int, dict]]:
    """(process wall time, the members' wall_s, {seed: record}) of one seeds=[...] job."""
    wall = train([*recipe, f"seeds=[{','.join(map(str, seeds))}]"], out)
    members = {r["seed"]: r for r in records(out)}
    if not all(r["update"].startswith("stacked(") for r in members.values()):
        raise SystemExit(f"error: the members in {out} did not train stacked: {members[seeds[0]].get('stacked')}")
    return wall, max(r["wall_s"] for r in members.values()), members


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench stacked", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    parser.add_argument("--sizes", type=ints, default=[32, 128], help="hidden sizes, comma-separated")
    parser.add_argument("--members", type=int, default=8, help="S: seeds 1..S")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--name",
        default=None,
        help="output name under benchmarks/ (default stacked-cpu, or stacked-cuda with trainer=gpu)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe (default: cell=lstm smnist5k)")
    args = parser.parse_args(argv)
    seeds = list(range(1, args.members + 1))
    results: dict[int, dict[str, list[float]]] = {h: {"whole": [], "compute": [], "diff": []} for h in args.sizes}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for hidden in args.sizes:
                recipe = ["dataset=smnist5k", "cell=lstm", f"trainer.max_epochs={args.epochs}", *args.overrides]
                recipe.append(f"cell.hidden_size={hidden}")
                where = Path(tmp) / f"{repeat}-{hidden}"
                order = [singles, stacked] if repeat % 2 == 0 else [stacked, singles]
                measured = {run.__name__: run(recipe, seeds, where / run.__name__) for run in order}
                (one_wall, one_s, one), (job_wall, job_s, job) = measured["singles"], measured["stacked"]
                entry = results[hidden]
                entry["whole"].append(one_wall / job_wall)
                entry["compute"].append(one_s / job_s)
                tests = [k for k in one[seeds[0]] if k.startswith("test/") and isinstance(one[seeds[0]][k], float)]
                entry["diff"].append(max(abs(one[s][k] - job[s][k]) for s in seeds for k in tests))
                print(
                    f"hidden={hidden}: {args.members} processes {one_wall:.1f} s (runs' wall_s {one_s:.1f} s), "
                    f"stacked process {job_wall:.1f} s (members' wall_s {job_s:.1f} s)",
                    file=sys.stderr,
                    flush=True,
                )
    rows = [
        {
            "hidden": hidden,
            "S": args.members,
            "whole job (median, min-max)": spread(entry["whole"]),
            "compute only (median, min-max)": spread(entry["compute"]),
            "largest test metric difference": max(entry["diff"]),
        }
        for hidden, entry in results.items()
    ]
    summary = {
        "recipe": ["dataset=smnist5k", "cell=lstm", f"trainer.max_epochs={args.epochs}", *args.overrides],
        "members": args.members,
        "repeats": args.repeats,
        "whole_job": {f"hidden={h}": round(statistics.median(e["whole"]), 2) for h, e in results.items()},
        "compute_only": {f"hidden={h}": round(statistics.median(e["compute"]), 2) for h, e in results.items()},
    }
    report.publish(
        args.name or f"stacked-{report.recipe_device(args.overrides)}",
        rows,
        "python -m src.bench stacked " + " ".join(argv),
        summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
