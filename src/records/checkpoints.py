"""Checkpoints: written atomically, loaded weights-only, and checked against the run before resuming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from src.common.errors import ConfigError
from src.common.files import atomic_write
from src.data.tensors import DataSpec

# What fixes the shapes and meaning of the weights: a checkpoint must agree on these to be resumed.
ARCHITECTURE_KEYS = ("task", "dataset", "cell", "depth", "direction", "stack", "model")
# Chosen by model.params / model.state (src/models/sizing.py): a run asking for the same size derives them again.
SIZED = ("cell.hidden_size", "cell.proj_size")
IGNORED = (
    "task.stack",
    "task.optimizer",
    "task.scheduler",
    "stack.cell",
    "stack.depth",
    "stack.bidirectional",
    "dataset.cache_dir",
    "dataset.data_dir",
    "dataset.batch_size",
    "dataset.eval_batch_size",
    "dataset.shuffle_seed",
    "dataset.download",
    "dataset.on_device",
    "dataset.max_device_bytes",
)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save to a temporary file, then rename: a crash never leaves a truncated .ckpt behind."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any | None = None) -> None:
        atomic_write(Path(path), lambda tmp: torch.save(checkpoint, tmp))


def load(path: str | Path, source: str | None = None) -> dict:
    """A checkpoint of this suite, loaded weights-only (no arbitrary code from the file). `source` names the
    setting that gave the path in messages (default `ckpt_path=<path>`)."""
    path = Path(path)
    source = source or f"ckpt_path={path}"
    if path.is_dir():
        raise ConfigError(f"{source} is a directory; give the checkpoint file, e.g. {path}/checkpoints/best.ckpt")
    if not path.is_file():
        raise ConfigError(f"{source}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: torch raises many kinds (unpickling, zip, EOF, OS)
        raise ConfigError(
            f"{source} cannot be loaded weights-only ({type(e).__name__}: "
            f"{(str(e).splitlines() or [''])[0]}); it is corrupt or not a checkpoint of this suite"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("rnn_bench"), dict):
        raise ConfigError(f"{source} is not a checkpoint written by rnn-bench (no 'rnn_bench' entry)")
    meta = checkpoint["rnn_bench"]
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("spec"), dict):
        raise ConfigError(
            f"{source}: its 'rnn_bench' entry lacks the stored config or data spec; the file was "
            f"not written by src.train or was edited"
        )
    return checkpoint


def stored_spec(meta: dict, source: str) -> DataSpec:
    """The DataSpec a checkpoint stored (its shape fields), checked field by field; keys of older checkpoints
    (seq_len, the path of prepared vectors) are ignored: the weights come from the checkpoint."""
    stored = meta["spec"]
    kinds = {"task": str, "input_kind": str, "input_size": int, "num_classes": int}
    for key, kind in kinds.items():
        value = stored.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is int and value < 0):
            raise ConfigError(
                f"{source}: stored spec.{key}={value!r} is not a valid {kind.__name__}; the file "
                f"was not written by src.train or was edited"
            )
    return DataSpec(**{k: stored[k] for k in kinds})


def load_weights(model: torch.nn.Module, state_dict: Any, source: str) -> None:
    """The checkpoint's weights into `model`; a missing, extra or misshapen tensor is one message."""
    if not isinstance(state_dict, dict):
        raise ConfigError(f"{source} holds no state_dict; it is not a checkpoint of src.train")
    try:
        model.load_state_dict(state_dict)
    except RuntimeError as e:
        raise ConfigError(
            f"{source}: its weights do not fit the stored model "
            f"({str(e).splitlines()[0]}); the file was edited or is damaged"
        ) from None


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
    if any(config.get(f"model.{k}") is not None for config in (a, b) for k in ("params", "state")):
        a, b = ({k: v for k, v in c.items() if k not in SIZED} for c in (a, b))
    diffs = [
        f"{k}: checkpoint {a.get(k)!r}, this run {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    ]
    if diffs:
        raise ConfigError(
            f"ckpt_path={path} was trained with another configuration: "
            + "; ".join(diffs)
            + ". Resume with the checkpoint's settings, or start afresh without ckpt_path"
        )
