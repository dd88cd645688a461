"""Loggers whose files a resumed run continues instead of replacing.

CSVLogger: lightning.pytorch.loggers.CSVLogger that appends to the run's csv/metrics.csv when the run is resumed
(a run dir holds at most one run, src/rundir.py, so an existing file is this run's history). It overrides private
parts of Lightning's CSV writer, so it lives with the suite's other such uses in src/updates/lightning_internals.py.
"""

from __future__ import annotations

from src.updates.lightning_internals import KeepingCSVLogger as CSVLogger

__all__ = ["CSVLogger"]
