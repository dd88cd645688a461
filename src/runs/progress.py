"""The progress bars of progress=tqdm and progress=rich (conf/progress/): Lightning's, without the `v_num` entry,
which holds the loggers' versions (the W&B run id, an empty CSV version) and tells nothing about the run that the
run's first console line does not."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import RichProgressBar as LightningRichProgressBar
from lightning.pytorch.callbacks import TQDMProgressBar as LightningTQDMProgressBar


class TQDMProgressBar(LightningTQDMProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics


class RichProgressBar(LightningRichProgressBar):
    def get_metrics(self, trainer, pl_module) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics
