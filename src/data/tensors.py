"""Data modules for data sets small enough to live as tensors, on the training device where they fit.

A batch is a `Batch(x, lengths, y)`: x is [B, T, F] float features or [B, T] token ids, lengths is [B] (or
None when every sequence has the full length T), y is [B] class ids (or per-step targets for other tasks).
Batches are cut by indexing whole tensors, so a training step does no per-sample Python work and no collation.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import numpy as np
import torch

from src.common.errors import ConfigError, DataError
from src.common.lightning_internals import trained_batches_this_epoch
from src.data.splits import PARTS, carve


class Batch(NamedTuple):
    x: torch.Tensor
    lengths: torch.Tensor | None
    y: torch.Tensor


def cut(batch: Batch, steps: int) -> Batch:
    """The batch's first `steps` time steps (of x, and of y where it has one per step)."""
    y = batch.y[:, :steps] if batch.y.dim() > 1 else batch.y
    return Batch(batch.x[:, :steps], batch.lengths, y)


@dataclass(frozen=True)
class DataSpec:
    """Everything the task learns of its data: the task builds itself from it (src/train.py build() hands it
    over) and never reaches into the data module. The first four fields fix the weights' shapes and are stored
    in checkpoints (`shape()`); the rest are what the task reports beside its own metrics."""

    task: str  # the task kind this data set is for: "classify", ...
    input_kind: str  # "features" (float vectors per step) or "tokens" (ids, PAD_ID = padding)
    input_size: int  # features per step, or vocabulary size for tokens
    num_classes: int
    stream: bool = False  # batches continue each other row by row (src/data/streams.py): evaluation carries state
    padded: bool = False  # sequences of several lengths, padded to a batch's longest (batches carry `lengths`)
    # test/baseline_<name>: what a trivial predictor scores on the test split (none if the data set knows none)
    baselines: dict[str, float] = field(default_factory=dict, compare=False)
    # (context [window, 1], truth [steps, 1]) of a series: an autoregressive rollout test; None for none
    rollout: Any = field(default=None, compare=False)
    # vocab, level, tokenizer of a language model's text (plain types), stored for src.generate; empty for others
    generation: dict = field(default_factory=dict, compare=False)

    SHAPE = ("task", "input_kind", "input_size", "num_classes")

    def shape(self) -> dict:
        """The fields a checkpoint stores: weights fit data that agrees on them."""
        return {name: getattr(self, name) for name in self.SHAPE}


