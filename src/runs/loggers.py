"""The suite's loggers: Lightning's, with what a run of the suite needs on top.

CSVLogger: lightning.pytorch.loggers.CSVLogger that appends to the run's csv/metrics.csv when the run is resumed
(a run dir holds at most one run, src/records/rundir.py, so an existing file is this run's history). It overrides private
parts of Lightning's CSV writer, so it lives with the suite's other such uses in src/common/lightning_internals.py.

TensorBoardLogger: Lightning's, with each phase (fit, test) in an event file of its own, all of it on disk when the
phase ends (see the class in src/common/lightning_internals.py), and at the end of the run the HParams data: the
run's settings and its final metrics (log_results), so that TensorBoard's HParams tab compares the runs of a sweep.

WandbLogger: Lightning's, without the `anonymous=None` that it always hands wandb.init, which wandb (0.19 on)
answers with a warning on every run although nothing was asked for. Built with reinit="create_new" (a stacked job's
members), each logger has a W&B run of its own beside the others in the process. All three reach private parts of
Lightning, so they live with the suite's other such uses in src/common/lightning_internals.py.

MemberLoggers: a stacked job's members' loggers (src/runs/seeds.py), each member's those of its single run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from src.common.lightning_internals import KeepingCSVLogger as CSVLogger
from src.common.lightning_internals import PhasedTensorBoardLogger as TensorBoardLogger
from src.common.lightning_internals import QuietWandbLogger as WandbLogger
from src.runs import console

__all__ = ["CSVLogger", "MemberLoggers", "TensorBoardLogger", "WandbLogger", "each_logger", "log_results"]

log = logging.getLogger(__name__)


class MemberLoggers(Logger):
    """A stacked job's members' own loggers (each the CSV, TensorBoard and W&B logger its single run has, in its
    run dir), as one logger of the job's Trainer: each member gets the metrics logged under its prefix (`<name>/`),
    without it, and the job's own (epoch, throughput; its own values win), so its curves are a single run's.

    The CSV and TensorBoard loggers come with the job (src/runs/seeds.py build_stacked); each member's W&B run once
    its run dir is claimed and its W&B id known (start), and it is finished when the member ends (finish)."""

    def __init__(self, names: list[str], loggers: list[list[Logger]]) -> None:
        super().__init__()
        self.prefixes, self.loggers = [f"{n}/" for n in names], loggers
        self.settings: list[dict[str, Any]] = [{} for _ in names]  # each member's, as logged by start()

    @property
    def name(self) -> str:
        return "members"

    @property
    def version(self) -> int:
        return 0

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        shared, owns = split_by_member(metrics, self.prefixes)
        # The job's values alone (its throughput at the end of an epoch of a task with no training metric of its
        # own) are every member's; otherwise only the members that logged here get them.
        everyone = not any(owns)
        for own, loggers in zip(owns, self.loggers):
            if own or everyone:
                for logger in loggers:
                    logger.log_metrics({**shared, **own}, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # each member's own: start() logs its settings to its loggers

    def save(self) -> None:
        for loggers in self.loggers:
            for logger in loggers:
                logger.save()

    def finalize(self, status: str) -> None:
        for loggers in self.loggers:
            for logger in loggers:
                logger.finalize(status)

    def start(self, s: int, member: Any, overrides: list[str] | None, wandb_id: str | None, task: Any) -> None:
        """Member s's W&B run, as its single run has it: its name, group, tags and job type from the member's config
        and `overrides` (those of its single run; None: the job's, as HydraConfig holds them), the id its
        metrics.json names (`wandb_id`; a resumed member continues its run); then its settings logged to all its
        loggers, as src.train logs a single run's (its task's config, `run`: what identifies it, `params`)."""
        from src.records import identity
        from src.runs.build import build_loggers

        loggers = self.loggers[s]
        with identity.as_run(overrides):  # the W&B logger's ${run_name:} and ${run_tags:} resolve for the member
            loggers += build_loggers(member, wandb_id, only_wandb=True, reinit="create_new")
            settings = {**task.run_config, "run": identity.wandb_run(member), "params": task.num_params}
        for logger in loggers:
            logger.log_hyperparams(settings)
        self.settings[s] = settings

    def finish(self, records: list[dict[str, Any]], step: int) -> None:
        """The members' end: each one's final metrics with its settings (TensorBoard's HParams, as log_results for a
        single run) and its W&B run finished, with where it is and how to upload it said."""
        for loggers, record, settings in zip(self.loggers, records, self.settings):
            if settings and record.get("status") == "ok":  # started, and ended as a single run logs its results
                log_results(loggers, settings, record, step)
        for logger in self.loggers_flat():
            if isinstance(logger, WandbLogger):  # started by start(), which logged the member's settings there
                run = logger.experiment
                run.finish()
                with console.lines_of_member(logger.save_dir):  # its own log's line, not every member's
                    say_where(run, f"W&B run {run.name}")

    def loggers_flat(self) -> list[Logger]:
        return [logger for loggers in self.loggers for logger in loggers]


def split_by_member(metrics: dict[str, Any], prefixes: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The values no member's prefix (`seed=3/`) begins, and each member's own without its prefix, in one pass
    over the values (a thousand members log a thousand times their values: a pass per member would be their
    square)."""
    index = {p: i for i, p in enumerate(prefixes)}
    shared: dict[str, Any] = {}
    owns: list[dict[str, Any]] = [{} for _ in prefixes]
    for key, value in metrics.items():
        cut = key.find("/")
        while cut != -1 and key[: cut + 1] not in index:  # (a member's name may hold a '/' of its own)
            cut = key.find("/", cut + 1)
        if cut == -1:
            shared[key] = value
        else:
            owns[index[key[: cut + 1]]][key[cut + 1 :]] = value
    return shared, owns


def say_where(run: Any, what: str = "W&B run") -> None:
    """Where a finished W&B run is, said once (wandb itself is silent: conf/logger/wandb.yaml): its offline
    folder and how to upload it, or its URL."""
    if run.offline:
        where = Path(run.dir).parent
        log.info(f"{what} (offline): {where}; to upload it: wandb sync {where}")
    else:
        log.info(f"{what}: {run.url}")


def each_logger(loggers: Sequence[Logger]) -> Iterator[Logger]:
    """The Trainer's loggers, a stacked job's members' own among them (MemberLoggers)."""
    for logger in loggers:
        if isinstance(logger, MemberLoggers):
            yield from logger.loggers_flat()
        else:
            yield logger


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
