"""Resuming a stacked job as a whole: `python -m src.train seeds=[1,2] ckpt_path=last hydra.run.dir=<job dir>
trainer.max_epochs=<more>` continues every member from its own checkpoints/last.ckpt, as its single run resumed
alone would (`seed=<s> hydra.run.dir=<job dir>/seed=<s> ckpt_path=last`):

    plan(cfgs, names)          -> None without ckpt_path; else Resume: each member's last.ckpt, checked as a single
                                  run's resume checks it (src/runs/build.py resume_checkpoint: the file is there, its
                                  CRCs verify, it is this member's: architecture, seed, optimizer), and the members
                                  already finished (status ok, trained to max_epochs / max_steps): not trained again
    job_checkpoint(paths, dir) -> the members' checkpoints as one checkpoint of the stacked job (its host module's
                                  weights, MemberOptimizers' state: every member's optimizer and schedule, the
                                  loops'), for Trainer.fit(ckpt_path=...)

The members resumed continue from one point of the job's loop: a member trained further alone since (another
epoch or step than the others) is refused, naming it. Their records (metrics.json), CSV curves and W&B runs
continue as a resumed single run's do (src/records/rundir.py claim with resuming=True keeps the W&B id).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from src.common.errors import ConfigError
from src.records.checkpoints import load
from src.records.record import RECORD


@dataclass
class Resume:
    paths: list[Path]  # each member's last.ckpt
    finished: list[int]  # the members already trained to the job's limit: their records stand, not trained again

    def kept(self, values: list) -> list:
        """`values` (one per member) of the members that resume: all but the finished."""
        return [v for i, v in enumerate(values) if i not in self.finished]


def plan(cfgs: list[DictConfig], names: list[str]) -> Resume | None:
    """How the members resume (module docstring); None: they train from scratch (no ckpt_path)."""
    from src.runs.build import resume_checkpoint

    ckpt_path = cfgs[0].ckpt_path
    if not ckpt_path:
        return None
    if ckpt_path != "last" or not cfgs[0].train:
        raise ConfigError(
            f"a stacked job resumes as a whole with ckpt_path=last (each member from its own "
            f"checkpoints/last.ckpt), not {'train=false' if ckpt_path == 'last' else f'ckpt_path={ckpt_path}'}; "
            f"to resume from another file or evaluate one member, run it alone: "
            f"seed=<s> hydra.run.dir=<run dir>/seed=<s> ckpt_path=..."
        )
    paths, finished = [], []
    for i, (cfg, name) in enumerate(zip(cfgs, names)):
        try:
            paths.append(resume_checkpoint(cfg))
        except ConfigError as e:
            raise ConfigError(f"{name}: {e}") from None
        if trained_to_limit(cfg, paths[-1]):
            finished.append(i)
    points = {name: point(path) for i, (name, path) in enumerate(zip(names, paths)) if i not in finished}
    if len(set(points.values())) > 1:
        said = ", ".join(f"{name} at epoch {e} (step {s})" for name, (e, s) in points.items())
        raise ConfigError(
            f"ckpt_path=last: the members' last checkpoints are at different points ({said}); a stacked job "
            f"resumes its members together: resume the ones behind alone (seed=<s> hydra.run.dir=<run dir>/seed=<s> "
            f"ckpt_path=last) up to the others, or all of them alone"
        )
    return Resume(paths, finished)


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
