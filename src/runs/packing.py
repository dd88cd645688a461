"""A multirun packs itself: jobs whose configs differ only in settings that keep every shape (MEMBER_KEYS: seed,
the optimizer and any of its settings, the LR schedule, clipping, initialisation range) train as one stacked job
(src/runs/seeds.py train_members), each job a member with its own config, Hydra config and run dir, exactly the
dir, record, checkpoints, curves and ledger entry it would have had alone. The launcher is hydra_plugins/rnn_bench/
packed_launcher.py (hydra/launcher=packed, the suite's default); this module is what it runs.

    launch(launcher, job_overrides, initial_job_idx)  every job composed; packs of up to max_members, in the
                                                      sweep's order; a job that does not pack runs alone, as
                                                      Hydra's basic launcher runs it
Within a pack, a member whose dir holds a finished run of its config is skipped (skip_completed) as an unpacked
job is; a pack that turns out not to stack exactly (dropout inside a cell) runs its jobs one after
another, as the single runs they are. The same multirun with ckpt_path=last (which names no dir of its own)
resumes each pack as a whole, every member from its dir's last.ckpt (src/runs/stacked_resume.py); a job with
nothing to resume fails alone, as it would unpacked.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobRuntime, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from src.runs import console
from src.runs.ranges import override_key
from src.runs.sweeps import NOT_HASHED

log = logging.getLogger(__name__)

# What the members of one stacked job may differ in: each member builds its own model, optimizer, LR schedule and
# update from its own config, so these stay exact (tests/test_stacked.py, tests/test_packed_multirun.py); a node
# (optimizer, scheduler) in anything, its class included (optimizer=adam,sgd); every other setting must be equal.
# NOT_HASHED (outputs, progress bar, tags, skip_completed) never changes what a job computes.
MEMBER_KEYS = (
    "seed",
    "optimizer",
    "scheduler",
    "task.scheduler_interval",
    "update.gradient_clip_val",
    "update.gradient_clip_algorithm",
    "task.init_range",
)


def is_member_key(key: str) -> bool:
    """Whether a setting (`optimizer.momentum`, `scheduler`, `seed`) is one that members of a pack may differ in."""
    return any(key == k or key.startswith(f"{k}.") for k in MEMBER_KEYS)


def unpackable(cfg: DictConfig) -> str | None:
    """Why this job trains alone, seen in its config; None: it may pack."""
    from src.runs.seeds import not_stackable

    if cfg.get("seeds") is not None:
        return "seeds=[...]: a stacked job of its own"
    if not cfg.get("train", True):
        return "evaluating a checkpoint"
    if cfg.get("ckpt_path") not in (None, "last"):  # ckpt_path=last: the pack resumes as a whole
        return "starting from a checkpoint file"
    if cfg.trainer.get("fast_dev_run") or cfg.trainer.get("overfit_batches"):
        return "trainer.fast_dev_run / overfit_batches"
    return not_stackable(cfg)


def pack_key(cfg: DictConfig) -> str:
    """Equal for two jobs exactly when their configs are equal but for MEMBER_KEYS and NOT_HASHED: the text of
    the config as composed (unresolved, as config_hash reads it) with those keys blanked."""
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NOT_HASHED])
    with open_dict(kept):
        for key in MEMBER_KEYS:
            if OmegaConf.select(kept, key, default=None, throw_on_missing=False) is not None:
                OmegaConf.update(kept, key, None, force_add=True)
    return json.dumps(OmegaConf.to_container(kept, resolve=False), sort_keys=True, default=str)


class Job:
    """One job of the multirun: its config as run_job hands it to the task (`cfg`), the whole config with its
    Hydra node (`config`), its run dir and its Hydra config as HydraConfig holds it while it runs (`hydra`)."""

    def __init__(self, config: DictConfig, idx: int) -> None:
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        HydraConfig.instance().set_config(config)  # the dir's name reads the job's own Hydra config
        sweep = str(OmegaConf.select(config, "hydra.sweep.dir"))
        self.dir = Path(os.path.abspath(os.path.join(sweep, str(OmegaConf.select(config, "hydra.sweep.subdir")))))
        with read_write(config.hydra.runtime), open_dict(config.hydra.runtime):
            config.hydra.runtime.output_dir = str(self.dir)
        HydraConfig.instance().set_config(config)
        self.idx, self.config, self.hydra = idx, config, HydraConfig.instance().cfg
        self.cfg = copy.deepcopy(config)
        with read_write(self.cfg), open_dict(self.cfg):
            del self.cfg["hydra"]
        self.key: str | None = None
        self.why_alone: str | None = None
        try:
            self.why_alone = unpackable(self.cfg)
            if self.why_alone is None:
                self.key = pack_key(self.cfg)
        except Exception as e:  # a value the job itself will refuse, with its own error, when it runs alone
            self.why_alone = f"{type(e).__name__}: {e}"

    def returned(self, value: Any) -> JobReturn:
        """What run_job would return for this job, its task having returned `value`."""
        ret = JobReturn()
        ret.cfg, ret.hydra_cfg = self.cfg, copy.deepcopy(self.hydra)
        ret.overrides = list(self.config.hydra.overrides.task)
        ret.working_dir = os.getcwd()
        ret.task_name = JobRuntime.instance().get("name")
        ret.status, ret.return_value = JobStatus.COMPLETED, value
        return ret


def packs(jobs: list[Job], max_members: int) -> list[list[Job]]:
    """The jobs in packs, in the order of their first job: jobs of one key together, up to max_members each (and
    never two of one dir: `seed=1,1` runs the second after the first, which it then finds done); a job that does
    not pack is a pack of one."""
    found: list[list[Job]] = []
    open_pack: dict[str, list[Job]] = {}
    for job in jobs:
        pack = open_pack.get(job.key) if job.key is not None else None
        if pack is None or len(pack) >= max_members or any(j.dir == job.dir for j in pack):
            pack = [job]
            found.append(pack)
            if job.key is not None:
                open_pack[job.key] = pack
        else:
            pack.append(job)
    return found


def launch(launcher: Any, job_overrides: list[list[str]], initial_job_idx: int) -> list[JobReturn]:
    """The launcher's launch: every job composed (load_sweep_config, as Hydra's basic launcher does), then run pack
    by pack; one JobReturn per job, in the sweep's order."""
    setup_globals()
    config, context = launcher.config, launcher.hydra_context
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    log.info(f"Launching {len(job_overrides)} jobs locally")
    before = HydraConfig.instance().cfg
    try:
        jobs = [
            Job(context.config_loader.load_sweep_config(config, list(overrides)), initial_job_idx + i)
            for i, overrides in enumerate(job_overrides)
        ]
    finally:
        HydraConfig.instance().cfg = before
    packing = launcher.pack and getattr(launcher.task_function, "packs_members", False)
    returns: dict[int, JobReturn] = {}
    for pack in packs(jobs, max(1, int(launcher.max_members))) if packing else [[j] for j in jobs]:
        for job in pack:
            log.info(f"\t#{job.idx} : {' '.join(filter_overrides(job.config.hydra.overrides.task))}")
        if len(pack) == 1:
            returns[pack[0].idx] = alone(launcher, pack[0])
        else:
            try:
                returns.update(run_pack(launcher, pack))
            finally:
                HydraConfig.instance().cfg = before  # as run_job leaves it
        configure_log(config.hydra.hydra_logging, config.hydra.verbose)  # closes the pack's log files too
    return [returns[job.idx] for job in jobs]


