"""Prediction heads, one class per head *type*, built from a small registry."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

IGNORE_INDEX = -100


class Head(nn.Module):
    """Dropout + linear layer over the encoder output; knows its own loss.

    ``reads`` says which encoder output the head takes: ``pooled`` (one vector per example)
    or ``tokens`` (one vector per sub-word).
    """

    reads: ClassVar[str] = "pooled"

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(self.dropout(features))

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ClassificationHead(Head):
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels.long())


class MultilabelHead(Head):
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class RegressionHead(Head):
    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__(hidden_size, 1, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.float(), labels.float())


class TaggingHead(Head):
    reads = "tokens"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # A batch whose words were all truncated has no labelled position: cross_entropy
        # would return NaN (0/0), so return a zero that still depends on the logits.
        if not bool((labels != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.float().flatten(0, 1), labels.long().flatten(), ignore_index=IGNORE_INDEX
        )


HEAD_TYPES: dict[str, type[Head]] = {
    "classification": ClassificationHead,
    "multilabel": MultilabelHead,
    "regression": RegressionHead,
    "tagging": TaggingHead,
}


def build_head(head_type: str, hidden_size: int, num_labels: int, dropout: float) -> Head:
    """Build a head by type name (``classification``, ``multilabel``, ...)."""
    try:
        cls = HEAD_TYPES[head_type]
    except KeyError:
        raise ValueError(f"unknown head type {head_type!r}; known: {sorted(HEAD_TYPES)}") from None
    return cls(hidden_size, num_labels, dropout)
