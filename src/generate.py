"""python -m src.generate ckpt=<run dir or .ckpt> prompt="..." length=200 num_samples=1 temperature=1.0 top_k=0
top_p=1.0 seed=0 device=cpu

Sample text from a trained language model (any run of dataset=lm_*). The options, their defaults and what they
mean are in conf/generate.yaml (`--help` prints them); Hydra composes them like the other commands' configs.
The checkpoint holds everything needed: the run's resolved config (to rebuild the model), the vocabulary, the
level and the tokenizer. The same checkpoint, options and seed always give the same text (on the CPU).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.common import allocator
from src.common.errors import ConfigError, UserError, not_there
from src.common.paths import CONF_DIR
from src.runs import commands

# torch and the model's modules are imported where they are used, so that `--help` and a bad option answer
# without loading them.
if TYPE_CHECKING:
    from src.tasks.language_model import LanguageModel

CONFIG = CONF_DIR / "generate.yaml"
OPTIONS = tuple(k for k in OmegaConf.load(CONFIG) if k not in ("defaults", "hydra"))


def _int(cfg: DictConfig, key: str, least: int) -> int:
    value = cfg[key]
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ConfigError(f"{key}={value!r} must be an integer >= {least}")
    return value


def _number(cfg: DictConfig, key: str, low: float, high: float = math.inf, low_open: bool = False) -> float:
    value = cfg[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < low or (low_open and value == low) or value > high:
        allowed = f"{'>' if low_open else '>='} {low:g}" + (f" and <= {high:g}" if high < math.inf else "")
        raise ConfigError(f"{key}={value!r} must be a finite number {allowed}")
    return float(value)


def check_options(cfg: DictConfig) -> dict[str, Any]:
    """The options as generate() takes them, each checked: a bad value is one ConfigError naming it."""
    if not cfg.ckpt:
        raise ConfigError(
            "ckpt=<run dir or checkpoint of a language model> is required, e.g. ckpt=outputs/runs/<date>/<time> "
            "or ckpt=outputs/runs/<date>/<time>/checkpoints/best.ckpt"
        )
    return {
        "ckpt": str(cfg.ckpt),
        "prompt": "" if cfg.prompt is None else str(cfg.prompt),  # prompt=1984 arrives as an int
        "length": _int(cfg, "length", 0),
        "num_samples": _int(cfg, "num_samples", 1),
        "temperature": _number(cfg, "temperature", 0),
        "top_k": _int(cfg, "top_k", 0),
        "top_p": _number(cfg, "top_p", 0, 1, low_open=True),
        "seed": _int(cfg, "seed", -(2**63)),
        "device": check_device(cfg.device),
    }


def check_device(name: Any) -> str:
    """`device` as torch names it: cpu, cuda, cuda:<index>, or auto (cuda when torch sees a GPU, else cpu)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError):
        raise ConfigError(f"device={name!r} is not a device; use cpu, cuda, cuda:<index> or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= count:
            raise ConfigError(
                f"device={name} but torch sees {count} CUDA GPU(s) on this machine; use device=cpu or device=auto"
            )
    elif device.type != "cpu":
        raise ConfigError(f"device={name!r}: generation runs on cpu or cuda; use cpu, cuda, cuda:<index> or auto")
    return str(device)


def checkpoint_path(path: str | Path) -> Path:
    """The checkpoint `ckpt` names: a .ckpt file as it is, a run dir's checkpoints/best.ckpt, else its
    checkpoints/last.ckpt."""
    path = Path(path).expanduser()
    if not path.is_dir():
        if path.exists() and not path.is_file():  # /dev/null, a FIFO: not "no such file"
            raise ConfigError(f"ckpt={path} {not_there(path)}; give a language model's run dir or its .ckpt file")
        return path
    for name in ("best.ckpt", "last.ckpt"):
        if (path / "checkpoints" / name).is_file():
            return path / "checkpoints" / name
    raise ConfigError(
        f"ckpt={path} is a directory with no checkpoints/best.ckpt or checkpoints/last.ckpt; give the run dir of "
        f"a language model trained with checkpoints (callbacks=default), or a .ckpt file"
    )


def load_language_model(path: str | Path, device: str = "cpu") -> LanguageModel:
    """The language model a checkpoint of src.train holds (`path`: the file or its run dir), rebuilt from the
    suite's own classes only, on `device`."""
    from src.records.checkpoints import load as load_checkpoint
    from src.records.checkpoints import load_weights, stored_spec
    from src.records.rebuild import rebuild
    from src.tasks.language_model import LanguageModel

    allocator.start_up_done()  # as a run's build does (src/runs/build.py): before the checkpoint is loaded
    source = f"ckpt={path}"
    checkpoint = load_checkpoint(checkpoint_path(path), source)
    meta = checkpoint["rnn_bench"]
    spec = stored_spec(meta, source)
    if spec.task != "language_model" or not meta.get("generation"):
        raise UserError(
            f"{source} is a checkpoint of a {spec.task!r} task; src.generate samples from language "
            f"models only (dataset=lm_kjv, lm_tang, lm_pd or lm_text)"
        )
    config = meta.get("config")
    task = config.get("task") if isinstance(config, dict) else None
    model = rebuild(task, source, spec=spec, _convert_="object")
    if not isinstance(model, LanguageModel):
        raise UserError(f"{source}: its stored task is a {type(model).__name__}, not a language model")
    load_weights(model, checkpoint.get("state_dict"), source)
    model.generation = check_generation(meta["generation"], source)
    return model.to(device).eval()


def check_generation(info: Any, source: str) -> dict:
    """What sampling reads from the checkpoint: a vocabulary of strings (as the text pipeline's Vocabulary
    stores it), the level and the tokenizer."""
    from src.data.lm_text import WORD_TOKENIZERS
    from src.data.text_pipeline import Vocabulary

    malformed = UserError(
        f"{source}: its generation entry (vocab, level, tokenizer) is malformed; the file was not "
        f"written by src.train or was edited"
    )
    if (
        not isinstance(info, dict)
        or not isinstance(info.get("vocab"), list)
        or not all(isinstance(t, str) for t in info["vocab"])
        or info.get("level") not in ("char", "word")
        or (info["level"] == "word" and info.get("tokenizer") not in WORD_TOKENIZERS)
    ):
        raise malformed
    try:
        Vocabulary(info["vocab"])
    except UserError:
        raise malformed from None
    return info


def prompt_tokens(prompt: str, level: str, name: str) -> list[str]:
    """The prompt as the corpus was tokenized, after an end of line, so the model starts at a line's start."""
    from src.data.text_pipeline import clean, tokenizer
    from src.data.tokens import EOS

    prompt = clean(prompt)
    if level == "char":
        return ["\n", *prompt]
    tokens = [EOS]
    for i, line in enumerate(prompt.split("\n")):
        tokens += ([EOS] if i else []) + tokenizer(name)(line)
    return tokens


def generate(
    model: LanguageModel,
    prompt: str = "",
    length: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    top_p: float = 1.0,
) -> str:
    """The prompt followed by `length` sampled tokens, as text."""
    import torch

    from src.data.lm_text import detokenize
    from src.data.text_pipeline import Vocabulary
    from src.data.tokens import UNK

    info = model.generation
    vocab, level = Vocabulary(info["vocab"]), info["level"]
    tokens = prompt_tokens(prompt, level, info["tokenizer"])
    unknown = [t for t in tokens[1:] if t not in vocab]
    if tokens[1:] and len(unknown) == len(tokens) - 1:
        raise UserError(
            f"prompt={prompt!r}: none of its tokens is in the model's vocabulary ({len(vocab)} "
            f"{'characters' if level == 'char' else 'words'}, e.g. {' '.join(vocab[3:13])}); "
            f"write it in the corpus' language and script"
        )
    if unknown:
        print(
            f"warning: {len(unknown)} prompt token(s) unknown to the model, read as {UNK}: "
            f"{' '.join(sorted(set(unknown))[:10])}",
            file=sys.stderr,
        )
    ids = vocab.encode(tokens)
    generator = torch.Generator().manual_seed(seed)
    drawn = model.sample(ids, length, temperature, top_k or None, generator, top_p=top_p)
    return prompt + ("" if level == "char" or not prompt else " ") + detokenize(vocab.decode(drawn), level)


def samples(model: LanguageModel, num_samples: int = 1, seed: int = 0, **options: Any) -> list[str]:
    """`num_samples` texts, sample i drawn with seed + i (so each is the text that seed gives alone)."""
    return [generate(model, seed=seed + i, **options) for i in range(num_samples)]


# An absolute config path: Hydra resolves a relative one from the calling module, which differs when main() is
# called from another module (the tests) instead of `python -m src.generate`.
@hydra.main(version_base="1.3", config_path=str(CONFIG.parent), config_name="generate")
def _main(cfg: DictConfig) -> None:
    commands.mark_started()
    try:
        options = check_options(cfg)
        model = load_language_model(options.pop("ckpt"), options.pop("device"))
        texts = samples(model, **options)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if len(texts) == 1:
        print(texts[0])
        return
    for i, text in enumerate(texts):
        if i:
            print()
        print(f"--- sample {i + 1} of {len(texts)} (seed {options['seed'] + i}) ---")
        print(text)


def main(argv: list[str] | None = None) -> None:
    """The command line (sys.argv[1:] by default): Hydra overrides of conf/generate.yaml."""
    argv = sys.argv[1:] if argv is None else list(argv)
    for arg in argv:
        key, eq, _ = arg.partition("=")
        key = key.lstrip("+~")
        if eq and not key.startswith("hydra") and key not in OPTIONS:
            print(f"error: unknown argument {arg!r}; the options are {', '.join(OPTIONS)} (--help)", file=sys.stderr)
            sys.exit(2)
    saved = sys.argv
    sys.argv = [saved[0] if saved else "src.generate", *argv]
    try:
        commands.run(_main)
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