def alone(launcher: Any, job: Job) -> JobReturn:
    """The job run by itself, as Hydra's basic launcher runs a job."""
    return run_job(
        hydra_context=launcher.hydra_context,
        task_function=launcher.task_function,
        config=job.config,
        job_dir_key="hydra.sweep.dir",
        job_subdir_key="hydra.sweep.subdir",
    )


def run_pack(launcher: Any, pack: list[Job]) -> dict[int, JobReturn]:
    """The pack's jobs: those already done skipped, the others trained as one stacked job (alone if one is left;
    one after another if they turn out not to stack)."""
    from src.records.rundir import check_claimable
    from src.runs import commands
    from src.runs.build import check_config, resume_checkpoint
    from src.runs.seeds import Member, job_hydra, train_members
    from src.runs.sweeps import completed_record, config_hash, log_job
    from src.updates.stacked import NotStackable

    callbacks = launcher.hydra_context.callbacks
    returns: dict[int, JobReturn] = {}
    todo = []
    for job in pack:
        with job_hydra(job.hydra):
            if (done := completed_record(job.cfg)) is not None:  # as src.train's main skips a finished job
                print(f"run dir: {job.dir} (skipped: it holds a completed run of this config)")
                callbacks.on_job_start(config=job.config, task_function=launcher.task_function)
                log_job(job.cfg, "skipped")
                returns[job.idx] = job.returned(done.get(f"{done['monitor']}_best"))
                callbacks.on_job_end(config=job.config, job_return=returns[job.idx])
            else:
                todo.append(job)
    refused = []  # a job its checks refuse fails alone, recorded as an unpacked job records it
    for job in todo:
        with job_hydra(job.hydra):
            try:
                check_config(job.cfg)
                checkpoint = resume_checkpoint(job.cfg)  # ckpt_path=last: its dir's last.ckpt is there and its own
                # its dir its own (not another config's run): else the pack's claims would fail every member
                check_claimable(job.dir, config_hash(job.cfg), resuming=bool(job.cfg.train and checkpoint))
            except Exception:
                refused.append(job)
    returns |= {job.idx: alone(launcher, job) for job in refused}
    todo = [job for job in todo if job not in refused]
    if len(todo) < 2:
        return returns | {job.idx: alone(launcher, job) for job in todo}
    first = todo[0]
    HydraConfig.instance().cfg = first.hydra  # the pack's own settings (its Trainer, its log) are its first job's
    configure_log(first.config.hydra.job_logging, first.config.hydra.verbose)
    # each member's dir gets the pack's log but the other members' own lines, as an unpacked job's holds its own
    # (the first's: job logging's file)
    console.hold_member_logs([job.dir for job in todo[1:]])
    commands.mark_started()
    console.scratch_home()
    console.capture_warnings()
    console.route_lightning_logs()
    console.hold_run_log()  # released once the members' dirs are claimed (src/runs/recorder.py)
    console.keep_to_own_lines(first.dir)  # the pack's log is its first member's
    for job in todo:
        callbacks.on_job_start(config=job.config, task_function=launcher.task_function)
    members = [Member(job.cfg, name, hydra=job.hydra, dir=job.dir) for job, name in zip(todo, member_names(todo))]
    stack = copy.deepcopy(first.cfg)
    with open_dict(stack):
        stack.logger = None  # each member logs to its own loggers, in its own dir
    log.info(
        f"packed: {len(todo)} jobs of this multirun train as one stacked job (#{', #'.join(str(j.idx) for j in todo)})"
    )
    try:
        records = train_members(
            stack,
            members,
            {"pack": [m.name for m in members], "dir": str(first.dir.parent)},
            "multirun packed: members stacked",
        )
    except NotStackable as e:
        log.warning(f"not packed ({e}); its {len(todo)} jobs run one after another")
        return returns | {job.idx: alone(launcher, job) for job in todo}
    except Exception as e:  # the stacked job failed as a whole: every member failed, as its own job would have
        from src.runs.sweeps import failed

        for job in todo:
            with job_hydra(job.hydra):
                returns[job.idx] = job.returned(failed(job.cfg, e))
                callbacks.on_job_end(config=job.config, job_return=returns[job.idx])
        return returns
    from src.runs.recorder import result_line

    for job, member, record in zip(todo, members, records):
        with job_hydra(job.hydra), console.lines_of_member(job.dir):
            if record["status"] == "ok":  # named by what sets it apart in the pack; its dir's line follows
                log.info(f"result of {member.name}: {result_line(record)}")
                log_job(job.cfg, "ok")
                print(f"run dir: {job.dir}")
                value = record.get(f"{record['monitor']}_best")
            else:
                log_job(job.cfg, "failed", record.get("error"))
                log.error(f"job failed: {record.get('error')} (run dir {job.dir})")
                value = float("-inf") if record.get("monitor_mode") == "max" else float("inf")
            returns[job.idx] = job.returned(value)
            callbacks.on_job_end(config=job.config, job_return=returns[job.idx])
    log_spreads(todo, records)
    return returns


