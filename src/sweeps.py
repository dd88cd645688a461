"""What sweeps need beyond Hydra's multirun: skipping jobs already done, a summary at the end, W&B sweep files.

    python -m src.sweeps wandb [names...]    writes sweeps/wandb_<name>.yaml from conf/sweep/<name>.yaml
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from src import commands
from src.errors import ConfigError
from src.files import atomic_write_text

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
SWEEP_CONFIGS = ROOT / "conf" / "sweep"
WANDB_DIR = ROOT / "sweeps"
# Where outputs go, and the switch itself, do not change what a job computes.
NOT_HASHED = ("hydra", "paths", "skip_completed")


def config_hash(cfg: DictConfig) -> str:
    """A fingerprint of the job's config as composed, before interpolation: paths stay `${paths...}`, so the same
    job hashes the same in any output dir, while any value that differs (an override, an edited config file)
    changes it. Code changes do not: re-run those with skip_completed=false or a new sweep dir."""
    kept = OmegaConf.masked_copy(cfg, [k for k in cfg if k not in NOT_HASHED])
    text = json.dumps(OmegaConf.to_container(kept, resolve=False), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def completed_record(cfg: DictConfig) -> Optional[dict[str, Any]]:
    """In a multirun, the metrics.json already in this job's dir if it records a finished run (status ok) of the
    same config; None otherwise (no record, a failure, another config, or skip_completed=false)."""
    if not cfg.get("skip_completed", True) or not HydraConfig.initialized():
        return None
    if HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    try:
        record = json.loads((Path(cfg.paths.output_dir) / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
    if record.get("status") == "ok" and record.get("config_hash") == config_hash(cfg):
        return record
    return None


def check_one_process_per_job(cfg: DictConfig) -> None:
    """Lightning's DDP starts its other processes by running the same command line again: inside a multirun that
    is the whole sweep again, in every process. So a sweep runs one device per job; DDP is for single runs
    (ddp_spawn, which starts its processes without the command line, is fine)."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    trainer = cfg.trainer
    strategy = str(trainer.get("strategy") or "auto")
    devices = trainer.get("devices", 1)
    several = (len(devices) > 1 if OmegaConf.is_list(devices) or isinstance(devices, list)
               else devices in (-1, "-1", "auto") and trainer.get("accelerator") != "cpu"
               or isinstance(devices, int) and devices > 1)
    if "spawn" not in strategy and (strategy.startswith("ddp") or (strategy == "auto" and several)):
        raise ConfigError(f"trainer.strategy={strategy} with trainer.devices={devices} in a multirun: DDP would "
                          "start the whole sweep again in every process. Sweep with one GPU per job "
                          "(trainer=gpu, or trainer=gpu_pool hydra/launcher=gpu_pool); use trainer=ddp for a "
                          "single run")


LEDGER = "jobs.jsonl"  # in the sweep dir: one line per job run (ok, failed, skipped), appended by the job


