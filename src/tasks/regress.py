"""Regression: real-valued targets, mean squared error.

Two shapes (conf/task/regress.yaml, regress_last.yaml): aligned many-to-many (a target vector at every step,
y [B, T, D]: sin -> cos) and many-to-one (one target vector per sequence, y [B, D]: the next value of a series,
the adding problem). A data set with `rollout_steps` > 0 (its spec's `rollout`) is also tested by an
autoregressive rollout: the model's own predictions fed back in as inputs for that many steps (`test/rollout_mse`,
and a plot in the run dir).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric

from src.data.tensors import Batch
from src.models.stack import last_step
from src.tasks.base import RecurrentTask
from src.tasks.streams import StreamEval


class Regressor(StreamEval, RecurrentTask):
    kind = "regress"

    def __init__(self, many_to_one: bool = False, monitor: str = "val/loss", monitor_mode: str = "min", **kwargs):
        super().__init__(monitor=monitor, monitor_mode=monitor_mode, **kwargs)
        self.rolled_out: np.ndarray | None = None  # the test pass's rollout (test/rollout_mse), for its plot
        self.many_to_one = many_to_one
        self.regressor = nn.Linear(self.stack.output_size, self.spec.num_classes)
        for split in ("val", "test"):
            setattr(self, f"{split}_mse", MeanMetric())
            setattr(self, f"{split}_mae", MeanMetric())

    def head(self, outputs: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        if self.many_to_one:
            return self.regressor(last_step(outputs, lengths, self.stack.bidirectional))
        return self.regressor(outputs)

    def loss(self, predictions: torch.Tensor, batch: Batch, t0: int, t1: int):
        if self.many_to_one:
            if t1 < batch.x.shape[1]:
                return None  # the one target comes after the last step
            return F.mse_loss(predictions, batch.y), len(batch.y)
        targets = batch.y[:, t0:t1]
        return F.mse_loss(predictions, targets), targets.shape[0] * targets.shape[1]

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        predictions = self.head(self.eval_outputs(batch, batch_idx), batch.lengths)
        targets = batch.y
        getattr(self, f"{split}_mse").update(F.mse_loss(predictions, targets), weight=targets.numel())
        getattr(self, f"{split}_mae").update(F.l1_loss(predictions, targets), weight=targets.numel())

    def eval_values(self, split: str) -> dict[str, torch.Tensor]:
        values = self.computed(split, ("mse", "mae"))
        values[f"{split}/loss"] = values[f"{split}/mse"]
        return values

    def epoch_values(self, split: str, sanity_checking: bool = False) -> dict:
        values = super().epoch_values(split, sanity_checking)
        if split != "test":
            return values
        if self.spec.rollout is not None:
            context, truth = self.spec.rollout
            self.rolled_out = self.rollout(torch.as_tensor(context), len(truth))
            values["test/rollout_mse"] = float(np.mean((self.rolled_out - truth) ** 2))
        return values

    def write_files(self, stage: str, out: Path, loggers: list) -> None:
        if stage == "test" and self.rolled_out is not None:  # the plot of the rollout the test pass ran
            context, truth = self.spec.rollout
            plot_rollout(out / "rollout.png", context, truth, self.rolled_out, loggers)

    @torch.no_grad()
    def rollout(self, context: torch.Tensor, steps: int) -> np.ndarray:
        """Predict `steps` values of a univariate series, each from the last `window` values, the model's own
        predictions fed back in as they come (the window the model was trained on slides over them)."""
        self.eval()
        window = context.to(self.device, torch.float32).reshape(1, -1, 1)
        predicted = []
        for _ in range(steps):
            outputs, _ = self.encode(window)
            value = self.head(outputs, None).reshape(1, 1, 1)
            predicted.append(float(value))
            window = torch.cat([window[:, 1:], value], dim=1)
        return np.array(predicted, dtype=np.float32).reshape(-1, 1)


def plot_rollout(path: Path, context: np.ndarray, truth: np.ndarray, predicted: np.ndarray, loggers=()) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    from src.common.files import atomic_write

    n = len(context)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(range(n), context[:, 0], color="0.4", label="input window")
    ax.plot(range(n, n + len(truth)), truth[:, 0], color="tab:blue", label="truth")
    ax.plot(range(n, n + len(predicted)), predicted[:, 0], "--", color="tab:red", label="rollout (own predictions)")
    mse = float(np.mean((predicted - truth) ** 2))
    ax.set_title(f"{len(truth)}-step autoregressive rollout, MSE {mse:.2g}")
    ax.set_xlabel("step")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
    for logger in loggers:
        if hasattr(logger, "log_image"):  # W&B
            logger.log_image(key="test/rollout", images=[str(path)])
