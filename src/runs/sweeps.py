"""What sweeps need beyond Hydra's multirun: skipping jobs already done, a summary at the end, W&B sweep files.

python -m src.runs.sweeps wandb [names...]      writes sweeps/wandb_<name>.yaml from conf/sweep/<name>.yaml
python -m src.runs.sweeps sbatch [overrides...]  prints the sbatch script that `python -m src.train -m <overrides>`
                                            would submit with hydra/launcher=slurm; submits nothing
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import socket
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from src.common.errors import ConfigError, described, user_error
from src.common.files import atomic_write_text, probe_writable
from src.common.paths import CONF_DIR
from src.records import rundir
from src.records.identity import in_multirun
from src.runs import commands

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
SWEEP_CONFIGS = CONF_DIR / "sweep"
WANDB_DIR = ROOT / "sweeps"
# Where outputs go, the switch itself, the progress bar and the tags do not change what a job computes; nor does
# the plateau rule, which only reads the finished run's validation values (its metrics.json names the rule used).
NOT_HASHED = ("hydra", "paths", "skip_completed", "progress", "tags", "plateau")
# Groups hashed only where a value is set: unset, the job computes what it did before the group existed.
HASHED_WHEN_SET = ("budget",)


def config_hash(cfg: DictConfig) -> str:
    """A fingerprint of the job's config as composed, before interpolation: paths stay `${paths...}`, so the same
    job hashes the same in any output dir, while any value that differs (an override, an edited config file)
    changes it. Code changes do not: re-run those with skip_completed=false or a new sweep dir. Nor does
    ckpt_path=last: a run resumed from its own last checkpoint is the run it continues (another ckpt_path is a
    new run, started from that file)."""
    unset = [k for k in HASHED_WHEN_SET if all(v is None for v in (cfg.get(k) or {}).values())]
    composed = OmegaConf.to_container(cfg, resolve=False)  # plain data: no masked copy of the config first
    kept = {k: v for k, v in composed.items() if k not in NOT_HASHED and k not in unset}
    if kept.get("ckpt_path") == "last":  # a run resumed from its own last checkpoint hashes as the run it continues
        kept["ckpt_path"] = None
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def completed_record(cfg: DictConfig) -> dict[str, Any] | None:
    """In a multirun, the metrics.json already in this job's dir if it records a finished run (status ok) of the
    same config; None otherwise (no record, a failure, another config, or skip_completed=false)."""
    if not cfg.get("skip_completed", True) or not in_multirun():
        return None
    path = Path(cfg.paths.output_dir) / "metrics.json"
    if path.is_symlink():  # another dir's record, not this job's: the job runs, and its claim refuses the link
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") == "ok" and record.get("config_hash") == config_hash(cfg):
        return record
    return None


def _device_count(trainer: DictConfig) -> int | None:
    """How many devices trainer.devices asks for; None for "all visible" (-1, auto), which only the job knows."""
    devices = trainer.get("devices", 1)
    if OmegaConf.is_list(devices) or isinstance(devices, list):
        return len(devices)
    if devices in (-1, "-1", "auto"):
        return 1 if trainer.get("accelerator") == "cpu" and devices == "auto" else None
    try:
        return int(devices)
    except (TypeError, ValueError):  # "0,1": a list of GPU ids as text
        return len([d for d in str(devices).split(",") if d.strip()])


def _several_processes(trainer: DictConfig) -> bool:
    """True if the Trainer would run DDP with processes started by re-running the command line (not ddp_spawn)."""
    strategy = str(trainer.get("strategy") or "auto")
    count = _device_count(trainer)
    several = count is None and trainer.get("accelerator") != "cpu" or count is not None and count > 1
    return "spawn" not in strategy and (strategy.startswith("ddp") or (strategy == "auto" and several))


SLURM_LAUNCHER = "SlurmLauncher"  # hydra_submitit_launcher's, behind hydra/launcher=slurm and slurm_ddp


def slurm_ddp_problem(trainer: DictConfig, launcher: Any, env: Any) -> str | None:
    """Why a DDP job of a sweep on the SLURM launcher cannot work, or None if it can. There each job is its own
    allocation and srun starts one task per GPU (hydra.launcher.tasks_per_node); Lightning's SLURMEnvironment
    takes each process's rank from SLURM_PROCID and starts nothing itself, so the command line is not re-run.
    `env` is the job's environment (os.environ), as SLURM set it for the task."""
    tasks, nodes = int(launcher.get("tasks_per_node") or 1), int(launcher.get("nodes") or 1)
    gpus = launcher.get("gpus_per_node")
    devices = _device_count(trainer)
    want = devices if devices is not None else gpus
    recipe = (
        "a job with N GPUs needs hydra.launcher.gpus_per_node=N hydra.launcher.tasks_per_node=N "
        "(hydra/launcher=slurm_ddp sets both from gpus_per_node; docs/scale-out.md)"
    )
    if tasks < 2:
        return (
            f"trainer.strategy={trainer.get('strategy')} with trainer.devices={trainer.get('devices')} on "
            f"SLURM runs one process per GPU, each a SLURM task, but hydra.launcher.tasks_per_node={tasks}: "
            f"{recipe}"
        )
    if want is not None and int(want) != tasks:
        return (
            f"trainer.devices={trainer.get('devices')} (gpus_per_node={gpus}) but hydra.launcher."
            f"tasks_per_node={tasks}: one task per device is needed; {recipe}"
        )
    if gpus is not None and trainer.get("accelerator") not in ("cpu",) and int(gpus) < tasks:
        return f"hydra.launcher.tasks_per_node={tasks} tasks but gpus_per_node={gpus} GPUs: {recipe}"
    if int(trainer.get("num_nodes") or 1) != nodes:
        return (
            f"trainer.num_nodes={trainer.get('num_nodes') or 1} but hydra.launcher.nodes={nodes}: set both "
            f"to the same number"
        )
    if env is not None:  # in the job itself: it must be one of the tasks srun started
        if "SLURM_NTASKS" not in env or env.get("SLURM_JOB_NAME") in ("bash", "interactive"):
            return (
                "this job was not started by srun as a SLURM task (no SLURM_NTASKS, or an interactive job "
                "name), so Lightning would start DDP's processes by re-running the command line"
            )
        per_node = env.get("SLURM_NTASKS_PER_NODE")
        if per_node is not None and per_node.split("(")[0] != str(tasks):
            return (
                f"SLURM started {per_node} tasks per node but hydra.launcher.tasks_per_node={tasks}; "
                f"trainer.devices must match the tasks per node"
            )
    return None


