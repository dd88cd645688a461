"""Stream data sets (language models, sin->cos): one long sequence per split, read in contiguous windows.

As pytorch/examples' word_language_model batchifies: a split's stream is cut into `batch_size` rows of equal
length, and batch k is the window [k*bptt, (k+1)*bptt) of every row. So row i of batch k+1 continues row i of
batch k, and a recurrent state carried from one batch to the next (detached) is exactly the state the model
would have reached reading the row straight through. Nothing is shuffled: the rows are the order.

Under DDP the rows are sharded (process r takes rows r*B/W .. (r+1)*B/W - 1 of every window), so each process
still sees continuing rows. Every process gets the same number of windows, the last one possibly shorter.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from src.common.errors import ConfigError, DataError
from src.data.splits import PARTS, carve
from src.data.tensors import Batch, TensorDataModule


def batchify(inputs: torch.Tensor, targets: torch.Tensor | None, rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a stream into `rows` contiguous rows -> (x [rows, L, ...], y [rows, L, ...]).

    targets=None: next-token prediction, y is x shifted by one step within each row (each row of length L+1
    gives L predictions, as word_language_model's get_batch). Else the targets are aligned with the inputs."""
    length = len(inputs) // rows
    grid = lambda t: t[: rows * length].reshape(rows, length, *t.shape[1:])
    if targets is None:
        return grid(inputs)[:, :-1], grid(inputs)[:, 1:]
    return grid(inputs), grid(targets)


class StreamBatches:
    """Windows of `bptt` steps over batchified rows, in order; this process's share of the rows."""

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, bptt: int, rank: int = 0, world_size: int = 1, even: bool = True
    ):
        rows = len(x)
        if even and rows % world_size:
            raise ConfigError(
                f"dataset.batch_size={rows} must be divisible by the number of processes "
                f"({world_size}) so every process reads an equal share of the rows"
            )
        share = -(-rows // world_size)
        self.x, self.y = x[rank * share : (rank + 1) * share], y[rank * share : (rank + 1) * share]
        self.bptt, self.epoch = bptt, 0

    batch_sampler = None

    @property
    def sampler(self) -> StreamBatches:
        return self  # Lightning calls set_epoch on it; the order never changes

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return -(-self.x.shape[1] // self.bptt)

    def __iter__(self):
        if len(self.x) == 0:  # more processes than evaluation rows: this one has nothing to read
            return
        for t in range(0, self.x.shape[1], self.bptt):
            yield Batch(self.x[:, t : t + self.bptt], None, self.y[:, t : t + self.bptt])


class StreamDataModule(TensorDataModule):
    """Base for stream data sets. Subclasses implement `load_streams` -> {split: (inputs, targets | None)}
    (numpy, one row per time step; targets=None for next-token prediction). A missing val/test split is cut
    off the end of train (test last), in order, never at random: neighbouring steps are not independent.

    `bptt` is the window length: the steps one batch holds (and one backward pass covers with full BPTT).
    """

    stream = True  # batches continue each other row by row: a carried state is valid across batches
    # setup checks each split against its rows (batch_size, eval_batch_size), so those are not loader-only here
    LOADER_SETTINGS = ("shuffle_seed", "batches_per_step", "train_batch_limit", "train_log_interval")

    def __init__(self, bptt: int = 35, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(bptt, int) or bptt < 1:
            raise ConfigError(f"dataset.bptt={bptt} must be a positive integer")
        self.bptt = bptt

    def load_streams(self) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        streams = dict(self.load_streams())
        inputs, targets = streams["train"]
        if "val" not in streams or "test" not in streams:
            parts = carve(
                len(inputs),
                0 if "val" in streams else self.val_fraction,
                0 if "test" in streams else self.test_fraction,
                what=type(self).__name__,
            )
            for name in PARTS:  # in order (no seed): each part is one contiguous piece of the stream
                if name == "train" or name not in streams:
                    idx = parts[name]
                    streams[name] = (inputs[idx], None if targets is None else targets[idx])
        self.splits = {}
        for name in ("train", "val", "test"):
            inputs, targets = streams[name]
            rows = self.batch_size if name == "train" else self.eval_batch_size
            steps = len(inputs) // rows - (1 if targets is None else 0)
            if steps < 1:
                raise DataError(
                    f"{type(self).__name__}: the {name} split has {len(inputs)} steps, too short to "
                    f"cut into {rows} rows of at least {1 if targets is not None else 2} steps "
                    f"(dataset.{'batch_size' if name == 'train' else 'eval_batch_size'}={rows}); "
                    f"use a longer corpus or smaller batches"
                )
            self.splits[name] = (torch.as_tensor(inputs), None, None if targets is None else torch.as_tensor(targets))

    def steps(self, split: str) -> int:
        """Time steps of the split's stream."""
        return len(self.splits[split][0])

    def shape(self) -> tuple[str, int, int]:
        x = self.splits["train"][0]
        if x.is_floating_point():
            return "features", int(x.shape[-1]), int(self.splits["train"][2].shape[-1])
        return "tokens", self.vocab_size, self.vocab_size

    def batches(self, split: str, train: bool, trainer: L.Trainer | None) -> StreamBatches:
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        inputs, _, targets = self._tensors(split, trainer)
        x, y = batchify(inputs, targets, self.batch_size if train else self.eval_batch_size)
        return StreamBatches(x, y, self.bptt, rank, world, even=train)
