"""Evaluation over stream data: the recurrent state is carried from one batch to the next.

Stream data (src/data/streams.py; the spec says `stream`) is cut into rows that continue from one batch to the
next, so evaluation reads each row straight through, from a zero state at the start of every evaluation, as
word_language_model's `evaluate` does. Other data start every batch from zero.
"""

from __future__ import annotations

from typing import Any

import torch

from src.data.tensors import Batch
from src.models.stack import detach_state


class StreamEval:
    _eval_state: Any = None

    def eval_outputs(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        """The stack's outputs for an evaluation batch, continuing the previous batch's state on streams."""
        stream = self.spec.stream
        state = self._eval_state if stream and batch_idx > 0 else None
        outputs, state = self.encode(batch.x, batch.lengths, state)
        self._eval_state = detach_state(state) if stream else None
        return outputs
