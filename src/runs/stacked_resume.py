"""Resuming a stacked job as a whole: `python -m src.train seeds=[1,2] ckpt_path=last hydra.run.dir=<job dir>
trainer.max_epochs=<more>` continues every member from its own checkpoints/last.ckpt, as its single run resumed
alone would (`seed=<s> hydra.run.dir=<job dir>/seed=<s> ckpt_path=last`):

    wanted(job)                -> whether the job resumes (ckpt_path=last; another ckpt_path or train=false refused)
    member_resume(cfg, name)   -> the member's last.ckpt, checked as a single run's resume checks it
                                  (src/runs/build.py resume_checkpoint: the file is there, its CRCs verify, it is
                                  this member's: architecture, seed, optimizer), and whether it already finished
                                  (status ok, trained to max_epochs / max_steps): then it is not trained again
    check_one_point(names, paths) -> the members resumed together were left at one point of the job's loop
    job_checkpoint(paths, dir) -> the members' checkpoints as one checkpoint of the stacked job (its host module's
                                  weights, MemberOptimizers' state: every member's optimizer and schedule, the
                                  loops'), for Trainer.fit(ckpt_path=...)

The members resumed continue from one point of the job's loop: a member trained further alone since (another
epoch or step than the others) is refused, naming it. Their records (metrics.json), CSV curves and W&B runs
continue as a resumed single run's do (src/records/rundir.py claim with resuming=True keeps the W&B id).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from src.common.errors import ConfigError
from src.records.checkpoints import load
from src.records.record import RECORD


def wanted(job: DictConfig) -> bool:
    """Whether the job resumes (ckpt_path=last); a ConfigError for what only one member alone can do."""
    ckpt_path = job.get("ckpt_path")
    if not ckpt_path:
        return False
    if ckpt_path != "last" or not job.get("train", True):
        raise ConfigError(
            f"a stacked job resumes as a whole with ckpt_path=last (each member from its own "
            f"checkpoints/last.ckpt), not {'train=false' if ckpt_path == 'last' else f'ckpt_path={ckpt_path}'}; "
            f"to resume from another file or evaluate one member, run it alone: "
            f"seed=<s> hydra.run.dir=<run dir>/seed=<s> ckpt_path=..."
        )
    return True


def member_resume(cfg: DictConfig, name: str) -> tuple[Path, bool]:
    """The member's last.ckpt, checked as a single run's resume checks it (a ConfigError naming the member), and
    whether the member already finished (trained_to_limit)."""
    from src.runs.build import resume_checkpoint

    try:
        path = resume_checkpoint(cfg)
    except ConfigError as e:
        raise ConfigError(f"{name}: {e}") from None
    return path, trained_to_limit(cfg, path)


def check_one_point(names: list[str], paths: list[Path]) -> None:
    """The members resumed together continue one loop: a ConfigError naming them where their last checkpoints
    were written at different points (one resumed alone further)."""
    points = {name: point(path) for name, path in zip(names, paths)}
    if len(set(points.values())) > 1:
        said = ", ".join(f"{name} at epoch {e} (step {s})" for name, (e, s) in points.items())
        raise ConfigError(
            f"ckpt_path=last: the members' last checkpoints are at different points ({said}); a stacked job "
            f"resumes its members together: resume the ones behind alone (seed=<s> hydra.run.dir=<run dir>/seed=<s> "
            f"ckpt_path=last) up to the others, or all of them alone"
        )


def point(path: Path) -> tuple[int, int]:
    """(epoch, global step) a checkpoint was written at."""
    checkpoint = load(path, f"ckpt_path=last ({path})")
    return int(checkpoint.get("epoch", -1)), int(checkpoint.get("global_step", -1))


def trained_to_limit(cfg: DictConfig, path: Path) -> bool:
    """Whether the member finished (its record says ok) and its last checkpoint is at cfg's max_epochs or
    max_steps: resuming it would train nothing."""
    try:
        record = json.loads((Path(cfg.paths.output_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("status") != "ok":
        return False
    epoch, step = point(path)  # epoch: the index of the epoch it ended (written at its end)
    max_epochs, max_steps = cfg.trainer.get("max_epochs"), cfg.trainer.get("max_steps") or -1
    return (max_epochs is not None and max_epochs >= 0 and epoch + 1 >= max_epochs) or (0 < max_steps <= step)


def job_checkpoint(paths: list[Path], folder: Path) -> Path:
    """The members' last checkpoints (in the members' order) as one checkpoint of the stacked job, in `folder`."""
    members = [load(path, f"ckpt_path=last ({path})") for path in paths]
    first = members[0]
    job: dict[str, Any] = {
        "epoch": first["epoch"],
        "global_step": first["global_step"],
        "pytorch-lightning_version": first.get("pytorch-lightning_version"),
        # the host's weights: each member's task under tasks.<s> (src/runs/seeds.py StackedTask)
        "state_dict": {f"tasks.{s}.{k}": v for s, m in enumerate(members) for k, v in m["state_dict"].items()},
        "loops": first["loops"],
        "optimizer_states": [  # MemberOptimizers' state (src/updates/stacked.py)
            {
                "members": [m["optimizer_states"][0] for m in members],
                "schedulers": [(m.get("lr_schedulers") or [None])[0] for m in members],
            }
        ],
        "lr_schedulers": [],
    }
    path = folder / "job.ckpt"
    torch.save(job, path)
    return path
