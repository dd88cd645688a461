"""A run dir belongs to one run: claimed before anything is written into it, locked while the run lives.

    claim(out, config_hash, resuming)   at the start of src.train, on the main process only

- Another live process in the dir (a lock held): refused.
- The dir holds a finished run (status ok) of another config: refused, naming both; nothing is touched.
- The dir holds an earlier attempt that is not resumed (a killed or failed run of any config, or a finished run of
  this same config with skip_completed=false): that attempt's files are moved to previous_attempts/<n>/, said on
  the console, so its checkpoints never sit beside the new run's and nothing is lost.
- Files of an unknown origin (no metrics.json): refused.
- Resuming (ckpt_path): the dir's history continues (csv rows, checkpoints, the W&B run id); the earlier
  attempt's metrics.json and .hydra/ are moved to previous_attempts/<n>/. The checkpoint itself is checked
  against the run's architecture by src.records.checkpoints.
- Resuming a finished run (status ok): its history (checkpoints, csv, ...) is also kept in previous_attempts/<n>/
  (checkpoints hard-linked: their writes replace a file, never change it), so that a resume that fails puts the
  finished run back as it was (`Claim.keep_finished`) and files its own record and files in previous_attempts/;
  a resume that succeeds drops that copy (`Claim.drop_history`).

The claim writes metrics.json with status "running" and the run's W&B id, and the run's .hydra/ files (Hydra is
told not to write them itself, so it cannot overwrite another run's before this check).

Nothing in a run dir is followed out of it: the claim refuses a symbolic link anywhere in the dir (but inside
wandb/, where W&B keeps links of its own), the lock is opened without following one, and every record is written
with the links on its way refused (src/common/files.py), so a planted link cannot make a run overwrite a file
elsewhere.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from src.common import config_yaml
from src.common.errors import ConfigError
from src.common.files import atomic_write_json, atomic_write_text, link_error, open_nofollow
from src.records.record import ATTEMPTS, RECORD, RecordError, read_record

LOCK = ".rnn_bench.lock"
# What Hydra itself writes into a job's dir before the run starts (its log), and the lock: not a run's results.
NOT_RESULTS = (LOCK, ATTEMPTS)
WANDB = "wandb"  # W&B's folder: it makes links of its own inside (latest-run, debug.log)
# What a dir of runs writes at its top (a sweep's config and ledger, a seeds=[...] job's log and curves), and a
# run's record (a single run's dir): never through a link.
DIR_OF_RUNS_FILES = {"multirun.yaml", ".jobs", "train.log", "csv", "tensorboard", WANDB, RECORD}


@dataclass
class Claim:
    dir: Path
    record: dict[str, Any]  # what metrics.json says while the run lives: status running, wandb_id, ...
    moved: Path | None = None  # where an earlier attempt went
    _lock: int | None = field(default=None, repr=False)
    history: list[Path] = field(default_factory=list)  # a finished run's files, kept in `moved` while it resumes

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)  # closing the descriptor drops the flock
            self._lock = None

    def drop_history(self) -> None:
        """The resume succeeded: its files are the run's history now; the finished run's copy is not needed."""
        if not self.history or self.moved is None:
            return
        for rel in self.history:
            (self.moved / rel).unlink(missing_ok=True)
        _prune_empty(self.moved)
        self.history = []

    def keep_finished(self, record: dict[str, Any]) -> Path:
        """A resume of a finished run failed: its record (`record`), .hydra/ and every file it wrote or changed
        go to a new previous_attempts/<n>/, and the finished run's record, .hydra/ and files come back."""
        out, finished = self.dir, self.moved
        assert finished is not None
        failed = _move_aside(out, [p for p in (out / ".hydra",) if p.exists()])
        for rel in _history(out):  # what the failed attempt left (changed, new or untouched files alike)
            (failed / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(out / rel, failed / rel)
        for rel in self.history:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(finished / rel, out / rel)
        atomic_write_json(failed / RECORD, record, within=out)
        for name in (RECORD, ".hydra"):
            if (finished / name).exists():
                os.replace(finished / name, out / name)
        _prune_empty(finished)
        if not finished.exists():  # the number the finished run's record had while away: the failed attempt's
            failed = Path(shutil.move(str(failed), str(finished)))
        self.history = []
        return failed


def _leftovers(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name not in NOT_RESULTS and not p.name.endswith(".log"))


def refuse_links_in(out: Path) -> None:
    """LinkError naming the first symbolic link in the run dir `out` (not below wandb/, W&B's own)."""
    for folder, dirs, files in os.walk(out):
        for name in sorted(dirs + files):
            if os.path.islink(os.path.join(folder, name)):
                raise link_error(os.path.join(folder, name))
        if Path(folder) == out and WANDB in dirs:
            dirs.remove(WANDB)


def _lock(out: Path) -> int:
    fd = open_nofollow(out / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"run dir {out} is in use by another running process (pid {holder}); wait for it to "
            f"finish or choose another dir with hydra.run.dir=<dir>"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _history(out: Path) -> list[Path]:
    """The run's files that a resume continues (checkpoints, csv, diagnostics, ...), relative to `out`: not its
    record, .hydra/, lock, logs, earlier attempts, or W&B's folder (the W&B run goes on, whatever happens here)."""
    skip = {RECORD, ".hydra", LOCK, ATTEMPTS, WANDB}
    found = []
    for folder, dirs, files in os.walk(out):
        here = Path(folder).relative_to(out)
        if here == Path("."):
            dirs[:] = [d for d in dirs if d not in skip]
            files = [f for f in files if f not in skip and not f.endswith(".log")]
        found += [here / f for f in files]
    return sorted(found)


def _keep_history(out: Path, dest: Path) -> list[Path]:
    """A copy of the run's history files in `dest`: checkpoints hard-linked (a checkpoint is replaced by a new
    file, never written in place), others copied (csv rows are appended in place)."""
    kept = _history(out)
    for rel in kept:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            if rel.suffix != ".ckpt":
                raise OSError
            os.link(out / rel, dest / rel)
        except OSError:
            shutil.copy2(out / rel, dest / rel)
    return kept


def _prune_empty(folder: Path) -> None:
    for sub, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
            os.rmdir(sub)  # only empty folders go


def _move_aside(out: Path, paths: list[Path]) -> Path:
    attempts = out / ATTEMPTS
    n = 1 + max((int(p.name) for p in attempts.iterdir() if p.name.isdigit()), default=0) if attempts.is_dir() else 1
    dest = attempts / str(n)
    dest.mkdir(parents=True)
    for path in paths:
        shutil.move(str(path), str(dest / path.name))
    return dest


def _describe(record: dict) -> str:
    fields = [f"{k}={record[k]}" for k in ("dataset", "cell", "depth", "direction", "seed") if k in record]
    return f"{' '.join(fields) or 'a run'} (config {record.get('config_hash', '?')}, status {record.get('status')})"


def claim(out: str | Path, config_hash: str, resuming: bool, fields: dict[str, Any]) -> Claim:
    """Lock `out` for this run and decide what its existing files mean (module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    new_lock = not (out / LOCK).exists()
    lock = _lock(out)
    try:
        return _claim(out, config_hash, resuming, fields, lock)  # its links refused first (check_claimable)
    except BaseException:
        if new_lock:  # refused: the lock this run made goes too (the dir is not its own)
            (out / LOCK).unlink(missing_ok=True)
        os.close(lock)
        raise


def claim_if_fresh(out: str | Path) -> Claim | None:
    """For a run that failed before it claimed its dir (a config error): the dir, locked, if it holds nothing of
    any run, so the failure can be recorded there; None otherwise (nothing is touched)."""
    out = Path(out)
    try:
        if not out.is_dir() or (out / RECORD).exists() or _leftovers(out):
            return None
        lock = _lock(out)
    except (OSError, ConfigError):
        return None
    if (out / RECORD).exists() or _leftovers(out):  # another process got there first
        os.close(lock)
        return None
    return Claim(out, {}, None, lock)


def check_claimable(out: str | Path, config_hash: str, resuming: bool) -> dict | None:
    """What a claim of `out` by this config would refuse, raised (a link, a damaged record, files of an unknown run,
    another config's finished run; a live run's lock aside), touching nothing; else the record `out` holds (None:
    none). A packed multirun or a seeds job asks it for each member before any trains: a refused member fails
    alone, the others train."""
    out = Path(out)
    if not out.is_dir():
        return None
    refuse_links_in(out)
    previous: dict | None = None
    if (out / RECORD).exists():
        try:
            previous = read_record(out / RECORD)
        except RecordError as e:
            raise ConfigError(
                f"run dir {out} holds a damaged run record ({e}); move it away or choose another "
                f"dir with hydra.run.dir=<dir>"
            ) from None
    if resuming or not _leftovers(out):
        return previous
    if previous is None:
        names = ", ".join(p.name for p in _leftovers(out)[:5])
        raise ConfigError(
            f"run dir {out} already holds files of an unknown run ({names}); choose another "
            f"dir with hydra.run.dir=<dir>, or move them away"
        )
    if previous.get("config_hash") != config_hash and previous.get("status") == "ok":
        raise ConfigError(
            f"run dir {out} holds a run of another config: {_describe(previous)}; this run "
            f"(config {config_hash}) would overwrite it. Choose another dir with "
            f"hydra.run.dir=<dir>, or resume that run with its own settings and ckpt_path=last"
        )
    return previous


def check_dir_of_runs(out: str | Path, what: str, key: str) -> None:
    """A dir that holds runs' dirs (a seeds=[...] job's, a multirun's) and files of its own (a job's log, a sweep's
    multirun.yaml and ledger), never a run's own files: a dir holding a run's record (a single run's dir) is
    refused, as is a link at its top where it writes (a file or folder of its own planted as one: Hydra writes
    multirun.yaml through a link), but for a run's dir linked in (a scratch disk); nothing is touched.
    what: "seeds=[...] would put its members' dirs and its log", ...; key: the setting that moves it."""
    out = Path(out)
    if not out.is_dir():
        return
    for path in sorted(out.iterdir()):
        if path.is_symlink() and (path.name in DIR_OF_RUNS_FILES or not path.is_dir()):
            raise link_error(path)
    if (out / RECORD).exists():
        try:
            whose = _describe(read_record(out / RECORD))
        except RecordError as e:
            whose = f"a damaged record: {e}"
        raise ConfigError(
            f"{out} holds a run, {whose}; {what} among that run's files. Choose another dir with {key}=<dir>"
        )


def _claim(out: Path, config_hash: str, resuming: bool, fields: dict[str, Any], lock: int) -> Claim:
    previous = check_claimable(out, config_hash, resuming)
    moved, history = None, []
    if resuming:
        # The history goes on in place (checkpoints, csv, wandb); the earlier attempt's record and config files
        # are kept beside it, since this attempt writes its own.
        kept = [p for p in (out / RECORD, out / ".hydra") if p.exists()]
        moved = _move_aside(out, kept) if kept else None
        if moved is not None and (previous or {}).get("status") == "ok":
            history = _keep_history(out, moved)
    elif leftovers := _leftovers(out):
        moved = _move_aside(out, leftovers)
        whose = (
            "this config" if previous.get("config_hash") == config_hash else f"another config, {_describe(previous)}"
        )
        print(
            f"run dir {out}: the earlier unfinished attempt ({whose}; status {previous.get('status')}) was moved "
            f"to {moved}",
            flush=True,
        )
    wandb_id = (previous or {}).get("wandb_id") if resuming else None
    record = {
        **fields,
        "config_hash": config_hash,
        "status": "running",
        "pid": os.getpid(),
        "started_at": time.time(),
        "wandb_id": wandb_id or secrets.token_hex(4),
    }
    if resuming and previous is not None:
        record["resumed"] = int(previous.get("resumed", 0) or 0) + 1
    atomic_write_json(out / RECORD, record, within=out)
    return Claim(out, record, moved, lock, history)


def write_hydra_files(out: Path, config: Any, hydra_config: Any, overrides: list[str]) -> None:
    """The run's .hydra/ folder (config.yaml, hydra.yaml, overrides.yaml), as Hydra would write it."""
    folder = Path(out) / ".hydra"
    hydra = {"hydra": config_yaml.plain(hydra_config)}  # OmegaConf.to_yaml({"hydra": ...})'s text, without its copy
    atomic_write_text(folder / "config.yaml", config_yaml.to_yaml(config), within=out)
    atomic_write_text(folder / "hydra.yaml", config_yaml.dump(hydra), within=out)
    atomic_write_text(folder / "overrides.yaml", config_yaml.to_yaml(list(overrides)), within=out)


def job_dir_name(overrides: str) -> str:
    """A sweep job's folder name from its overrides (Hydra's override_dirname, `cell=gru,seed=1`), so a job's
    dir follows its config, not its position in the sweep: adding a value to a sweep's list never sends a job
    into another config's dir. A path separator or a name too long for the file system gets a hash suffix.
    `ckpt_path=last` names no dir of its own: the same multirun with it resumes every job in its own dir."""
    name = re.sub(r"(^|,)ckpt_path=last(?=,|$)", "", overrides).lstrip(",") or "defaults"
    safe = name.replace("/", "_").replace("\0", "_")
    if safe != name or len(safe) > 180:
        safe = f"{safe[:160]}-{hashlib.sha256(name.encode()).hexdigest()[:10]}"
    return safe
