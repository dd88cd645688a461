"""python -m src.bench diagnostics [--cell lstm] [--epochs 30] [--repeats 3] [overrides...]

What `diagnostics=gradients` costs: the same training run (the default recipe's model and data: cell-128 on
row-by-row smnist5k, batch 128; validation off so only training is timed) with and without the diagnostics
callback at its default settings, interleaved `--repeats` times so drifting machine load hits both alike.
Samples/s are counted over the whole of training, from the first step to the end of `on_train_end`, so the
measurements before the first update and at the end (gradient flow, state statistics, files) are included.
The default is the default recipe's 30 epochs; fewer epochs are pessimistic: those fixed costs weigh more.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time

import lightning as L

from src.bench import report
from src.bench.overhead import build_run, sync


class FitClock(L.Callback):
    """Training samples over the time from on_train_start to the end of on_train_end (registered last, so its
    on_train_end runs after every other callback's)."""

    def __init__(self):
        self.samples, self.start, self.rate = 0, None, None

    def on_train_start(self, trainer, pl_module):
        sync(trainer.strategy.root_device)
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.samples += len(batch[0]) * trainer.world_size

    def on_train_end(self, trainer, pl_module):
        sync(trainer.strategy.root_device)
        self.rate = self.samples / (time.perf_counter() - self.start)


def run(diagnostics: bool, cell: str, epochs: int, out_dir: str, extra: list[str]) -> tuple[float, str]:
    datamodule, model, trainer = build_run(
        [
            f"cell={cell}",
            "dataset=smnist5k",
            "scheduler=none",
            "logger=csv",
            "callbacks=none",
            f"trainer.max_epochs={epochs}",
            "trainer.limit_val_batches=0",
            "test=false",
            "trainer.enable_model_summary=false",
            "trainer.enable_progress_bar=false",
            # one update per step in both runs (diagnostics need it; auto would give the other run 8 on a GPU)
            "update=automatic",
            *(["diagnostics=gradients"] if diagnostics else []),
            *extra,
        ],
        out_dir,
    )
    clock = FitClock()
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=datamodule)
    return clock.rate, trainer.strategy.root_device.type


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m src.bench diagnostics",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--epochs", type=int, default=30, help="epochs per run (31 steps each)")
    parser.add_argument("--repeats", type=int, default=3, help="pairs of runs, interleaved")
    parser.add_argument("--name", default=None, help="output name under benchmarks/ (default diagnostics-<device>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs, e.g. trainer=gpu")
    args = parser.parse_args(argv)

    rates: dict[bool, list[float]] = {False: [], True: []}
    rows = []
    for i in range(args.repeats):
        # Alternate which goes first, so neither always runs on a warmer (or busier) machine.
        for on in (False, True) if i % 2 == 0 else (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                rate, device = run(on, args.cell, args.epochs, tmp, args.overrides)
            rates[on].append(rate)
            rows.append({"repeat": i, "diagnostics": "on" if on else "off", "samples_per_s": round(rate, 1)})
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    summary = {
        "ratio_on_off": round(on / off, 3),
        "slowdown_pct": round(100 * (1 - on / off), 1),
        "samples_per_s_off": round(off, 1),
        "samples_per_s_on": round(on, 1),
        "device": device,
        "cell": args.cell,
        "epochs": args.epochs,
        "steps_per_run": 31 * args.epochs,
        "repeats": args.repeats,
        "diagnostics": "conf/diagnostics/gradients.yaml defaults",
    }
    name = args.name or f"diagnostics-{device}"
    report.publish(name, rows, "python -m src.bench diagnostics " + " ".join(argv), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