def log_job(cfg: DictConfig, status: str, error: Optional[str] = None) -> None:
    """In a multirun, append this job's outcome to the sweep's ledger, which SweepSummary reads. The ledger, not
    the run dirs, is what counts: a job refused before it could write its own record (its dir belongs to another
    run) is counted too, and so is every job of a parallel or remote launcher."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    entry = {"dir": str(cfg.paths.output_dir), "status": status, "error": error, "at": time.time()}
    sweep_dir = Path(HydraConfig.get().sweep.dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(sweep_dir / LEDGER, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, (json.dumps(entry) + "\n").encode())  # one write with O_APPEND: lines never interleave
    finally:
        os.close(fd)


def read_ledger(sweep_dir: Path, since: float = 0.0) -> list[dict]:
    entries = []
    path = Path(sweep_dir) / LEDGER
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json.loads(line)
            if isinstance(entry, dict) and float(entry.get("at", 0)) >= since:
                entries.append(entry)
        except (ValueError, TypeError):
            log.warning(f"{path}:{number}: not a ledger line, skipped")
    return entries


class SweepSummary(Callback):
    """At the end of a multirun: how many of its jobs are ok, were skipped (finished before) or failed, with the
    errors; the process then exits with status 1 if any failed, so scripts and CI notice (hydra/default.yaml)."""

    def __init__(self) -> None:
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.started = time.time()
        commands.mark_started()  # the command line composed: from here on, exits are the sweep's own

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        latest = {e.get("dir"): e for e in read_ledger(sweep_dir, self.started - 1.0)}  # a job's last word
        counts = {s: sum(e.get("status") == s for e in latest.values()) for s in ("ok", "skipped", "failed")}
        failed = [e for e in latest.values() if e.get("status") == "failed"]
        lines = [f"sweep {sweep_dir}: {counts['ok'] + counts['skipped']} ok, {counts['failed']} failed"
                 + (f" ({counts['skipped']} skipped: finished before)" if counts["skipped"] else "")]
        lines += [f"  failed: {e.get('dir')}: {e.get('error') or '(no error recorded)'}" for e in failed]
        lines.append(f"  leaderboard: python -m src.compare {sweep_dir}")
        print("\n".join(lines), flush=True)
        if failed:
            print(f"error: {len(failed)} job(s) of this sweep failed (above); exit status 1", file=sys.stderr,
                  flush=True)
            raise SystemExit(1)


class OutputDirCheck(Callback):
    """Before Hydra creates the run (or sweep) dir: it must be creatable and writable, else one line naming it
    and the fix, and exit 2 (Hydra's own attempt would end in its traceback)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(directory: str, key: str) -> None:
        path = Path(str(directory))
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / ".write_test"
            probe.touch()
            probe.unlink()
        except OSError as e:
            print(f"error: the output directory {path} cannot be created or written ({e.strerror or e}); choose "
                  f"another with {key}=<dir> (or paths.log_dir=<dir>)", file=sys.stderr, flush=True)
            raise SystemExit(2) from None


# -- W&B sweep files, generated so that the Hydra sweep stays the one place to edit a grid -----------------------

def wandb_sweep(name: str) -> dict[str, Any]:
    """The W&B counterpart of conf/sweep/<name>.yaml: the same parameters, and a command that runs one job of that
    sweep (`sweep=<name>` brings its fixed settings) with W&B online and the agent's choices as Hydra overrides."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        cfg = compose("config", overrides=[f"sweep={name}"], return_hydra_config=True)
    searched = cfg.hydra.sweeper.get("params") or {}
    parser = OverridesParser.create()
    parameters: dict[str, Any] = {}
    for key, value in searched.items():
        spec = parser.parse_override(f"{key}={value}").value()
        if isinstance(spec, ChoiceSweep):
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
    doc["command"] = ["${env}", "python", "-m", "src.train", f"sweep={name}", "logger=many",
                      "logger.wandb.offline=false", "${args_no_hyphens}"]
    return doc


def render_wandb_sweep(name: str) -> str:
    import yaml

    header = (f"# Generated from conf/sweep/{name}.yaml by `python -m src.sweeps wandb {name}`: edit that file, "
              f"then regenerate.\n# wandb sweep sweeps/wandb_{name}.yaml  ->  wandb agent <entity>/rnn-bench/<id>"
              f"   (run from the repository root)\n")
    return header + yaml.safe_dump(wandb_sweep(name), sort_keys=False, default_flow_style=None, width=110)


def sweep_names() -> list[str]:
    return sorted(p.stem for p in SWEEP_CONFIGS.glob("*.yaml"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "wandb":
        print("usage: python -m src.sweeps wandb [sweep names...]", file=sys.stderr)
        return 2
    unknown = [name for name in argv[1:] if name not in sweep_names()]
    if unknown:
        print(f"error: no sweep named {', '.join(unknown)}; the sweeps are {', '.join(sweep_names())} "
              f"(conf/sweep/)", file=sys.stderr)
        return 2
    for name in argv[1:] or sweep_names():
        path = atomic_write_text(WANDB_DIR / f"wandb_{name}.yaml", render_wandb_sweep(name))
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
