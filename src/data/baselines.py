"""Trivial predictors, scored on the test split: what a model must beat to have learnt anything from its input.

Each is fitted on the training split only and logged as `test/baseline_<metric>` (src/tasks/base.py
on_test_epoch_end), under the names of the task's own metrics, so the comparison (src/compare) puts it beside them:

    classify        the training split's majority class (acc, macro f1), and its class frequencies as the
                    predicted distribution (loss: their cross-entropy on the test labels)
    tag             the most frequent tag of the training split at every token (acc, macro f1), the tag
                    frequencies as the distribution (loss)
    language model  the unigram model of the training split (add-one smoothed): loss, and ppl or bpc from it;
                    acc of always predicting its most frequent token
    seq2seq         the training split's target-token frequencies at every answer step: token acc and loss

Regression (the target's training mean, or persistence for forecasts) and the memory tasks (the most frequent
answer) define theirs in their data modules.
"""

from __future__ import annotations

import math

import torch
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score


def frequencies(labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Add-one smoothed class frequencies of `labels` (no class gets probability 0: the loss stays finite)."""
    counts = torch.bincount(labels.flatten().long(), minlength=classes)[:classes].double()
    return (counts + 1) / (counts.sum() + classes)


def constant_class(train: torch.Tensor, test: torch.Tensor, classes: int, ignore: int | None = None) -> dict:
    """The training split's most frequent class predicted for every test target; its frequencies as the predicted
    distribution. `ignore`: a target value that is no target (padding), left out of both."""
    train, test = train.flatten().long(), test.flatten().long()
    if ignore is not None:
        train, test = train[train != ignore], test[test != ignore]
    if not len(train) or not len(test):
        return {}
    prior = frequencies(train, classes)
    majority = int(prior.argmax())
    preds = torch.full_like(test, majority)
    return {
        "acc": float(multiclass_accuracy(preds, test, classes, average="micro")),
        "f1": float(multiclass_f1_score(preds, test, classes, average="macro")),
        "loss": float(-prior.log()[test].mean()),
    }


def unigram(train: torch.Tensor, test: torch.Tensor, vocab: int, level: str | None) -> dict:
    """A unigram language model of the training stream on the test stream's next tokens (every token after its
    first): loss in nats per token, ppl (words) or bpc (characters), and the most frequent token's acc."""
    prior = frequencies(train, vocab)
    targets = test.flatten().long()[1:]
    loss = float(-prior.log()[targets].mean())
    values = {"loss": loss, "acc": float((targets == prior.argmax()).double().mean())}
    values.update({"bpc": loss / math.log(2)} if level == "char" else {"ppl": math.exp(loss)})
    return values
