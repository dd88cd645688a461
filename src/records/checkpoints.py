"""Checkpoints: written atomically, verified before anything is read from them (the zip's CRC of every member),
loaded weights-only, and checked against the run before resuming or testing."""

from __future__ import annotations

import zipfile
import zlib
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
    """torch.save to a temporary file, then rename: a crash never leaves a truncated .ckpt behind. Neither the file
    nor its folder (a run dir's checkpoints/) may be a symbolic link: a write never goes out of the run dir."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options: Any | None = None) -> None:
        path = Path(path)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp), within=path.parent.parent)

    def load_checkpoint(self, path, *args: Any, **kwargs: Any) -> dict:
        """Lightning reads every checkpoint through here (the one it resumes from, the one it tests): verified
        first, so a damaged file is refused before a byte of it is used."""
        verify(path, f"checkpoint {path}")
        return super().load_checkpoint(path, *args, **kwargs)


def verify(path: str | Path, source: str) -> None:
    """ConfigError if the checkpoint at `path` changed after it was written: torch.save writes a zip whose
    members each carry a CRC-32 that torch.load never checks (a flipped byte in the weights loads as another
    number). Each member is read and checked (zipfile.testzip). A file that is not a zip at all is left to
    torch.load's own refusal."""
    if not zipfile.is_zipfile(path):
        return
    damaged = "; nothing was read from it. Restore it from a copy, use another checkpoint of the run, or train afresh"
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as e:
        raise ConfigError(f"{source} is damaged (its zip structure is broken: {e})" + damaged) from None
    if bad is not None:
        member = bad.split("/", 1)[-1]  # torch.save puts every member under a folder named for the file
        raise ConfigError(
            f"{source} is damaged (its {member} fails the zip's CRC check: it changed after it was written)" + damaged
        )


def load(path: str | Path, source: str | None = None) -> dict:
    """A checkpoint of this suite, loaded weights-only (no arbitrary code from the file). `source` names the
    setting that gave the path in messages (default `ckpt_path=<path>`)."""
    path = Path(path)
    source = source or f"ckpt_path={path}"
    if path.is_dir():
        raise ConfigError(f"{source} is a directory; give the checkpoint file, e.g. {path}/checkpoints/best.ckpt")
    if not path.is_file():
        raise ConfigError(f"{source}: no such file")
    verify(path, source)
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


# What makes a checkpoint this run's, beyond its architecture: the seed (a checkpoint of another seed is another
# run's result) and, when resuming, the optimizer, whose restored state would override the config's (an lr given on
# resume was silently ignored; another optimizer class failed inside torch on the restored state).
IDENTITY_KEYS = ("seed",)
RESUME_KEYS = ("optimizer",)
OPTIMIZERS = Path(__file__).resolve().parents[2] / "conf" / "optimizer"


def _override(key: str, value: Any) -> str:
    """The override that gives `key` the value `value` (an optimizer class as its config group's option)."""
    if key == "optimizer._target_":
        from omegaconf import OmegaConf

        for option in sorted(OPTIMIZERS.glob("*.yaml")):
            if OmegaConf.load(option).get("_target_") == value:
                return f"optimizer={option.stem}"
    return f"{key}={value}"


def _shown(value: Any) -> Any:
    return value.rsplit(".", 1)[-1] if isinstance(value, str) and value.startswith("torch.") else value


def check_compatible(path: str | Path, run_config: dict, resuming: bool = True) -> None:
    """Refuse a checkpoint of another architecture or task, naming each setting that differs; then one of another
    run (another seed; when resuming, other optimizer settings), naming the settings to use."""
    saved = load(path)["rnn_bench"]["config"]

    def architecture(config: dict) -> dict[str, Any]:
        flat = {k: v for key in ARCHITECTURE_KEYS for k, v in _flat(config.get(key), key).items()}
        # The task node repeats the stack and carries optimizer settings, which may change on resume.
        return {k: v for k, v in flat.items() if not k.startswith(IGNORED)}

    def differ(a: dict, b: dict) -> list[str]:
        return [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]

    a, b = architecture(saved), architecture(run_config)
    if any(config.get(f"model.{k}") is not None for config in (a, b) for k in ("params", "state")):
        a, b = ({k: v for k, v in c.items() if k not in SIZED} for c in (a, b))
    if diffs := differ(a, b):
        raise ConfigError(
            f"ckpt_path={path} was trained with another configuration: "
            + "; ".join(f"{k}: checkpoint {a.get(k)!r}, this run {b.get(k)!r}" for k in diffs)
            + ". Resume with the checkpoint's settings, or start afresh without ckpt_path"
        )

    def identity(config: dict) -> dict[str, Any]:
        keys = IDENTITY_KEYS + (RESUME_KEYS if resuming else ())
        return {k: v for key in keys for k, v in _flat(config.get(key), key).items()}

    a, b = identity(saved), identity(run_config)
    diffs = differ(a, b)
    if "optimizer._target_" in diffs:  # another class: its other settings follow from it
        diffs = [k for k in diffs if not k.startswith("optimizer.") or k == "optimizer._target_"]
    if diffs:
        use = " ".join(_override(k, a[k]) for k in diffs if k in a)
        raise ConfigError(
            f"ckpt_path={path} belongs to another run: "
            + "; ".join(f"{k}: checkpoint {_shown(a.get(k))}, this run {_shown(b.get(k))}" for k in diffs)
            + f". To {'resume' if resuming else 'evaluate'} it, use its settings ({use}); to start a new run with "
            f"these settings, drop ckpt_path and choose a new dir (hydra.run.dir=<new dir>)"
        )
