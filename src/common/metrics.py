"""Which way a metric improves, read off its name: one rule for the task's monitor check and the leaderboard."""

from __future__ import annotations

LOWER_IS_BETTER = frozenset({"loss", "mse", "mae", "rmse", "ppl", "perplexity", "bpc", "nll", "error", "cer", "wer"})
HIGHER_IS_BETTER = frozenset({"acc", "accuracy", "f1", "exact_match"})


def better(metric: str) -> str | None:
    """ "min" or "max" for a metric name (`test/rollout_mse`, `val/acc`, `exact_match`), from the words of its last
    part (split at `_`; `exact_match` is one word); None where the name does not say."""
    name = metric.rsplit("/", 1)[-1].lower()
    if name in HIGHER_IS_BETTER:
        return "max"
    words = set(name.split("_"))
    if words & LOWER_IS_BETTER:
        return "min"
    if words & HIGHER_IS_BETTER or "exact_match" in name:
        return "max"
    return None
