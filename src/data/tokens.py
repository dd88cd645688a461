"""Special tokens and ids that data sets and tasks agree on, defined once.

Every token vocabulary starts with `<pad>` at id 0: padding, never a real token (embeddings keep its vector at
zero, sampling never draws it). The text vocabularies (src/data/text.py, lm_text.py) put `<unk>` at id 1 for
tokens outside the vocabulary; the digit transduction (src/data/seq2seq.py) puts `<bos>` and `<eos>` at 1 and 2.
"""

from __future__ import annotations

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
PAD_ID = 0
UNK_ID = 1  # in the text vocabularies
IGNORE = -100  # a target step that counts for nothing: F.cross_entropy's and torchmetrics' ignore_index
