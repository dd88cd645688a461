"""Checkpoints: written atomically, loaded weights-only, and checked against the run before resuming."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from src.errors import ConfigError
from src.files import atomic_write

# What fixes the shapes and meaning of the weights: a checkpoint must agree on these to be resumed.
ARCHITECTURE_KEYS = ("task", "dataset", "cell", "depth", "direction", "stack")
IGNORED = ("task.stack", "task.optimizer", "task.scheduler", "stack.cell", "stack.depth", "stack.bidirectional",
           "dataset.cache_dir", "dataset.data_dir", "dataset.batch_size", "dataset.eval_batch_size",
           "dataset.shuffle_seed", "dataset.download", "dataset.on_device", "dataset.max_device_bytes")


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file, then rename: a crash never leaves a truncated .ckpt behind."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Optional[Any] = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def load(path: str | Path) -> dict:
    """A checkpoint of this suite, loaded weights-only (no arbitrary code from the file)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        raise ConfigError(f"ckpt_path={path} cannot be loaded weights-only ({type(e).__name__}: "
                          f"{str(e).splitlines()[0]}); it is corrupt or not a checkpoint of this suite") from None
    if not isinstance(checkpoint, dict) or "rnn_bench" not in checkpoint:
        raise ConfigError(f"ckpt_path={path} is not a checkpoint written by rnn-bench (no 'rnn_bench' entry)")
    return checkpoint


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}").items()}
    return {prefix: value}


def check_compatible(path: str | Path, run_config: dict) -> None:
    """Refuse to resume from a checkpoint of another architecture or task, naming each setting that differs."""
    saved = load(path)["rnn_bench"]["config"]

    def architecture(config: dict) -> dict[str, Any]:
        flat = {k: v for key in ARCHITECTURE_KEYS for k, v in _flat(config.get(key), key).items()}
        # The task node repeats the stack and carries optimizer settings, which may change on resume.
        return {k: v for k, v in flat.items() if not k.startswith(IGNORED)}

    a, b = architecture(saved), architecture(run_config)
    diffs = [f"{k}: checkpoint {a.get(k)!r}, this run {b.get(k)!r}" for k in sorted(set(a) | set(b))
             if a.get(k) != b.get(k)]
    if diffs:
        raise ConfigError(f"ckpt_path={path} was trained with another configuration:\n  " + "\n  ".join(diffs)
                          + "\nResume with the checkpoint's settings, or start afresh without ckpt_path")