def log_spreads(jobs: list[Job], records: list[dict[str, Any]]) -> None:
    """Per setting of the pack (its members' own overrides but the seed) run with several seeds, the mean ± std of
    their results: a learning-rate x seed pack's verdict per learning rate."""
    from src.runs.recorder import spread_line

    settings: dict[str, list[dict[str, Any]]] = {}
    for job, record in zip(jobs, records):
        if record["status"] == "ok":
            own = [o for o in own_overrides(job) if override_key(o) != "seed"]
            settings.setdefault(",".join(own), []).append(record)
    for setting, group in settings.items():
        if len(group) > 1:
            log.info(f"{setting or 'the same setting'} over {len(group)} seeds: {spread_line(group)}")


def own_overrides(job: Job) -> list[str]:
    """The job's overrides of the settings members of one pack may differ in (MEMBER_KEYS)."""
    return [o for o in job.config.hydra.overrides.task if is_member_key(override_key(o))]


def member_names(jobs: list[Job]) -> list[str]:
    """Each member's name in the stacked job's logged values: its own MEMBER_KEYS overrides (optimizer.lr=0.01,
    seed=1), or its dir's name where those do not tell the members apart."""
    names = []
    for job in jobs:
        names.append(",".join(own_overrides(job)))
    if len(set(names)) < len(names) or not all(names):
        return [job.dir.name for job in jobs]
    return names
