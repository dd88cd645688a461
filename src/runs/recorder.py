"""A run's record (<run dir>/metrics.json) from its start to its end, for a single run (src/train.py) and for each
member of a stacked job (src/runs/seeds.py) alike:

    recorder = Recorder(cfg)          the run's identity (src/records/identity.py) and config_hash, status failed
    recorder.claim(resuming)          the run dir locked and claimed (src/records/rundir.py), its .hydra/ written
    recorder.record.update(...)       what the run found; status "ok" once it is done
    recorder.fail(error)              the error said in the record (and, where the dir was never claimed, the
                                      failure recorded there if that overwrites nothing)
    recorder.close()                  wall_s and finished_at; metrics.json written (a failed resume of a
                                      finished run is filed aside and the finished record stays); released
The run's log (train.log) is held until the dir is claimed (src/runs/console.py): a run refused a dir that is
not its own leaves no log there.
"""

from __future__ import annotations

import logging
import shlex
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from src.common.errors import described, interrupted_by
from src.common.files import atomic_write_json
from src.records import identity, rundir
from src.records.record import RECORD
from src.runs import console
from src.runs.sweeps import config_hash

log = logging.getLogger(__name__)


class Recorder:
    def __init__(self, cfg: DictConfig, overrides: list[str] | None = None):
        """`overrides`: what the run's .hydra/overrides.yaml names (default: the command line's). A stacked
        member's config hashes as its single run's: config_hash leaves its run dir (paths) out."""
        self.started = time.perf_counter()
        self.cfg, self.overrides = cfg, overrides
        with identity.as_run(overrides):  # a stacked member: the setting, name and tags of its single run
            self.fields = identity.fields(cfg)
        self.record: dict[str, Any] = {**self.fields, "config_hash": config_hash(cfg), "status": "failed"}
        self.out = Path(cfg.paths.output_dir)
        self.claimed: rundir.Claim | None = None

    def claim(self, resuming: bool) -> None:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if rank_zero_only.rank == 0:  # DDP's other processes share the dir that rank 0 claimed
            self.claimed = rundir.claim(self.out, self.record["config_hash"], resuming=resuming, fields=self.fields)
            self.record.update(wandb_id=self.claimed.record["wandb_id"], started_at=self.claimed.record["started_at"])
            if "resumed" in self.claimed.record:
                self.record["resumed"] = self.claimed.record["resumed"]
        console.release_run_log(keep=True, within=self.out)  # the dir is the run's own: its log gets the lines held
        if self.claimed is not None:
            self.write_hydra_files()

    def fail(self, error: BaseException) -> None:
        from lightning.fabric.utilities.rank_zero import rank_zero_only

        if (how := interrupted_by(error)) is not None:  # stopped from outside: how to go on, not what failed
            hint = resume_hint(self.out)
            self.record["error"] = f"interrupted by {how}; {hint}"
            say_once(f"interrupted by {how}: {hint}")
        else:
            self.record["error"] = self.record.get("error") or described(error)
        if self.claimed is None and rank_zero_only.rank == 0:
            self.claimed = rundir.claim_if_fresh(self.out)  # record the failure where that overwrites nothing
            if self.claimed is not None:
                self.write_hydra_files()
        console.release_run_log(keep=self.claimed is not None or rank_zero_only.rank != 0, within=self.out)

    def close(self) -> None:
        self.record["wall_s"] = round(time.perf_counter() - self.started, 3)
        self.record["finished_at"] = time.time()
        if self.claimed is None:
            return
        if self.record["status"] != "ok" and self.claimed.history:  # a resume of a finished run failed: it stays
            failed = self.claimed.keep_finished(self.record)
            log.warning(
                f"the resumed attempt failed; its record and files are in {failed}, and the finished run in "
                f"{self.out} is as it was before"
            )
        else:
            atomic_write_json(self.out / RECORD, self.record, within=self.out)
            self.claimed.drop_history()
        self.claimed.release()

    def write_hydra_files(self) -> None:
        if HydraConfig.initialized():
            hydra_cfg = HydraConfig.get()
            overrides = hydra_cfg.overrides.task if self.overrides is None else self.overrides
            rundir.write_hydra_files(self.out, self.cfg, hydra_cfg, overrides)


def resume_hint(out: Path) -> str:
    """What continues an interrupted run in `out`: its last checkpoint where one was written, else the run again."""
    if (Path(out) / "checkpoints" / "last.ckpt").is_file():
        return f"resume it from its last checkpoint: {resume_command(out)}"
    return "it stopped before its first checkpoint: the same command trains it again from the start"


def resume_command(out: Path) -> str:
    """This command again with ckpt_path=last and its run dir (its sweep dir for a multirun) fixed: every run of
    it continues in its own dir (a multirun's finished jobs are skipped)."""
    hydra = HydraConfig.get() if HydraConfig.initialized() else None
    multirun = identity.in_multirun()
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    where = hydra.sweep.dir if multirun else (hydra.runtime.output_dir if hydra is not None else out)
    args = [a for a in sys.argv[1:] if not a.startswith(("ckpt_path=", f"{key}="))]
    return shlex.join(["python", "-m", "src.train", *args, "ckpt_path=last", f"{key}={where}"])


_said: set[str] = set()


def say_once(line: str) -> None:
    """`line` on the console once for the command (not once per member of a stacked job)."""
    if line not in _said:
        _said.add(line)
        print(line, file=sys.stderr, flush=True)


def result_keys(record: dict[str, Any]) -> list[str]:
    """What a run's result line states: its best monitored value and its test metrics (the chance line aside)."""
    keys = [f"{record['monitor']}_best"] + sorted(k for k in record if k.startswith("test/") and "baseline" not in k)
    return [k for k in keys if isinstance(record.get(k), float)]


def result_line(record: dict[str, Any]) -> str:
    """The best monitored value and the test metrics, as the run's log states its result."""
    return ", ".join(f"{k} {record[k]:.4g}" for k in result_keys(record))


def spread_line(records: list[dict[str, Any]]) -> str:
    """What result_line states of each run, as mean ± standard deviation (n - 1) over `records` (the seeds of one
    setting, at least two): a stacked job's summary in place of a table of every member's every metric."""
    keys = result_keys(records[0])
    parts = []
    for k in keys:
        values = [r[k] for r in records if isinstance(r.get(k), float)]
        if len(values) > 1:
            parts.append(f"{k} {statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
    return ", ".join(parts)