def check_one_process_per_job(cfg: DictConfig, env: Any = None) -> None:
    """Lightning's DDP starts its other processes by running the same command line again: inside a multirun that
    is the whole sweep again, in every process. So a sweep runs one device per job, except where each job is an
    allocation of its own whose processes SLURM starts (hydra/launcher=slurm with tasks_per_node = GPUs:
    slurm_ddp_problem). ddp_spawn, which starts its processes without the command line, is fine anywhere; so is
    DDP in a single run. `env`: the job's environment (default os.environ)."""
    if not in_multirun():
        return
    trainer = cfg.trainer
    if not _several_processes(trainer):
        return
    strategy, devices = str(trainer.get("strategy") or "auto"), trainer.get("devices", 1)
    launcher = HydraConfig.get().launcher
    if str(launcher.get("_target_", "")).endswith(SLURM_LAUNCHER):
        problem = slurm_ddp_problem(trainer, launcher, os.environ if env is None else env)
        if problem is not None:
            raise ConfigError(problem)
        return
    raise ConfigError(
        f"trainer.strategy={strategy} with trainer.devices={devices} in a multirun: DDP would "
        "start the whole sweep again in every process. Sweep with one GPU per job "
        "(trainer=gpu, or trainer=gpu_pool hydra/launcher=gpu_pool), or on SLURM give each job "
        "its GPUs as tasks (hydra/launcher=slurm_ddp, docs/scale-out.md); use trainer=ddp for a "
        "single run"
    )


# In the sweep dir: one small file per job outcome (ok, failed, skipped), each written whole by the job that it
# is about (write, then rename). Not one appended file: on NFS and other shared file systems of a cluster,
# appends from several nodes at once can overwrite each other.
LEDGER = ".jobs"


