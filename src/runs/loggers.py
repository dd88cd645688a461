"""The suite's loggers: Lightning's, with what a run of the suite needs on top.

CSVLogger: lightning.pytorch.loggers.CSVLogger that appends to the run's csv/metrics.csv when the run is resumed
(a run dir holds at most one run, src/records/rundir.py, so an existing file is this run's history). It overrides private
parts of Lightning's CSV writer, so it lives with the suite's other such uses in src/common/lightning_internals.py.

TensorBoardLogger: Lightning's, with each phase (fit, test) in an event file of its own, all of it on disk when the
phase ends (see the class in src/common/lightning_internals.py), and at the end of the run the HParams data: the
run's settings and its final metrics (log_results), so that TensorBoard's HParams tab compares the runs of a sweep.

WandbLogger: Lightning's, without the `anonymous=None` that it always hands wandb.init, which wandb (0.19 on)
answers with a warning on every run although nothing was asked for. All three reach private parts of Lightning, so they
live with the suite's other such uses in src/common/lightning_internals.py.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from src.common.lightning_internals import KeepingCSVLogger as CSVLogger
from src.common.lightning_internals import PhasedTensorBoardLogger as TensorBoardLogger
from src.common.lightning_internals import QuietWandbLogger as WandbLogger

__all__ = ["CSVLogger", "MemberLoggers", "TensorBoardLogger", "WandbLogger", "log_results"]


class MemberLoggers(Logger):
    """A stacked job's members' own loggers (each the CSV or TensorBoard logger its single run has, in its run dir),
    as one logger of the job's Trainer: each member gets the metrics logged under its prefix (`<name>/`), without
    it, and the job's own (epoch, throughput; its own values win), so its curves are a single run's."""

    def __init__(self, names: list[str], loggers: list[list[Logger]]) -> None:
        super().__init__()
        self.prefixes, self.loggers = [f"{n}/" for n in names], loggers

    @property
    def name(self) -> str:
        return "members"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        shared = {k: v for k, v in metrics.items() if not any(k.startswith(p) for p in self.prefixes)}
        for prefix, loggers in zip(self.prefixes, self.loggers):
            own = {k[len(prefix) :]: v for k, v in metrics.items() if k.startswith(prefix)}
            if own:
                for logger in loggers:
                    logger.log_metrics({**shared, **own}, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # each member's own: src/runs/seeds.py logs its config to its loggers

    def save(self) -> None:
        for loggers in self.loggers:
            for logger in loggers:
                logger.save()

    def finalize(self, status: str) -> None:
        for loggers in self.loggers:
            for logger in loggers:
                logger.finalize(status)


def log_results(loggers: Sequence[Any], params: dict[str, Any], record: dict[str, Any], step: int) -> None:
    """Hand the run's final metrics (the best monitored value, the test metrics) with its settings to the loggers
    that show them side by side (TensorBoard's HParams tab); the others already have both."""
    metrics = {
        k: v
        for k, v in record.items()
        if isinstance(v, float) and math.isfinite(v) and (k.startswith("test/") or k.endswith("_best"))
    }
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and metrics:
            logger.log_results(params, metrics, step)
