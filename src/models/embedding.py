"""The token encoder: an embedding table, initialised at random or from vectors the data module prepared
(embedding=word2vec|pretrained, handed over as TextSpec.vectors), trained with the model or frozen."""

from __future__ import annotations

import torch
from torch import nn

from src.common.errors import ConfigError
from src.common.files import load_npz
from src.data.tensors import DataSpec
from src.data.tokens import PAD_ID


def token_embedding(spec: DataSpec, dim: int, freeze: bool = False) -> nn.Embedding:
    if not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"task.embedding_dim={dim!r} must be a positive integer")
    path = getattr(spec, "vectors", "")
    if not path:
        embedding = nn.Embedding(spec.input_size, dim, padding_idx=PAD_ID)
    else:
        vectors = load_npz(path)["vectors"]
        if vectors.shape != (spec.input_size, dim):
            raise ConfigError(
                f"the prepared vectors {path} are {vectors.shape[0]} x {vectors.shape[1]} but the "
                f"model needs vocabulary {spec.input_size} x task.embedding_dim={dim}; leave "
                f"task.embedding_dim at ${{embedding.dim}} (or set both to {vectors.shape[1]})"
            )
        embedding = nn.Embedding.from_pretrained(torch.from_numpy(vectors).float(), freeze=freeze, padding_idx=PAD_ID)
    embedding.weight.requires_grad_(not freeze)
    return embedding