class Batches:
    """Iterate over tensors in batches; shuffled per epoch from (seed, epoch); sharded over DDP ranks.

    `batch_size` is global: with N processes each takes 1/N of every batch, so a recipe trains the same way on
    one device or several. Training drops the last incomplete batch so every rank takes the same number of
    steps; evaluation covers every sample exactly once (no padding), so synced metrics equal one process's.
    """

    def __init__(
        self,
        tensors: Sequence[torch.Tensor | None],
        batch_size: int,
        shuffle: bool,
        drop_last: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        skip: Callable[[], int] | None = None,
    ):
        self.tensors, self.batch_size, self.shuffle, self.drop_last = tensors, batch_size, shuffle, drop_last
        self.skip = skip  # batches of this epoch already trained on (a run resumed from a mid-epoch checkpoint)
        self.seed, self.rank, self.world_size, self.epoch = seed, rank, world_size, 0
        self.n = len(next(t for t in tensors if t is not None))
        if drop_last and batch_size % world_size:
            raise ConfigError(
                f"dataset.batch_size={batch_size} must be divisible by the number of processes "
                f"({world_size}) so every process takes an equal share"
            )

    batch_sampler = None  # with `sampler`, what Lightning looks for on a loader

    @property
    def sampler(self) -> Batches:
        return self  # Lightning calls `loader.sampler.set_epoch(epoch)` at the start of every epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        device = next(t for t in self.tensors if t is not None).device
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).to(device)
        else:
            order = torch.arange(self.n, device=device)
        for i in range(self.skip() if self.skip else 0, len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            if self.drop_last:
                share = self.batch_size // self.world_size
                idx = idx[self.rank * share : (self.rank + 1) * share]
            else:
                idx = idx[self.rank :: self.world_size]
            if len(idx):
                yield Batch(*(None if t is None else t[idx] for t in self.tensors))


class BatchGroups:
    """The training loader of a strategy that makes several updates per Lightning step (update=grouped): lists
    of up to `per_step` consecutive batches of `batches`, one list per step, so the step takes them the ordinary
    way (training_step(batch, batch_idx)). Lightning counts steps; the batches of the epoch, `limit` (as
    trainer.limit_train_batches would count them: an int, or a fraction of the epoch) and a resumed epoch's
    trained batches (`trained`) are counted here in batches, so K > 1 trains the same batches as K = 1; so is
    the logging interval (`log_interval`, trainer.log_every_n_steps), at which update=grouped writes train/loss
    as one update per step would."""

    batch_sampler = None

    def __init__(
        self,
        batches,
        per_step: int,
        limit: int | float | None,
        trained: Callable[[], int],
        log_interval: int | None = None,
    ):
        self.batches, self.per_step, self.limit, self.trained = batches, per_step, limit, trained
        self.log_interval = log_interval

    @property
    def sampler(self):
        return self.batches.sampler  # set_epoch reaches the batches' shuffling

    def epoch_batches(self) -> int:
        """Batches in a whole epoch, after the limit (Lightning's rule: an int caps, a float is a fraction)."""
        n = len(self.batches)
        if self.limit is None or isinstance(self.limit, bool):
            return n
        return min(n, self.limit) if isinstance(self.limit, int) else int(n * self.limit)

    def __len__(self) -> int:
        return -(-self.epoch_batches() // self.per_step)

    def log_every(self) -> int:
        """The batches between two train/ points of the loggers (trainer.log_every_n_steps, Lightning's 50 when
        unset), no more than an epoch's, so a short epoch's curve is not empty (src/runs/build.py
        step_counts does the same for one batch per step)."""
        interval = 50 if self.log_interval is None else self.log_interval  # >= 1: src/runs/build.py checks it
        return max(1, min(interval, self.epoch_batches()))

    def __iter__(self):
        left, group = self.epoch_batches() - self.trained(), []
        for batch in self.batches:  # starts after the batches a resumed epoch already trained
            if left <= 0:
                break
            group.append(batch)
            left -= 1
            if len(group) == self.per_step:
                yield group
                group = []
        if group:
            yield group


Arrays = tuple  # (x, y) or (x, lengths, y): numpy arrays; lengths may be None


class TensorDataModule(L.LightningDataModule):
    """Base for in-memory data sets: subclasses implement `fetch` (optional) and `load_splits`.

    `load_splits` returns {"train": (x, y) or (x, lengths, y), "val": ..., "test": ...}; a missing val or test
    split is carved out of train by a seeded split (src/data/splits.py; stratified for class labels) with the
    fixed `split_seed`, so runs with different seeds see the same data. Subclasses may set `vocab_size` /
    `num_classes` (and `task`); otherwise they are read off the tensors. What the task gets to know is `spec`,
    with the data set's `baselines()` and `rollout()` if it has them.
    """

    task = "classify"
    stream = False  # StreamDataModule: batches continue each other row by row
    # What only the loaders read, not setup: data modules that differ in nothing else set up the same splits.
    LOADER_SETTINGS = (
        "shuffle_seed",
        "batch_size",
        "eval_batch_size",
        "batches_per_step",
        "train_batch_limit",
        "train_log_interval",
    )

    def __init__(
        self,
        data_dir: str | None = None,
        cache_dir: str = ".cache",
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        shuffle_seed: int = 0,
        on_device: bool = True,
        max_device_bytes: int = 2 << 30,
        batches_per_step: int = 1,
        train_batch_limit: int | float | None = None,
        train_log_interval: int | None = None,
    ):
        """`batches_per_step`, `train_batch_limit` and `train_log_interval` are handed by src/runs/build.py, not
        configured: K > 1 (an update strategy with several updates per Lightning step, update=grouped) makes the
        training loader hand groups of K batches (BatchGroups), and the Trainer's batch limit and logging
        interval are then the loader's, in batches."""
        super().__init__()
        for name, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", 1 if eval_batch_size is None else eval_batch_size),
            ("max_device_bytes", max_device_bytes),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"dataset.{name}={value!r} must be a positive integer")
        for name, value in (("split_seed", split_seed), ("shuffle_seed", shuffle_seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"dataset.{name}={value!r} must be an integer >= 0")
        for name, frac in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac < 0.5:
                raise ConfigError(f"dataset.{name}={frac!r} must be between 0 and 0.5")
        if not isinstance(on_device, bool):
            raise ConfigError(f"dataset.on_device={on_device!r} must be true or false")
        self.data_dir = Path(data_dir).expanduser() if data_dir else None
        self.cache_dir = Path(cache_dir).expanduser()
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.val_fraction, self.test_fraction, self.split_seed = val_fraction, test_fraction, split_seed
        self.shuffle_seed, self.on_device, self.max_device_bytes = shuffle_seed, on_device, max_device_bytes
        self.splits: dict[str, tuple] | None = None  # split -> (x, lengths | None, y) tensors
        self.vocab_size: int | None = None
        self.num_classes: int | None = None
        self._placed: dict[str, tuple] = {}
        self.batches_per_step, self.train_batch_limit = batches_per_step, train_batch_limit
        self.train_log_interval = train_log_interval

    # -- to implement --------------------------------------------------------------------------------------
    def fetch(self) -> None:
        """Download/verify/cache the source (runs once, on rank 0)."""

    def load_splits(self) -> dict[str, Arrays]:
        raise NotImplementedError

    def splits_key(self) -> str:
        """What this module's setup depends on (its class and its settings but LOADER_SETTINGS), read before setup:
        a stacked job's members with the same key load their data once (share_splits)."""
        settings = sorted((k, v) for k, v in vars(self).items() if k not in self.LOADER_SETTINGS)
        return f"{type(self).__module__}.{type(self).__qualname__}:{settings!r}"

    def share_splits(self, twin: TensorDataModule) -> TensorDataModule:
        """This module set up as `twin` (set up, same splits_key) is: a copy of twin holding the same tensors and
        what its setup derived from them, with this module's own loader settings (its shuffle seed, its batches)."""
        shared = copy.copy(twin)
        for name in self.LOADER_SETTINGS:
            setattr(shared, name, getattr(self, name))
        return shared

    # -- Lightning hooks ------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        self.fetch()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        raw = {
            name: arrays if len(arrays) == 3 else (arrays[0], None, arrays[1])
            for name, arrays in self.load_splits().items()
        }
        if "val" not in raw or "test" not in raw:
            y = raw["train"][2]
            parts = carve(
                len(y),
                0 if "val" in raw else self.val_fraction,
                0 if "test" in raw else self.test_fraction,
                seed=self.split_seed,
                labels=y if y.ndim == 1 and np.issubdtype(y.dtype, np.integer) else None,  # class ids: stratified
                what=type(self).__name__,
            )
            train = raw["train"]
            raw = {name: raw[name] if name in raw and name != "train" else _take(train, parts[name]) for name in PARTS}
        self.splits = {}
        for name in ("train", "val", "test"):
            x, lengths, y = raw[name]
            if len(x) == 0:
                raise DataError(
                    f"{type(self).__name__}: the {name} split is empty; use more data or change "
                    f"dataset.val_fraction / dataset.test_fraction"
                )
            self.splits[name] = (
                torch.as_tensor(x),
                None if lengths is None else torch.as_tensor(lengths),
                torch.as_tensor(y),
            )
        if self.task == "classify":
            self._check_labels()

    def _check_labels(self) -> None:
        if self.num_classes is not None:  # declared by the data set: a label outside it is bad data, not a class
            for name, (_, _, y) in self.splits.items():
                bad = ((y < 0) | (y >= self.num_classes)).nonzero()
                if len(bad):
                    i = int(bad[0, 0])
                    raise DataError(
                        f"{type(self).__name__}: {name} sample {i} has label {int(y[i])}, outside the "
                        f"{self.num_classes} classes 0-{self.num_classes - 1} this data set declares "
                        f"({len(bad)} such labels); the data files are corrupt or of another data set"
                    )
        seen = set(self.splits["train"][2].unique().tolist())
        for name in ("val", "test"):
            unseen = set(self.splits[name][2].unique().tolist()) - seen
            if unseen:
                raise DataError(
                    f"{type(self).__name__}: labels {sorted(unseen)} occur in {name} but never in "
                    f"train; the model could never predict them"
                )

    @property
    def spec(self) -> DataSpec:
        if self.splits is None:
            self.setup()
        kind, size, classes = self.shape()
        return DataSpec(
            task=self.task,
            input_kind=kind,
            input_size=size,
            num_classes=classes,
            stream=self.stream,
            padded=self.splits["train"][1] is not None,
            baselines=self.baselines(),
            rollout=self.rollout(),
            generation=self.generation_info(),
        )

    def shape(self) -> tuple[str, int, int]:
        """(input kind, input size, classes), read off the tensors where the data set declares none."""
        x = self.splits["train"][0]
        kind = "features" if x.is_floating_point() else "tokens"
        if kind == "features":
            size = int(x.shape[-1])
        else:
            size = self.vocab_size or int(max(int(s[0].max()) for s in self.splits.values())) + 1
        classes = self.num_classes or int(max(int(s[2].max()) for s in self.splits.values())) + 1
        return kind, size, classes

    def baselines(self) -> dict[str, float]:
        """What a trivial predictor scores on the test split (logged as test/baseline_<name>); {} if unknown:
        for classification, tagging and seq2seq the training split's most frequent class (src/data/baselines.py)."""
        from src.data import baselines as trivial
        from src.data.tokens import IGNORE, PAD_ID

        ignore = {"classify": None, "tag": IGNORE, "seq2seq": PAD_ID}
        if self.task not in ignore or self.splits is None:
            return {}
        train, test = self.splits["train"][2], self.splits["test"][2]
        if train is None or test is None or train.is_floating_point():
            return {}
        return trivial.constant_class(train, test, self.shape()[2], ignore=ignore[self.task])

    def rollout(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(context, truth) of an autoregressive rollout test (series with rollout_steps); None for none."""
        return None

    def generation_info(self) -> dict:
        """What src.generate needs to map text to ids and back (language models); {} for others."""
        return {}

    def _tensors(self, split: str, trainer: L.Trainer | None) -> tuple:
        """The split's tensors, moved once to the training device if they fit under max_device_bytes."""
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        key = f"{split}@{device}"
        if key not in self._placed:
            tensors = self.splits[split]
            size = sum(t.numel() * t.element_size() for t in tensors if t is not None)
            if self.on_device and size <= self.max_device_bytes:
                tensors = tuple(None if t is None else t.to(device) for t in tensors)
            self._placed[key] = tensors
        return self._placed[key]

    def batches(self, split: str, train: bool, trainer: L.Trainer | None) -> Batches:
        """The split's batches for the run `trainer` runs (its device, process rank and, resumed mid-epoch, the
        batches of the epoch already trained): what this module's loaders are for its own Trainer, and a stacked
        job's loaders for each member's data (src/runs/seeds.py)."""
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        skip = functools.partial(self.trained_batches, trainer) if trainer is not None else None
        return Batches(
            self._tensors(split, trainer),
            self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            drop_last=train,
            seed=self.shuffle_seed,
            rank=rank,
            world_size=world,
            # Read when an epoch's iteration starts: 0, except right after resuming from a mid-epoch checkpoint,
            # where Lightning has restored how many batches of this epoch were trained; the same seeded order
            # then continues where the interrupted run stopped.
            skip=skip if train else None,
        )

    def trained_batches(self, trainer: L.Trainer | None) -> int:
        """Batches of this epoch `trainer` has trained: 0, except right after resuming from a mid-epoch
        checkpoint, where Lightning has restored how many steps of this epoch were trained. A step is a group of
        `batches_per_step` batches (every group but an epoch's last is whole, and a checkpoint is written between
        steps)."""
        return 0 if trainer is None else trained_batches_this_epoch(trainer) * self.batches_per_step

    def train_dataloader(self) -> Batches | BatchGroups:
        batches = self.batches("train", True, self.trainer)
        if self.batches_per_step == 1:
            return batches
        trained = functools.partial(self.trained_batches, self.trainer)
        return BatchGroups(batches, self.batches_per_step, self.train_batch_limit, trained, self.train_log_interval)

    def val_dataloader(self) -> Batches:
        return self.batches("val", False, self.trainer)

    def test_dataloader(self) -> Batches:
        return self.batches("test", False, self.trainer)


def _take(arrays: tuple, idx: np.ndarray) -> tuple:
    return tuple(None if a is None else a[idx] for a in arrays)


def check_spec(checkpoint: dict, spec: DataSpec) -> None:
    """Refuse weights trained on data of another shape (vocabulary, classes, features): a resumed run whose data
    changed under the same config (another data_dir, another corpus) would otherwise load them silently."""
    stored = checkpoint.get("rnn_bench", {}).get("spec", {})
    diffs = [
        f"{k}: checkpoint {stored.get(k)!r}, this run's data {getattr(spec, k)!r}"
        for k in spec.SHAPE
        if stored.get(k) != getattr(spec, k)
    ]
    if diffs:
        raise ConfigError(
            "the checkpoint was trained on other data: "
            + "; ".join(diffs)
            + ". Resume with the data it was trained on, or start afresh without ckpt_path"
        )
