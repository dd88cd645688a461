"""Shared fixtures: configs composed exactly as `python -m src.train` composes them, outputs in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
# Downloads and parsed data are shared by all tests (and with the user's runs): fetched once per machine.
CACHE = Path(os.environ.get("RNN_BENCH_CACHE", ROOT / ".cache"))

# The quick, quiet settings most tests run with; each test adds what it is about.
QUIET = ["logger=csv", "callbacks=none", "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def make_cfg(tmp_path: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose(config_name="config", return_hydra_config=True, overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
        cfg.paths.log_dir = str(tmp_path)
        cfg.paths.cache_dir = str(CACHE)
        cfg.hydra.runtime.output_dir = str(tmp_path)
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture
def cfg_factory(tmp_path):
    def factory(*overrides: str, quiet: bool = True, out: Path | None = None) -> DictConfig:
        return make_cfg(out or tmp_path, (QUIET if quiet else []) + list(overrides))

    return factory


def run_cli(
    *args: str,
    cwd: Path = ROOT,
    timeout: int = 600,
    env: dict[str, str | None] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess:
    """`python -m src.train ...` exactly as a user types it. `env`: variables set on top of the test
    environment's (None: removed); `preexec_fn`: run in the child before the command (a resource limit)."""
    full = {**os.environ, "RNN_BENCH_CACHE": str(CACHE), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "0"}
    for name, value in (env or {}).items():
        if value is None:
            full.pop(name, None)
        else:
            full[name] = value
    return subprocess.run(
        [sys.executable, "-m", "src.train", *args],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )


def as_tuple(state) -> tuple:
    """A cell's state as a tuple of tensors (a bare tensor, or already a tuple / list)."""
    return tuple(state) if isinstance(state, (tuple, list)) else (state,)


def assert_cell_gradcheck(cell, x, state: tuple) -> None:
    """torch.autograd.gradcheck of `cell` (float64) with respect to the input `x`, each tensor of the initial
    `state` (leaves that require grad) and every parameter."""
    import torch
    from torch.func import functional_call

    names, params = zip(*cell.named_parameters())
    n_state = len(state)

    def run(x, *rest):
        st = rest[:n_state] if n_state > 1 else rest[0]
        out, new = functional_call(cell, dict(zip(names, rest[n_state:])), (x, st))
        return (out, *as_tuple(new))

    assert torch.autograd.gradcheck(run, (x, *state, *params), eps=1e-6, atol=1e-5, rtol=1e-4)
