"""python -m src.bench overhead [--cell lstm] [--epochs 4] [--repeats 2]

The suite's own cost: the same model (cell-128, row-by-row MNIST shape 28x28, batch 128, Adam) trained
  1. by a plain PyTorch loop over tensors already on the device (the loop the tutorials write by hand), and
  2. through the suite (`src.train.build`: data module, task module with its metrics, Trainer, CSV logger,
     progress bar, throughput and NaN callbacks; no checkpoints (callbacks=none); validation off so only training is
     timed; the classifier head a single linear layer, as in the plain loop),
in the same process, interleaved `--repeats` times; the median of each is reported with their ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import statistics
import sys
import time
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from src.bench import report

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
WARMUP = 10  # steps before the clock starts (allocator, threads, cuDNN autotuning)


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
    """Training samples/s from the WARMUP-th step to the end of training."""

    def __init__(self):
        self.steps, self.start, self.rate = 0, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.steps == WARMUP:
            sync(trainer.strategy.root_device)
            self.start = time.perf_counter()
        self.steps += 1
        self.batch = len(batch[0])

    def on_train_end(self, trainer, pl_module):
        sync(trainer.strategy.root_device)
        self.rate = (self.steps - WARMUP) * self.batch * trainer.world_size / (time.perf_counter() - self.start)


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
    """(samples/s, timed steps, the data module) for one training run through the suite."""
    datamodule, model, trainer = build_run([
        # task.head_hidden=0: one linear layer on the last step, the plain loop's model (the suite's
        # default head has a hidden layer, which is a different model, not overhead)
        f"cell={cell}", "dataset=smnist5k", "dataset.batch_size=128", "task.head_hidden=0", "scheduler=none",
        "logger=csv", "callbacks=none", f"trainer.max_epochs={epochs}", "trainer.limit_val_batches=0", "test=false",
        "trainer.enable_model_summary=false", *extra], out_dir)
    clock = StepClock()
    trainer.callbacks.append(clock)
    trainer.fit(model, datamodule=datamodule)
    return clock.rate, clock.steps - WARMUP, datamodule, trainer.strategy.root_device


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m src.bench overhead", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cell", default="lstm", choices=["rnn", "lstm", "gru"])
    parser.add_argument("--epochs", type=int, default=4, help="suite epochs per measurement (31 steps each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default=None, help="output name under benchmarks/ (default overhead-<device>)")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the suite run, e.g. trainer=gpu")
    args = parser.parse_args(argv)

    suite, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            rate, steps, datamodule, device = suite_run(args.cell, args.epochs, tmp, args.overrides)
            suite.append(rate)
            x, _, y = datamodule.splits["train"]
            x, y = x.to(device), y.to(device)
            plain.append(plain_loop(x, y, args.cell, steps, 128))
    suite_rate, plain_rate = statistics.median(suite), statistics.median(plain)
    summary = {"overhead_ratio": round(suite_rate / plain_rate, 3), "suite_samples_per_s": round(suite_rate),
               "plain_samples_per_s": round(plain_rate), "device": device.type, "cell": args.cell,
               "batch": 128, "hidden": 128, "timed_steps": steps, "repeats": args.repeats}
    rows = [{"impl": "plain loop", "samples_per_s": round(p)} for p in plain]
    rows += [{"impl": "suite", "samples_per_s": round(s), "ratio": round(s / statistics.median(plain), 3)}
             for s in suite]
    name = args.name or f"overhead-{args.cell}-{device.type}"
    report.publish(name, rows, "python -m src.bench overhead " + " ".join(argv), summary)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
