"""python -m src.generate ckpt=<path> prompt="..." length=200 temperature=0.8 top_k=0 seed=0

Sample text from a trained language-model checkpoint (any run of dataset=lm_*: <run dir>/checkpoints/best.ckpt).
The checkpoint holds everything needed: the run's resolved config (to rebuild the model), the vocabulary, the
level and the tokenizer. The same checkpoint, prompt and seed always give the same text (on the CPU).

  prompt       text to start from (tokenized as the corpus was; unknown tokens read as <unk>); empty: start
               a new line
  length       tokens to draw (characters at char level, words at word level)
  temperature  divides the logits: < 1 is more conservative, > 1 more random; 0 takes the most likely token
  top_k        draw only from the k most likely tokens (0: all)
  seed         the random draws
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from src.checkpoints import load as load_checkpoint
from src.checkpoints import load_weights, stored_spec
from src.data.lm_text import WORD_TOKENIZERS, detokenize
from src.data.text_pipeline import EOS, UNK, Vocabulary, clean, tokenizer
from src.errors import ConfigError, UserError
from src.rebuild import rebuild
from src.tasks.language_model import LanguageModel

DEFAULTS: dict[str, Any] = {"ckpt": "", "prompt": "", "length": 200, "temperature": 1.0, "top_k": 0, "seed": 0}


def parse_args(argv: list[str]) -> dict[str, Any]:
    """key=value arguments (as Hydra overrides), typed like DEFAULTS."""
    args = dict(DEFAULTS)
    for arg in argv:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+")
        if not eq or key not in DEFAULTS:
            raise ConfigError(f"unknown argument {arg!r}; expected key=value with key one of {', '.join(DEFAULTS)}")
        try:
            args[key] = type(DEFAULTS[key])(value)
        except ValueError:
            raise ConfigError(f"{key}={value!r} must be a {type(DEFAULTS[key]).__name__}") from None
    if not args["ckpt"]:
        raise ConfigError(
            "ckpt=<path to a language model's checkpoint> is required, e.g. "
            "ckpt=outputs/runs/<date>/<time>/checkpoints/best.ckpt"
        )
    for key in ("length", "top_k", "temperature"):
        if not args[key] >= 0 or args[key] == float("inf"):  # `not >=` also catches nan
            raise ConfigError(f"{key}={args[key]!r} must be a finite number >= 0")
    return args


def load_language_model(path: str | Path) -> LanguageModel:
    """The language model a checkpoint of src.train holds, rebuilt from the suite's own classes only."""
    source = f"ckpt={path}"
    checkpoint = load_checkpoint(Path(path).expanduser(), source)
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
    return model.eval()


def check_generation(info: Any, source: str) -> dict:
    """What sampling reads from the checkpoint: a vocabulary of strings (as the text pipeline's Vocabulary
    stores it), the level and the tokenizer."""
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
    prompt = clean(prompt)
    if level == "char":
        return ["\n", *prompt]
    tokens = [EOS]
    for i, line in enumerate(prompt.split("\n")):
        tokens += ([EOS] if i else []) + tokenizer(name)(line)
    return tokens


def generate(
    model: LanguageModel, prompt: str = "", length: int = 200, temperature: float = 1.0, top_k: int = 0, seed: int = 0
) -> str:
    """The prompt followed by `length` sampled tokens, as text."""
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
    drawn = model.sample(ids, length, temperature, top_k or None, generator)
    return prompt + ("" if level == "char" or not prompt else " ") + detokenize(vocab.decode(drawn), level)


def main(argv: list[str]) -> None:
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    try:
        args = parse_args(argv)
        model = load_language_model(args.pop("ckpt"))
        print(generate(model, **args))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
