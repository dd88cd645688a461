"""Several jobs at once on this machine's GPUs: each job process takes a slot, and slot k runs on GPU k mod #GPUs.

Hydra assigns no device per job, so `trainer=gpu_pool` asks for its device with `${gpu_pool:}`: the process locks
the lowest free slot file (flock) and keeps it until it exits. With `hydra/launcher=gpu_pool` (joblib, N worker
processes that each run many jobs one after another) the N workers hold N distinct slots, which puts N / #GPUs
workers on every GPU whatever order the jobs finish in. Slots are per machine, so two sweeps started side by side
share the GPUs too. The device is picked by index (`trainer.devices=[k]`), not by CUDA_VISIBLE_DEVICES, which a
reused worker process could not change once CUDA is initialised.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path
from typing import IO

from omegaconf import OmegaConf

_held: tuple[int, IO] | None = None  # (slot, open lock file) for this process's lifetime


def slot_dir() -> Path:
    return Path(
        os.environ.get("RNN_BENCH_GPU_SLOTS", Path(tempfile.gettempdir()) / f"rnn-bench-gpu-slots-{os.getuid()}")
    )


def claim_slot(directory: Path | None = None) -> tuple[int, IO]:
    """Lock the lowest free slot file in `directory`; the lock lasts as long as the returned file stays open."""
    directory = directory or slot_dir()
    directory.mkdir(parents=True, exist_ok=True)
    slot = 0
    while True:
        handle = open(directory / f"slot-{slot}.lock", "a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return slot, handle
        except BlockingIOError:
            handle.close()
            slot += 1


def pool_device() -> list[int] | int:
    """This process's GPU, as Lightning's `devices` (a one-element list of its index); 1 where no GPU is visible,
    so configs still compose and Lightning itself says that accelerator=gpu has no device."""
    import torch

    count = torch.cuda.device_count()
    if count == 0:
        return 1
    global _held
    if _held is None:
        _held = claim_slot()
    return [_held[0] % count]


def pool_jobs(per_gpu: int) -> int:
    """How many jobs to run at once: `per_gpu` on each visible GPU (at least `per_gpu` where none is visible)."""
    import torch

    return int(per_gpu) * max(1, torch.cuda.device_count())


def register_resolvers() -> None:
    for name, resolver in (("gpu_pool", pool_device), ("gpu_pool_jobs", pool_jobs)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
