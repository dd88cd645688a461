"""The suite's loggers: Lightning's, with what a run of the suite needs on top.

CSVLogger: lightning.pytorch.loggers.CSVLogger that appends to the run's csv/metrics.csv when the run is resumed
(a run dir holds at most one run, src/records/rundir.py, so an existing file is this run's history). It overrides private
parts of Lightning's CSV writer, so it lives with the suite's other such uses in src/common/lightning_internals.py.

TensorBoardLogger: Lightning's, with each phase (fit, test) in an event file of its own, all of it on disk when the
phase ends (see the class in src/common/lightning_internals.py).

WandbLogger: Lightning's, without the `anonymous=None` that it always hands wandb.init, which wandb (0.19 on)
answers with a warning on every run although nothing was asked for. All three reach private parts of Lightning, so they
live with the suite's other such uses in src/common/lightning_internals.py.
"""

from __future__ import annotations

from src.common.lightning_internals import KeepingCSVLogger as CSVLogger
from src.common.lightning_internals import PhasedTensorBoardLogger as TensorBoardLogger
from src.common.lightning_internals import QuietWandbLogger as WandbLogger

__all__ = ["CSVLogger", "TensorBoardLogger", "WandbLogger"]
