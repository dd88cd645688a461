"""Loggers whose files a resumed run continues instead of replacing."""
from __future__ import annotations

import csv
import os

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _KeepingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts (`_check_log_dir_exists`); a run
    dir holds at most one run (src/rundir.py), so an existing file is this run's history before it was resumed:
    keep its rows, and start from its header so that new rows append under the same columns (a new column
    makes Lightning rewrite the file with the old rows under the wider header)."""

    def _check_log_dir_exists(self) -> None:
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])


class CSVLogger(_LightningCSVLogger):
    """lightning.pytorch.loggers.CSVLogger that appends to the run's csv/metrics.csv when the run is resumed."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
        return self._experiment
