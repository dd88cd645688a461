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

from src.common.lightning_internals import KeepingCSVLogger as CSVLogger
from src.common.lightning_internals import PhasedTensorBoardLogger as TensorBoardLogger
from src.common.lightning_internals import QuietWandbLogger as WandbLogger

__all__ = ["CSVLogger", "TensorBoardLogger", "WandbLogger", "log_results"]


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
