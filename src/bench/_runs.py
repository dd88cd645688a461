"""The training runs that `python -m src.bench overhead` and `python -m src.bench diagnostics` time (the plain
PyTorch loop, the suite's run built as `python -m src.train` builds it, and the clocks). Apart from the benchmarks'
command lines so that their `--help` loads neither torch nor Lightning; not a benchmark itself (leading _)."""

from __future__ import annotations

import time

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn

from src.common.paths import CONF_DIR
from src.runs.callbacks import step_samples
from src.updates.schedules import fused_on_cpu

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
    params = list(net.parameters())
    opt = torch.optim.Adam(params, 2e-3, **fused_on_cpu(torch.optim.Adam, params))  # as the suite's task builds it
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

    from src.runs.build import build

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


def diagnostics_run(diagnostics: bool, cell: str, epochs: int, out_dir: str, extra: list[str]) -> tuple[float, str]:
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
