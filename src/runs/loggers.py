"""The suite's loggers: Lightning's, with what a run of the suite needs on top.

CSVLogger: lightning.pytorch.loggers.CSVLogger that appends to the run's csv/metrics.csv when the run is resumed
(a run dir holds at most one run, src/records/rundir.py, so an existing file is this run's history). It overrides private
parts of Lightning's CSV writer, so it lives with the suite's other such uses in src/common/lightning_internals.py.

TensorBoardLogger: Lightning's, writing fit and test into one event file (see the class).

WandbLogger: Lightning's, without the `anonymous=None` that it always hands wandb.init, which wandb (0.19 on)
answers with a warning on every run although nothing was asked for. Both reach private parts of Lightning, so they
live with the suite's other such uses in src/common/lightning_internals.py.
"""

from __future__ import annotations

from lightning.pytorch.loggers import TensorBoardLogger as _TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from src.common.lightning_internals import KeepingCSVLogger as CSVLogger
from src.common.lightning_internals import QuietWandbLogger as WandbLogger

__all__ = ["CSVLogger", "TensorBoardLogger", "WandbLogger"]


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's, with the event writer kept open from fit to test. Lightning closes it when fit ends and the
    test phase opens a new one; the writer names its file by the second and opens it for writing, so a test that
    started within the same second as fit ended erased the fit's scalars. Flushed instead, as closing does."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.experiment.flush()
        if status == "success":
            self.save()
