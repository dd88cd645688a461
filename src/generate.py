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
from hydra.utils import instantiate

from src.data.tensors import DataSpec
from src.data.lm_text import EOS, UNK, WORD_TOKENIZERS, detokenize
from src.errors import ConfigError, UserError
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
        raise ConfigError("ckpt=<path to a language model's checkpoint> is required, e.g. "
                          "ckpt=outputs/runs/<date>/<time>/checkpoints/best.ckpt")
    if args["length"] < 0 or args["top_k"] < 0 or args["temperature"] < 0:
        raise ConfigError("length, top_k and temperature must be >= 0")
    return args


def load_language_model(path: str | Path) -> LanguageModel:
    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a corrupt or foreign file: torch raises many kinds
        raise UserError(f"ckpt={path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    meta = checkpoint.get("rnn_bench") if isinstance(checkpoint, dict) else None
    if not meta:
        raise UserError(f"ckpt={path} is not a checkpoint written by rnn-bench's src.train")
    spec = DataSpec(**meta["spec"])
    if spec.task != "language_model" or not meta.get("generation"):
        dataset = meta.get("config", {}).get("dataset", {}).get("_target_", "?")
        raise UserError(f"ckpt={path} is a checkpoint of a {spec.task!r} task (data set {dataset}); src.generate "
                        f"samples from language models only (dataset=lm_kjv, lm_tang, lm_pd or lm_text)")
    model = instantiate(meta["config"]["task"], spec=spec, _convert_="object")
    model.load_state_dict(checkpoint["state_dict"])
    model.generation = meta["generation"]
    return model.eval()


def prompt_tokens(prompt: str, level: str, tokenizer: str) -> list[str]:
    """The prompt as the corpus was tokenized, after an end of line, so the model starts at a line's start."""
    if level == "char":
        return ["\n", *prompt]
    tokens = [EOS]
    for i, line in enumerate(prompt.split("\n")):
        tokens += ([EOS] if i else []) + WORD_TOKENIZERS[tokenizer](line)
    return tokens


def generate(model: LanguageModel, prompt: str = "", length: int = 200, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0) -> str:
    """The prompt followed by `length` sampled tokens, as text."""
    info = model.generation
    vocab, level = info["vocab"], info["level"]
    index = {t: i for i, t in enumerate(vocab)}
    tokens = prompt_tokens(prompt, level, info["tokenizer"])
    unknown = [t for t in tokens[1:] if t not in index]
    if tokens[1:] and len(unknown) == len(tokens) - 1:
        raise UserError(f"prompt={prompt!r}: none of its tokens is in the model's vocabulary ({len(vocab)} "
                        f"{'characters' if level == 'char' else 'words'}, e.g. {' '.join(vocab[3:13])}); "
                        f"write it in the corpus' language and script")
    if unknown:
        print(f"warning: {len(unknown)} prompt token(s) unknown to the model, read as {UNK}: "
              f"{' '.join(sorted(set(unknown))[:10])}", file=sys.stderr)
    ids = [index.get(t, index[UNK]) for t in tokens]
    generator = torch.Generator().manual_seed(seed)
    drawn = model.sample(ids, length, temperature, top_k or None, generator)
    return prompt + ("" if level == "char" or not prompt else " ") + detokenize([vocab[i] for i in drawn], level)


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
