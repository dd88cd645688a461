"""sweep=optuna's sweeper: hydra-optuna-sweeper's, resumable. Its study is persisted (conf/sweep/optuna.yaml: SQLite
in the sweep dir) and the plugin already loads an existing one (load_if_exists); what it does not do for a study
that already holds trials is what this adds: the seeded sampler is reseeded, since it would otherwise propose the
study's first trials again (the same runs, skipped as completed, and the study would count them twice), and the
new trials' job numbers continue after the earlier ones (#2, #3 in the log rather than #0, #1 again). The sweep
dir is created first: SQLite creates the database file, not its folder.

A Hydra plugin must live in the hydra_plugins namespace package. Hydra imports every module there on start-up,
so without the sweeps extra this module defines nothing (and raises nothing).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

try:  # the module, not the class: Hydra would list a class imported here as a plugin of this module too
    from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper
except ImportError:  # the sweeps extra is not installed: sweep=optuna says so (Hydra: no such sweeper)
    optuna_sweeper = None

log = logging.getLogger(__name__)

if optuna_sweeper is not None:

    class ResumableOptunaSweeper(optuna_sweeper.OptunaSweeper):
        def sweep(self, arguments: list[str]) -> Any:
            import optuna

            impl = self.sweeper  # the plugin's implementation: its storage, study name, sampler and job counter
            storage = impl.storage
            if isinstance(storage, str) and storage.startswith("sqlite:///"):
                Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
            done = 0
            if storage is not None and impl.study_name is not None:
                try:
                    done = len(optuna.load_study(study_name=impl.study_name, storage=storage).trials)
                except KeyError:  # no such study yet in this storage
                    done = 0
            if done:
                log.info(f"study {impl.study_name} holds {done} trials ({storage}): {impl.n_trials} more")
                impl.job_idx = done
                if hasattr(impl.sampler, "reseed_rng"):
                    impl.sampler.reseed_rng()
            return super().sweep(arguments)
