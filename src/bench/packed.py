"""python -m src.bench packed [--cells lstm,lru] [--lrs 0.001,0.003,0.01] [--seeds 3] [--hidden 32] [--epochs 2]
                             [--repeats 3] [overrides...]

A learning-rate x seed multirun (`python -m src.train -m optimizer.lr=a,b,c seed=1,2,3`, one process, as a user
types it) with the packed launcher (the default: one stacked job per cell) against the same multirun with
`hydra.launcher.pack=false` (Hydra's jobs one after another in the same process), per cell, interleaved `--repeats`
times (the order of the two alternates between repeats). Reported, medians with min and max:

    whole sweep     the unpacked multirun's wall time over the packed one's
    compute only    the unpacked runs' wall_s summed over the packed members' wall_s (each pack's span counted
                    once): the sweep without the process's start-up

and the largest difference between a packed member's test metrics and its unpacked job's (the same runs).
The default recipe: smnist5k, hidden 32, 2 epochs; cells: torch's fused LSTM and LRU (a modern cell, vmapped).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from src.bench import report
from src.bench.stacked import COMMON, timed
from src.records.record import RECORD


def multirun(args: list[str], out: Path, pack: bool) -> float:
    """Wall seconds of `python -m src.train -m <args>` into the sweep dir `out`; fails loudly if it failed."""
    pack_arg = f"hydra.launcher.pack={str(pack).lower()}"
    return timed([sys.executable, "-m", "src.train", "-m", *COMMON, *args, f"hydra.sweep.dir={out}", pack_arg])


def runs(out: Path, jobs: int) -> dict[str, dict]:
    """{run dir relative to the sweep dir: record} of a finished multirun of `jobs` jobs, all ok."""
    found = {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob(RECORD))}
    if len(found) != jobs or any(r.get("status") != "ok" for r in found.values()):
        raise SystemExit(f"error: {out} holds {len(found)} runs of {jobs}, or one did not finish ok")
    return found


def compute_seconds(records: dict[str, dict]) -> float:
    """The runs' training span: each single run's wall_s, and each pack's once (its members share one span)."""
    packs: dict[str, float] = {}
    for name, record in records.items():
        stacked = record.get("stacked")
        key = (
            f"pack:{stacked.get('dir')}:{sorted(map(str, stacked.get('pack') or stacked.get('seeds')))}"
            if stacked
            else name
        )
        packs[key] = max(packs.get(key, 0.0), record["wall_s"])
    return sum(packs.values())


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench packed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cells", default="lstm,lru", help="cells, comma-separated: a sweep each")
    parser.add_argument("--lrs", default="0.001,0.003,0.01", help="the learning-rate grid")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N at each grid point")
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--name",
        default=None,
        help="output name under benchmarks/ (default packed-cpu, or packed-cuda with trainer=gpu)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the recipe (default: smnist5k)")
    args = parser.parse_args(argv)
    cells = args.cells.split(",")
    jobs = len(args.lrs.split(",")) * args.seeds
    grid = [f"optimizer.lr={args.lrs}", f"seed={','.join(str(s) for s in range(1, args.seeds + 1))}"]
    results = {cell: {"whole": [], "compute": [], "diff": [], "packed": [], "unpacked": []} for cell in cells}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for cell in cells:
                data = [] if any(o.startswith("dataset=") for o in args.overrides) else ["dataset=smnist5k"]
                recipe = [*data, f"cell={cell}", f"cell.hidden_size={args.hidden}"]
                recipe += [f"trainer.max_epochs={args.epochs}", *args.overrides, *grid]
                where = Path(tmp) / f"{repeat}-{cell}"
                walls, records = {}, {}
                for pack in [True, False] if repeat % 2 == 0 else [False, True]:
                    out = where / ("packed" if pack else "unpacked")
                    walls[pack] = multirun(recipe, out, pack)
                    records[pack] = runs(out, jobs)
                packed, unpacked = records[True], records[False]
                if packed.keys() != unpacked.keys():
                    raise SystemExit(f"error: the packed and unpacked sweeps left different run dirs in {where}")
                if not all(r["update"].startswith("stacked(") for r in packed.values()):
                    raise SystemExit(f"error: the packed sweep in {where} did not train stacked")
                entry = results[cell]
                entry["packed"].append(walls[True])
                entry["unpacked"].append(walls[False])
                entry["whole"].append(walls[False] / walls[True])
                entry["compute"].append(compute_seconds(unpacked) / compute_seconds(packed))
                tests = [
                    k
                    for k, v in next(iter(unpacked.values())).items()
                    if k.startswith("test/") and isinstance(v, float)
                ]
                entry["diff"].append(max(abs(packed[d][k] - unpacked[d][k]) for d in unpacked for k in tests))
                print(
                    f"{cell}: unpacked {walls[False]:.1f} s, packed {walls[True]:.1f} s ({jobs} jobs)",
                    file=sys.stderr,
                    flush=True,
                )
    rows = [
        {
            "cell": cell,
            "jobs": jobs,
            "unpacked multirun (s, median)": round(statistics.median(e["unpacked"]), 1),
            "packed multirun (s, median)": round(statistics.median(e["packed"]), 1),
            "whole sweep (median, min-max)": spread(e["whole"]),
            "compute only (median, min-max)": spread(e["compute"]),
            "largest test metric difference": max(e["diff"]),
        }
        for cell, e in results.items()
    ]
    summary = {
        "recipe": ["dataset=smnist5k", f"cell.hidden_size={args.hidden}", f"trainer.max_epochs={args.epochs}"]
        + args.overrides
        + grid,
        "repeats": args.repeats,
        "whole_sweep": {cell: round(statistics.median(e["whole"]), 2) for cell, e in results.items()},
        "compute_only": {cell: round(statistics.median(e["compute"]), 2) for cell, e in results.items()},
    }
    report.publish(
        args.name or f"packed-{report.recipe_device(args.overrides)}",
        rows,
        "python -m src.bench packed " + " ".join(argv),
        summary,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
