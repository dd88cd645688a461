"""Language models: the next token at every step of a stream; perplexity (word) or bits per character (char),
and sampling from the trained model (python -m src.generate)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from src.common.errors import UserError
from src.common.files import atomic_write_json
from src.data.tokens import PAD_ID
from src.tasks.steps import StepClassifier


class LanguageModel(StepClassifier):
    """A StepClassifier over a token stream. `level` ("word" or "char", from the data set) chooses the extra
    metric: `ppl` = exp(loss) for words, `bpc` = loss / ln 2 for characters (the loss is in nats per token)."""

    kind = "language_model"
    metric_names = ("loss", "acc")  # no exact_match: a row of a stream is a window of text, not a sequence

    def __init__(self, level: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.level = level
        # vocab, level, tokenizer: stored in checkpoints for src.generate
        self.generation: dict = dict(self.spec.generation or {})

    def eval_values(self, split: str) -> dict[str, torch.Tensor]:
        values = super().eval_values(split)
        loss = values[f"{split}/loss"]
        if self.level == "char":
            values[f"{split}/bpc"] = loss / math.log(2)
        else:
            values[f"{split}/ppl"] = torch.exp(loss)
        return values

    # -- the vocabulary travels with the run -----------------------------------------------------------------
    def write_files(self, stage: str, out: Path, loggers: list) -> None:
        super().write_files(stage, out, loggers)
        if stage == "fit" and self.spec.generation:
            atomic_write_json(out / "vocab.json", self.spec.generation)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["rnn_bench"]["generation"] = self.generation

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.generation = checkpoint.get("rnn_bench", {}).get("generation", {})

    # -- sampling --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        prompt: list[int],
        length: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        banned: tuple[int, ...] = (PAD_ID,),
        top_p: float = 1.0,
    ) -> list[int]:
        """Read `prompt` (ids), then draw `length` tokens one at a time, each fed back in with the carried
        state. temperature 0 takes the most likely token; top_k keeps only the k most likely; top_p < 1 only
        the nucleus (`nucleus`); `banned` ids (padding) are never drawn."""
        if not prompt:
            raise UserError("the prompt has no tokens to start from")
        self.eval()
        outputs, state = self.encode(torch.tensor([prompt], device=self.device))
        drawn = []
        for _ in range(length):
            logits = self.head(outputs[:, -1:], None)[0, -1].float()
            logits[list(banned)] = -math.inf
            if temperature <= 0:
                token = int(logits.argmax())
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, len(logits))).values[-1]
                    logits[logits < kth] = -math.inf
                if top_p < 1:
                    logits = nucleus(logits, top_p)
                token = int(torch.multinomial(torch.softmax(logits, -1).cpu(), 1, generator=generator))
            drawn.append(token)
            outputs, state = self.encode(torch.tensor([[token]], device=self.device), None, state)
        return drawn


def nucleus(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """`logits` (one row) with every token outside the nucleus set to -inf: the nucleus is the smallest set of
    the most likely tokens whose probabilities sum to at least top_p (Holtzman et al. 2020, "The Curious Case
    of Neural Text Degeneration"). The most likely token is always kept."""
    probs = torch.softmax(logits, -1)
    ordered, order = probs.sort(descending=True)
    before = ordered.cumsum(-1) - ordered  # the probability of the tokens more likely than each
    out = logits.clone()
    out[order[before >= top_p]] = -math.inf
    return out
