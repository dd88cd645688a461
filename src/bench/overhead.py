"""python -m src.bench overhead [--cell lstm] [--epochs 4] [--repeats 2] [--updates-per-step auto,1,...]

The suite's own cost: the same model (cell-128, row-by-row MNIST shape 28x28, batch 128, Adam) trained
  1. by a plain PyTorch loop over tensors already on the device (the loop the tutorials write by hand), and
  2. through the suite (`src.train.build`: data module, task module with its metrics, Trainer, CSV logger,
     progress bar, throughput and NaN callbacks; no checkpoints (callbacks=none); validation off so only training is
     timed; the classifier head a single linear layer, as in the plain loop),
in the same process, interleaved `--repeats` times; the median of each is reported with their ratio. The suite
runs once per `--updates-per-step` value (optimizer updates per Lightning step: auto = update=auto, the default
config, 8 on a GPU and 1 on CPU; 1 = update=automatic; K > 1 = update=graphed update.per_step=K);
`overhead_ratio` is the first value's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from src.bench import report
from src.callbacks import step_samples
from src.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
WARMUP = 10  # updates before the clock starts (allocator, threads, cuDNN autotuning)
BATCH = 128


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PlainNet(nn.Module):
    def __init__(self, cell: str, hidden: int = 128):
        super().__init__()
        self.rnn = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell](28, hidden, batch_first=True)
        self.head = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


def plain_loop(x: torch.Tensor, y: torch.Tensor, cell: str, steps: int, batch: int) -> float:
    device = x.device
    torch.manual_seed(0)
    net = PlainNet(cell).to(device)
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    n = len(x) // batch

    def step(i: int) -> None:
        sl = slice((i % n) * batch, (i % n + 1) * batch)
        loss = F.cross_entropy(net(x[sl]), y[sl])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for i in range(WARMUP):
        step(i)
    sync(device)
    start = time.perf_counter()
    for i in range(steps):
        step(i)
    sync(device)
    return steps * batch / (time.perf_counter() - start)


class StepClock(L.Callback):
    """Training samples/s from the end of the WARMUP-th update to the end of training."""

    def __init__(self, batch: int):
        self.batch, self.updates, self.timed, self.start, self.rate = batch, 0, 0, None, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        samples = step_samples(outputs, batch)
        if self.start is not None:
            self.timed += samples
        self.updates += samples // self.batch
        if self.start is None and self.updates >= WARMUP:
            sync(trainer.strategy.root_device)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        sync(trainer.strategy.root_device)
        self.rate = self.timed * trainer.world_size / (time.perf_counter() - self.start)


def build_run(overrides: list[str], out_dir: str):
    """(datamodule, model, trainer) of `python -m src.train <overrides>` with its outputs in out_dir, built as
    the command builds it, in this process."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from src.train import build

    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = cfg.hydra.runtime.output_dir = out_dir
    HydraConfig.instance().set_config(cfg)
    return build(cfg)


def suite_run(cell: str, epochs: int, out_dir: str, extra: list[str]):
    """(samples/s, timed updates, the data module, device) for one training run through the suite."""
    datamodule, model, trainer = build_run(
        [
            # task.head_hidden=0: one linear layer on the last step, the plain loop's model (the suite's
            # default head has a hidden layer, which is a different model, not overhead)
            f"cell={cell}",
            "dataset=smnist5k",
            f"dataset.batch_size={BATCH}",
            "task.head_hidden=0",
            "scheduler=none",
            "logger=csv",
            "callbacks=none",
            f"trainer.max_epochs={epochs}",
            "trainer.limit_val_batches=0",
            "test=false",
            "trainer.enable_model_summary=false",
            *extra,
        ],
        out_dir,
    )
    clock = StepClock(BATCH)
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=datamodule)
    return clock.rate, clock.timed // BATCH, datamodule, trainer.strategy.root_device


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
