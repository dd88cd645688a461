"""Every use of Lightning's private or undocumented internals, in one place.

The suite reaches past Lightning's public API only where that API has no way to say what it needs; each function
says why. tests/test_lightning_internals.py runs each one against a real Trainer, so a Lightning release that
moves one of these names fails a test named after the function, not a training run. pyproject.toml pins
`lightning` to the minor versions those tests passed on.
"""

from __future__ import annotations

import csv
import os
from typing import Any

import lightning as L
from lightning.fabric.utilities.apply_func import apply_to_collection
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.model_summary.model_summary import _format_summary_table
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import UnsupportedValueType, ValidationError

from src.common import config_yaml


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's Trainer, or None: the public `module.trainer` raises when none is attached (a module used
    outside fit, as the commands that evaluate a checkpoint do)."""
    return module._trainer


def should_update_logs(trainer: L.Trainer) -> bool:
    """Whether the loggers write at this step (every trainer.log_every_n_steps): logging only then saves a
    device-to-host read per step. Lightning has no public switch for this condition."""
    return trainer._logger_connector.should_update_logs


def is_last_batch(trainer: L.Trainer) -> bool:
    """Whether this training step is the epoch's last (what metrics.json reports is that step's loss)."""
    return trainer.fit_loop.epoch_loop.batch_progress.is_last_batch


def trained_batches_this_epoch(trainer: L.Trainer) -> int:
    """Batches of the current epoch already trained: 0, except right after resuming from a mid-epoch checkpoint,
    where the data module continues the same seeded order where the interrupted run stopped."""
    return trainer.fit_loop.epoch_loop.batch_progress.current.completed


def logger_step(trainer: L.Trainer) -> int:
    """The step Lightning hands the loggers for what is logged now (the x-axis of every curve): the batches
    trained before this one, as Lightning counts them."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def count_batches(trainer: L.Trainer, batches: int) -> None:
    """Count `batches` more trained batches in the loggers' step, which Lightning advances once per training
    step: a step that trains a group of K batches (update=grouped) counts the K-1 besides the one Lightning
    counts, so its curves, like those of one batch per step, are indexed by batch. Lightning has no public
    setter; it checkpoints the count with the loop's state, so a resumed run continues it."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += batches


def count_optimizer_step(trainer: L.Trainer) -> None:
    """An update replayed from a CUDA graph steps the optimizer without LightningOptimizer.step: count it as that
    would (trainer.global_step, max_steps, checkpoint names)."""
    progress = trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
    progress.increment_ready()
    progress.increment_completed()


def model_summary_table(
    columns: list[tuple[str, list[str]]],
    total_parameters: int,
    trainable_parameters: int,
    model_size: float,
    training_modes: dict[str, int],
    total_flops: int,
) -> str:
    """Lightning's plain-text model summary (its formatter is private) of the given columns; without the closing
    "Total Flops" line when no FLOPs were counted."""
    table = _format_summary_table(
        total_parameters, trainable_parameters, model_size, training_modes, total_flops, *columns
    )
    return table if total_flops else table.rsplit("\n", 1)[0]


class KeepingCSVWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv when it starts (`_check_log_dir_exists`, private);
    a run dir holds at most one run (src/records/rundir.py), so an existing file is this run's history before it was
    resumed: keep its rows. The columns are the file's header, read before each save: new rows append under it (a
    new column makes Lightning rewrite the file with the old rows under the wider header). Read each time, not
    once: under ddp_spawn every phase writes from a copy of the writer made before the file existed, so a copy's
    own columns miss what fit wrote, and the test phase's rewrite under them failed ("dict contains fields not in
    fieldnames")."""

    def _check_log_dir_exists(self) -> None:
        pass  # Lightning's deletes the file (warning that it will); save reads its columns instead

    def save(self) -> None:
        if self.metrics and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = next(csv.reader(f), [])  # the file's columns, in its order
        super().save()

    def log_hparams(self, params: dict[str, Any]) -> None:
        """Lightning's hparams.yaml, the same text (its save_hparams_to_yaml: config values resolved, then
        OmegaConf.save), emitted by libyaml (src/common/config_yaml.py): Lightning's emitting was the largest
        per-member cost of a stacked job's start. Values OmegaConf cannot hold go Lightning's own way."""
        self.hparams.update(params)
        resolved = apply_to_collection(self.hparams, DictConfig, OmegaConf.to_container, resolve=True)
        try:
            text = config_yaml.to_yaml(resolved)
        except (UnsupportedValueType, ValidationError):
            super().log_hparams({})
            return
        with open(os.path.join(self.log_dir, self.NAME_HPARAMS_FILE), "w", encoding="utf-8") as f:
            f.write(text)


class KeepingCSVLogger(CSVLogger):
    """CSVLogger whose writer is the KeepingCSVWriter (the logger's `_experiment` slot is private)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            os.makedirs(self.root_dir, exist_ok=True)
            self._experiment = KeepingCSVWriter(log_dir=self.log_dir)
        return self._experiment


class QuietWandbLogger(WandbLogger):
    """Lightning's WandbLogger always hands wandb.init `anonymous=None`, which wandb (0.19 on) answers with a
    warning on every run although nothing was asked for; the arguments it passes to wandb.init are private
    (`_wandb_init`)."""

    def __init__(self, *args: Any, anonymous: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, anonymous=anonymous, **kwargs)
        if not anonymous:
            self._wandb_init.pop("anonymous", None)


class PhasedTensorBoardLogger(TensorBoardLogger):
    """Lightning's, closing its event writer when a phase (fit, test) ends and opening the next phase's under
    another file name. Lightning's finalize closes the writer and the next phase reopens one named by the second,
    so a test that starts within the same second as fit ended truncated the fit's file; a flush instead of the
    close leaves the events still queued for the writer's thread unwritten when the process exits. The writer's
    arguments (`_kwargs`) and handle (`_experiment`) are private."""

    @rank_zero_only
    def finalize(self, status: str) -> None:
        super().finalize(status)  # closes the writer: every queued event is on disk
        self._phases = getattr(self, "_phases", 0) + 1
        self._kwargs["filename_suffix"] = f".{self._phases}"
        self._experiment = None  # the next phase's first log opens a new file

    @rank_zero_only
    def log_results(self, params: dict[str, Any], metrics: dict[str, float], step: int) -> None:
        """TensorBoard's HParams tab: the run's settings beside its final metrics, written as a last phase of its
        own (closed at once: nothing of it is left queued when the process exits)."""
        self.log_hyperparams(params, metrics, step=step)
        self.finalize("success")