def log_job(cfg: DictConfig, status: str, error: str | None = None) -> None:
    """In a multirun, record this job's outcome in the sweep's ledger, which SweepSummary reads. The ledger, not
    the run dirs, is what counts: a job refused before it could write its own record (its dir belongs to another
    run) is counted too, and so is every job of a parallel or remote launcher (other processes, other nodes).
    Of a DDP job's processes only rank 0 writes."""
    if not in_multirun():
        return
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) != 0:
        return
    entry = {
        "dir": str(cfg.paths.output_dir),
        "status": status,
        "error": error,
        "at": time.time(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    name = f"{time.time_ns()}-{entry['host']}-{os.getpid()}-{secrets.token_hex(4)}.json"
    atomic_write_text(Path(HydraConfig.get().sweep.dir) / LEDGER / name, json.dumps(entry))


def ledger_names(sweep_dir: Path) -> set[str]:
    folder = Path(sweep_dir) / LEDGER
    return {p.name for p in folder.glob("*.json")} if folder.is_dir() else set()


def read_ledger(sweep_dir: Path, exclude: frozenset[str] | set[str] = frozenset()) -> list[dict]:
    """The ledger's entries, oldest first, but those in files named in `exclude` (written before this multirun
    started: no clock is compared, so a node whose clock is off cannot hide or add a job)."""
    entries = []
    for name in sorted(ledger_names(sweep_dir) - set(exclude)):
        path = Path(sweep_dir) / LEDGER / name
        try:
            entry = json.loads(path.read_text(encoding="utf-8", errors="replace"))
            if isinstance(entry, dict):
                entries.append(entry)
                continue
        except (OSError, ValueError):
            pass
        log.warning(f"{path}: not a ledger entry, skipped")
    return sorted(entries, key=lambda e: float(e.get("at", 0)) if isinstance(e.get("at"), (int, float)) else 0.0)


class SweepSummary(Callback):
    """At the end of a multirun: how many of its jobs are ok, were skipped (finished before) or failed, with the
    errors; the process then exits with status 1 if any failed, so scripts and CI notice (hydra/default.yaml).
    The jobs may have run in other processes or on other machines (joblib, submitit, Ray): what they wrote to
    the ledger since this multirun started is what is counted."""

    def __init__(self) -> None:
        self.before: set[str] = set()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.before = ledger_names(Path(config.hydra.sweep.dir))
        commands.mark_started()  # the command line composed: from here on, exits are the sweep's own

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        latest = {e.get("dir"): e for e in read_ledger(sweep_dir, self.before)}  # a job's last word
        counts = {s: sum(e.get("status") == s for e in latest.values()) for s in ("ok", "skipped", "failed")}
        failed = [e for e in latest.values() if e.get("status") == "failed"]
        lines = [
            f"sweep {sweep_dir}: {counts['ok'] + counts['skipped']} ok, {counts['failed']} failed"
            + (f" ({counts['skipped']} skipped: finished before)" if counts["skipped"] else "")
        ]
        lines += [f"  failed: {e.get('dir')}: {e.get('error') or '(no error recorded)'}" for e in failed]
        lines.append(f"  leaderboard: python -m src.compare {sweep_dir}")
        print("\n".join(lines), flush=True)
        if failed:
            print(
                f"error: {len(failed)} job(s) of this sweep failed (above); exit status 1", file=sys.stderr, flush=True
            )
            raise SystemExit(1)


class OutputDirCheck(Callback):
    """Before Hydra creates the run (or sweep) dir: it must be creatable and writable, else one line naming it
    and the fix, and exit 2 (Hydra's own attempt would end in its traceback). A sweep dir must not be a single
    run's dir, nor hold a link at its top (src/records/rundir.py check_dir_of_runs)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")
        try:  # before Hydra writes multirun.yaml into it
            rundir.check_dir_of_runs(
                config.hydra.sweep.dir, "this multirun would put its jobs' dirs and its files", "hydra.sweep.dir"
            )
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None

    @staticmethod
    def _check(directory: str, key: str) -> None:
        path = Path(str(directory))
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe_writable(path)
        except OSError as e:
            print(
                f"error: the output directory {path} cannot be created or written ({e.strerror or e}); choose "
                f"another with {key}=<dir> (or paths.log_dir=<dir>)",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(2) from None


# -- W&B sweep files, generated so that the Hydra sweep stays the one place to edit a grid -----------------------


def wandb_sweep(name: str) -> dict[str, Any]:
    """The W&B counterpart of conf/sweep/<name>.yaml: the same parameters, and a command that runs one job of that
    sweep (`sweep=<name>` brings its fixed settings) with W&B online and the agent's choices as Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR)):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
    searched = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    parameters: dict[str, Any] = {}
    for key, value in searched.items():
        spec = parser.parse_override(f"{key}={value}").value()
        if key == "seeds":  # seeds stacked in one job (src/runs/seeds.py) are one W&B run each: W&B sweeps them
            parameters["seed"] = {"values": list(spec)}
        elif isinstance(spec, ChoiceSweep):
            parameters[key] = {"values": list(spec.list)}
        elif isinstance(spec, RangeSweep):
            parameters[key] = {"values": list(range(int(spec.start), int(spec.stop), int(spec.step)))}
        elif isinstance(spec, IntervalSweep):
            kind = "log_uniform_values" if "log" in spec.tags else "uniform"
            if isinstance(spec.start, int) and isinstance(spec.end, int) and kind == "uniform":
                kind = "int_uniform"
            parameters[key] = {"distribution": kind, "min": spec.start, "max": spec.end}
        else:  # one fixed value
            parameters[key] = {"value": spec}
    grid = all("values" in p or "value" in p for p in parameters.values())
    doc: dict[str, Any] = {
        "name": name,
        "project": "rnn-bench",
        "program": "src/train.py",  # for W&B's records; the command below runs it as a module
        "method": "grid" if grid else "bayes",
    }
    if not grid:  # a search: one task and cell (a study per cell: change them here), and a goal to optimise
        choices = cfg.hydra.runtime.choices
        parameters = {"dataset": {"value": choices.dataset}, "cell": {"value": choices.cell}, **parameters}
        monitor, mode = cfg.task.monitor, cfg.task.monitor_mode
        doc["metric"] = {"name": f"{monitor}_best", "goal": "maximize" if mode == "max" else "minimize"}
    doc["parameters"] = parameters
    doc["command"] = [
        "${env}",
        "python",
        "-m",
        "src.train",
        f"sweep={name}",
        "logger=many",
        "logger.wandb.offline=false",
        "${args_no_hyphens}",
    ]
    return doc


def render_wandb_sweep(name: str) -> str:
    import yaml

    header = (
        f"# Generated from conf/sweep/{name}.yaml by `python -m src.runs.sweeps wandb {name}`: edit that file, "
        f"then regenerate.\n# wandb sweep sweeps/wandb_{name}.yaml  ->  wandb agent <entity>/rnn-bench/<id>"
        f"   (run from the repository root)\n"
    )
    return header + yaml.safe_dump(wandb_sweep(name), sort_keys=False, default_flow_style=None, width=110)


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEP_CONFIGS.glob("*.yaml"))


# -- The SLURM launcher's sbatch script, rendered without submitting (a dry run) --------------------------------


def sweep_jobs(cfg: DictConfig, overrides: list[str]) -> list[list[str]]:
    """The jobs (each a list of overrides) that Hydra's basic sweeper makes of the sweep config's params and the
    command line's overrides (`seed=1,2`: the command line wins), in its order; one batch for a search (sweep=optuna: n_jobs)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not str(cfg.hydra.sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return [[f"(trial {i} of the search)"] for i in range(int(cfg.hydra.sweeper.get("n_jobs") or 1))]
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + list(overrides))
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def sbatch_script(overrides: list[str]) -> tuple[str, list[list[str]]]:
    """(the sbatch script, the jobs) that `python -m src.train -m <overrides>` would submit with the SLURM
    launcher (hydra/launcher=slurm unless the overrides choose another SLURM launcher). The parameters go to
    submitit as Hydra's submitit launcher passes them (hydra_plugins.hydra_submitit_launcher, launch()), and
    submitit renders the script as it does before calling sbatch; nothing is submitted and srun is not needed."""
    from unittest import mock

    import submitit
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.utils import setup_globals
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from submitit.slurm.slurm import SlurmExecutor

    from src.runs.ranges import override_key

    if not any(override_key(o) == "hydra/launcher" for o in overrides):
        overrides = [*overrides, "hydra/launcher=slurm"]
    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed = [o.input_line for o in parsed if not o.is_sweep_override()]
    task = [o.input_line for o in parsed if not o.is_hydra_override()]  # what the sweeper gets (and each job)
    setup_globals()  # Hydra's resolvers (now:)
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF_DIR), job_name="train"):
        cfg = compose("config", overrides=fixed, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    if not str(launcher.get("_target_", "")).endswith(SLURM_LAUNCHER):
        raise ConfigError(
            f"hydra/launcher={cfg.hydra.runtime.choices.get('hydra/launcher')} is not a SLURM "
            f"launcher; the sbatch script is that of hydra/launcher=slurm or slurm_ddp"
        )
    with open_dict(cfg):  # what a multirun's job sees
        cfg.hydra.job.name = "train"
    params = OmegaConf.to_container(launcher, resolve=True)
    params.pop("_target_", None)
    jobs = sweep_jobs(cfg, task)
    # As the launcher builds its executor (submitit_launcher.BaseSubmititLauncher.launch):
    init_keys = {"max_num_timeout", "submitit_folder"}
    init = {"folder": params["submitit_folder"], "slurm_max_num_timeout": params.get("max_num_timeout", 0)}
    with mock.patch.object(SlurmExecutor, "affinity", classmethod(lambda cls: 1)):  # no srun here: no check
        executor = submitit.AutoExecutor(cluster="slurm", **init)
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys})
    slurm = executor._executor
    if len(jobs) > 1:  # submitted as one job array, as SlurmExecutor._internal_process_submissions does
        slurm.parameters["map_count"] = len(jobs)
    return slurm._make_submission_file_text(slurm._submitit_command_str, "dry-run"), jobs


def render_sbatch(overrides: list[str]) -> str:
    script, jobs = sbatch_script(overrides)
    lines = [
        script.rstrip("\n"),
        "",
        f"# dry run: nothing was submitted. The sweep's {len(jobs)} job(s), each "
        "`python -m src.train` with these overrides:",
    ]
    lines += [f"#   {i}: {' '.join(job) or '(defaults)'}" for i, job in enumerate(jobs)]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if argv and argv[0] == "sbatch":
        try:
            print(render_sbatch(argv[1:]), end="")
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except Exception as e:  # Hydra's composition errors: an unknown option, a malformed override
            print(
                f"error: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else e}", file=sys.stderr
            )
            return 2
        return 0
    usage = "usage: python -m src.runs.sweeps wandb [sweep names...] | sbatch [overrides...]"
    if argv and argv[0] in ("-h", "--help"):
        print(usage)
        return 0
    if not argv or argv[0] != "wandb":
        print(usage, file=sys.stderr)
        return 2
    unknown = [name for name in argv[1:] if name not in sweep_names()]
    if unknown:
        print(
            f"error: no sweep named {', '.join(unknown)}; the sweeps are {', '.join(sweep_names())} (conf/sweep/)",
            file=sys.stderr,
        )
        return 2
    for name in argv[1:] or sweep_names():
        path = atomic_write_text(WANDB_DIR / f"wandb_{name}.yaml", render_wandb_sweep(name))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


def failed(cfg: DictConfig, e: Exception) -> float:
    """A job's failure said: in a multirun, logged and the worst value returned (the sweep goes on); otherwise a
    user's error as one line and exit status 2, anything else raised."""
    bad, out = user_error(e), cfg.paths.output_dir
    if in_multirun():
        # The failure is recorded in the sweep's ledger (and this job's metrics.json where the dir is its
        # own); the rest of the sweep goes on, and the sweep exits non-zero at its end. The worst value is
        # returned, not None or NaN: on those hydra-optuna-sweeper stops the whole study.
        log_job(cfg, "failed", described(e))
        if bad is not None:
            log.error(f"job failed: {bad} (run dir {out})")
        else:
            log.exception(f"job failed, run dir {out}")
        return float("-inf") if cfg.task.get("monitor_mode") == "max" else float("inf")
    if bad is not None:
        print(f"error: {bad}", file=sys.stderr)
        sys.exit(2)
    raise


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
