"""python -m src.bench overhead [--cell lstm] [--epochs 4] [--repeats 2] [--updates-per-step auto,1,...]

The suite's own cost: the same model (cell-128, row-by-row MNIST shape 28x28, batch 128, Adam) trained
  1. by a plain PyTorch loop over tensors already on the device (the loop the tutorials write by hand), and
  2. through the suite (`src.runs.build.build`: data module, task module with its metrics, Trainer, CSV logger,
     progress bar, throughput and NaN callbacks; no checkpoints (callbacks=none); validation off so only training is
     timed; the classifier head a single linear layer, as in the plain loop),
in the same process, interleaved `--repeats` times; the median of each is reported with their ratio. The suite
runs once per `--updates-per-step` value (optimizer updates per Lightning step: auto = update=auto, the default
config, 8 per step (each a CUDA graph on a GPU); 1 = update=automatic; K > 1 = update=graphed update.per_step=K);
`overhead_ratio` is the first value's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

from src.bench import report
from src.common.errors import ConfigError


def update_overrides(per_step: str) -> list[str]:
    """The update group's overrides for one --updates-per-step value."""
    if per_step == "auto":
        return ["update=auto"]
    if not per_step.isdigit() or int(per_step) < 1:
        raise ConfigError(f"updates_per_step={per_step!r} must be a positive integer or auto")
    return ["update=automatic"] if int(per_step) == 1 else ["update=graphed", f"update.per_step={int(per_step)}"]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench overhead", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--epochs", type=int, default=4, help="suite epochs per measurement (31 steps each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--updates-per-step",
        default="auto",
        type=lambda v: v.split(","),
        help="comma-separated updates_per_step values for the suite runs, e.g. auto,1,16 (auto: the default config's)",
    )
    parser.add_argument("--name", default=None, help="output name under benchmarks/ (default overhead-<device>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the suite run, e.g. trainer=gpu")
    args = parser.parse_args(argv)
    # torch, Lightning and the suite are imported after parsing: `--help` answers without them.
    from src.bench._runs import BATCH, plain_loop, suite_run

    if isinstance(args.updates_per_step, str):  # the default, not split by argparse
        args.updates_per_step = [args.updates_per_step]
    overrides_for = {k: update_overrides(k) for k in args.updates_per_step}
    suite: dict[str, list[float]] = {k: [] for k in args.updates_per_step}
    plain: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits all alike
            for k in args.updates_per_step:
                rate, updates, datamodule, device = suite_run(
                    args.cell, args.epochs, tmp, [*overrides_for[k], *args.overrides]
                )
                suite[k].append(rate)
            x, _, y = datamodule.splits["train"]
            x, y = x.to(device), y.to(device)
            plain.append(plain_loop(x, y, args.cell, updates, BATCH))
    plain_rate = statistics.median(plain)
    rates = {k: statistics.median(v) for k, v in suite.items()}
    first = args.updates_per_step[0]
    summary = {
        "overhead_ratio": round(rates[first] / plain_rate, 3),
        "suite_samples_per_s": round(rates[first]),
        "plain_samples_per_s": round(plain_rate),
        "device": device.type,
        "cell": args.cell,
        "updates_per_step": first,
        "batch": BATCH,
        "hidden": 128,
        "timed_updates": updates,
        "repeats": args.repeats,
    }
    if len(rates) > 1:
        summary["overhead_ratio_by_updates_per_step"] = {k: round(r / plain_rate, 3) for k, r in rates.items()}
    rows = [{"impl": "plain loop", "samples_per_s": round(p)} for p in plain]
    rows += [
        {"impl": f"suite, updates_per_step={k}", "samples_per_s": round(r), "ratio": round(r / plain_rate, 3)}
        for k, runs in suite.items()
        for r in runs
    ]
    name = args.name or f"overhead-{args.cell}-{device.type}"
    report.publish(name, rows, "python -m src.bench overhead " + " ".join(argv), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
