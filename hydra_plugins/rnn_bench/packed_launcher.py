"""hydra/launcher=packed, the suite's default multirun launcher: Hydra's basic launcher (every job in this process,
one after another), but jobs whose configs differ only in settings that keep the shapes (seed, the optimizer and
its settings, the LR schedule, clipping, initialisation range) train as one stacked job, each still its own run
dir, record and ledger entry (src/runs/packing.py, docs/stacked.md).

    python -m src.train -m optimizer.lr=1e-3,3e-3,1e-2 seed=1,2,3     one stacked job of 9 members
    ... hydra.launcher.pack=false                                     every job alone (as hydra/launcher=basic)
    ... hydra.launcher.max_members=4                                  at most 4 members per stacked job

Hydra imports every module of hydra_plugins on start-up: nothing heavy is imported here (src.runs.packing, and
torch with it, only when a multirun launches).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.plugins import launcher  # the module: a class imported here would be listed as this module's plugin


class PackedLauncher(launcher.Launcher):
    def __init__(self, pack: bool = True, max_members: int = 32) -> None:
        super().__init__()
        bad = None
        if not isinstance(pack, bool):
            bad = f"hydra.launcher.pack={pack!r} must be true or false"
        elif not isinstance(max_members, int) or isinstance(max_members, bool) or max_members < 1:
            bad = f"hydra.launcher.max_members={max_members!r} must be a positive integer (members per stacked job)"
        if bad is not None:  # one line and exit 2, as src.train says a bad value (Hydra would wrap it in its own)
            print(f"error: {bad}", file=sys.stderr, flush=True)
            raise SystemExit(2)
        self.pack, self.max_members = pack, max_members
        self.config: Any = None
        self.task_function: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from src.runs.packing import launch

        return launch(self, [list(o) for o in job_overrides], initial_job_idx)
