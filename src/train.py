"""python -m src.train [overrides]: compose the config, build data + model + trainer (src/runs/build.py), fit, test, and
write <run dir>/metrics.json. Returns the best validation value of the monitored metric (for Optuna-style
sweepers). With seeds=[...], every seed trains at once (src/runs/seeds.py)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.records import identity
from src.runs import commands, console

# torch, Lightning and the modules built on them are imported in the functions that use them, so that `--help`
# and a bad command line answer without loading them (seconds).
from src.runs.build import (
    _floats,
    build,
    check_config,
    moved_setting,
    resume_checkpoint,
    update_choice,
)
from src.runs.learning import ended
from src.runs.recorder import Recorder, result_line
from src.runs.sweeps import completed_record, failed, log_job

log = logging.getLogger(__name__)


def fit_and_test(cfg: DictConfig, checkpoint: Path | None = None, wandb_id: str | None = None) -> dict[str, Any]:
    """Build, fit (resuming from `checkpoint` where given) and test; the run's results. `cfg` is only read. The
    checkpoint tested is this run's own (`own_best`), checked like the one it resumed from."""
    from src.runs.loggers import log_results

    datamodule, model, trainer = build(cfg, wandb_id=wandb_id)
    settings = {**model.run_config, "run": identity.wandb_run(cfg), "params": model.num_params}
    for logger in trainer.loggers:
        logger.log_hyperparams(settings)

    from src.models.sizing import sequence_steps, state_floats

    metrics: dict[str, Any] = {
        "task": model.spec.task,
        "params": model.num_params,
        "state_floats": state_floats(model, sequence_steps(datamodule)),  # per sequence (src/models/sizing.py)
        "width": model.run_config.get("cell", {}).get("hidden_size"),
        "monitor": model.monitor,
        "monitor_mode": model.monitor_mode,
    }
    if cfg.train:
        trainer.fit(model, datamodule=datamodule, ckpt_path=checkpoint, weights_only=True)
        metrics["epochs"] = trainer.current_epoch
        metrics.update(_floats(trainer.callback_metrics))
        metrics.update(ended(trainer, cfg))  # budget, and whether learning had ended (src/runs/learning.py)
    if cfg.test:
        # trainer.checkpoint_callback is the first ModelCheckpoint: model_checkpoint (the best epoch)
        best = own_best(trainer, Path(cfg.paths.output_dir)) if cfg.train else checkpoint
        if cfg.train and best:
            from src.records.checkpoints import check_compatible

            check_compatible(best, model.run_config, resuming=False)
        trainer.test(model, datamodule=datamodule, ckpt_path=best or None, weights_only=True)
        metrics["tested_checkpoint"] = str(best) if best else "final weights"
        metrics.update({k: v for k, v in _floats(trainer.callback_metrics).items() if k.startswith("test/")})
    metrics["train_samples_per_s"] = metrics.pop("perf/train_samples_per_s", None)
    metrics["update"], metrics["update_reason"] = model.update.describe(), model.update.explain(update_choice(cfg))
    metrics["device"] = str(trainer.strategy.root_device)
    log_results(trainer.loggers, settings, metrics, trainer.global_step)
    return metrics


def own_best(trainer: Any, out: Path) -> str:
    """The best checkpoint of this run, to test: Lightning's best_model_path where it lies in the run dir `out`.
    A run resumed in a moved or copied dir gets back the path Lightning stored, the old location, which may hold
    another run's checkpoint by now: never followed; the dir's own file of that name is tested instead (none:
    the final weights, and metrics.json says so)."""
    callback = trainer.checkpoint_callback
    path = getattr(callback, "best_model_path", "") or ""
    if not path or Path(path).resolve().is_relative_to(out.resolve()):
        return path
    own = Path(callback.dirpath) / Path(path).name
    if own.is_file() and own.resolve().is_relative_to(out.resolve()):
        log.warning(f"the best checkpoint Lightning had stored, {path}, is not in this run dir; testing {own}")
        return str(own)
    log.warning(f"the best checkpoint Lightning had stored, {path}, is not in this run dir; testing the final weights")
    return ""


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit and test one configuration in its own run dir (src/records/rundir.py): metrics.json is written whatever
    happens (status ok or failed) once the dir is claimed; a dir that belongs to another run is not touched."""
    recorder = Recorder(cfg)
    record = recorder.record
    try:
        check_config(cfg)
        checkpoint = resume_checkpoint(cfg)
        recorder.claim(resuming=bool(cfg.train and checkpoint))
        log.info(f"run {identity.name(cfg)} on {recorder.fields['dataset']}: {cfg.paths.output_dir}")
        record.update(fit_and_test(cfg, checkpoint, record.get("wandb_id")))
        record["status"] = "ok"
        log.info(f"result: {result_line(record)}")
    except BaseException as e:
        recorder.fail(e)
        raise
    finally:
        recorder.close()
        _finish_wandb()
    return record


def _finish_wandb() -> None:
    # One W&B run per job, also in a multirun, where the process stays alive between jobs.
    wandb = sys.modules.get("wandb")
    run = getattr(wandb, "run", None) if wandb is not None else None
    if run is None:
        return
    wandb.finish()
    from src.runs.loggers import say_where

    say_where(run)


def job(cfg: DictConfig) -> float | None:
    """One job: a single run, or seeds=[...] (a multirun's launcher may instead train several jobs stacked:
    packs_members, src/runs/packing.py)."""
    commands.mark_started()
    console.scratch_home()
    console.capture_warnings()
    console.route_lightning_logs()
    if cfg.get("seeds") is not None:
        from src.runs import seeds

        if seeds.wanted(cfg):  # seeds=[...]: every seed trained at once, stacked; `train` runs one seed alone
            try:
                return seeds.run(cfg, single=train)
            except Exception as e:
                return failed(cfg, e)
    console.hold_run_log()  # released by train() once the run dir is its own
    out = cfg.paths.output_dir
    if (done := completed_record(cfg)) is not None:  # a sweep run again: this job already finished
        print(f"run dir: {out} (skipped: it holds a completed run of this config)")
        log_job(cfg, "skipped")
        return done.get(f"{done['monitor']}_best")
    try:
        record = train(cfg)
    except Exception as e:
        return failed(cfg, e)
    log_job(cfg, "ok")
    print(f"run dir: {out}")
    return record.get(f"{record['monitor']}_best")


# hydra/launcher=packed trains this task's jobs that may stack as one stacked job (src/runs/packing.py), doing for each
# what `job` does for one: skipped, trained, failed, each recorded in the sweep's ledger.
job.packs_members = True
main = hydra.main(version_base="1.3", config_path="conf", config_name="config")(job)


if __name__ == "__main__":
    if (moved := moved_setting(sys.argv[1:])) is not None:
        print(f"error: {moved}", file=sys.stderr)
        sys.exit(2)
    commands.run(main)
