"""A tokenised split in memory, and dynamic-padding collation into tensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from multitask_bert.heads import HeadType, build_head_type
from multitask_bert.tasks import TaskSpec


@dataclass
class Batch:
    """One collated batch of one task."""

    task: str
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor
    labels: dict[str, torch.Tensor]
    indices: list[int]
    """Rows of the dataset in this batch (evaluation looks up word-level gold with them)."""
    real_tokens: int = 0
    """Non-pad tokens: what throughput counts."""
    lengths: list[int] = field(default_factory=list)
    """Real length of each row (FLOPs per row for MFU)."""
    word_shapes: torch.Tensor | None = None
    """Shape id of each word on its first sub-word, 0 elsewhere (tasks with ``word_shape``)."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            task=self.task,
            input_ids=move(self.input_ids),
            attention_mask=move(self.attention_mask),
            token_type_ids=move(self.token_type_ids),
            labels={k: move(v) for k, v in self.labels.items()},
            indices=self.indices,
            real_tokens=self.real_tokens,
            lengths=self.lengths,
            word_shapes=None if self.word_shapes is None else move(self.word_shapes),
        )

    def pin_memory(self) -> Batch:
        return Batch(
            task=self.task,
            input_ids=self.input_ids.pin_memory(),
            attention_mask=self.attention_mask.pin_memory(),
            token_type_ids=self.token_type_ids.pin_memory(),
            labels={k: v.pin_memory() for k, v in self.labels.items()},
            indices=self.indices,
            real_tokens=self.real_tokens,
            lengths=self.lengths,
            word_shapes=None if self.word_shapes is None else self.word_shapes.pin_memory(),
        )

    @property
    def padded_tokens(self) -> int:
        return int(self.input_ids.numel())


@dataclass
class TaskDataset:
    """The columns of one tokenised split (the Parquet written by ``tokenize_and_cache``)."""

    task: TaskSpec
    label_vocab: dict[str, list[str]]
    columns: dict[str, list[Any]]
    split: str = "train"
    pad_token_id: int = 0
    pad_to_multiple_of: int = 8
    _lengths: list[int] = field(default_factory=list, repr=False)
    heads: dict[str, HeadType] = field(default_factory=dict, init=False, repr=False)
    """The head type of every head, bound to its vocabulary."""
    fingerprint: str | None = field(default=None, init=False)
    """The cache entry's data fingerprint, when loaded from the cache."""

    def __post_init__(self) -> None:
        self._lengths = [int(x) for x in self.columns["length"]]
        self.heads = {h.name: build_head_type(h, self.label_vocab.get(h.name))
                      for h in self.task.heads}

    @classmethod
    def from_parquet(
        cls,
        path: str | Path,
        task: TaskSpec,
        label_vocab: dict[str, list[str]],
        split: str = "train",
        pad_token_id: int = 0,
        pad_to_multiple_of: int = 8,
    ) -> TaskDataset:
        table = pq.read_table(str(path))
        columns = {name: table.column(name).to_pylist() for name in table.column_names}
        return cls(task, label_vocab, columns, split, pad_token_id, pad_to_multiple_of)

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def identity(self) -> str:
        """What identifies the data: the cache fingerprint, else its size and token count."""
        return self.fingerprint or f"rows:{len(self)}:{sum(self._lengths)}"

    @property
    def lengths(self) -> list[int]:
        return self._lengths

    def collate(self, indices: list[int]) -> Batch:
        """Pad the rows to the longest (rounded up to ``pad_to_multiple_of``)."""
        lengths = [self._lengths[i] for i in indices]
        width = max(lengths)
        multiple = self.pad_to_multiple_of
        width = -(-width // multiple) * multiple
        n = len(indices)
        input_ids = torch.full((n, width), self.pad_token_id, dtype=torch.long)
        token_type_ids = torch.zeros((n, width), dtype=torch.long)
        ids_col = self.columns["input_ids"]
        types_col = self.columns.get("token_type_ids")
        for row, i in enumerate(indices):
            input_ids[row, : lengths[row]] = torch.tensor(ids_col[i], dtype=torch.long)
            if types_col is not None:
                token_type_ids[row, : lengths[row]] = torch.tensor(types_col[i], dtype=torch.long)
        attention_mask = (
            torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
        ).long()
        labels: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            column = self.columns.get(head.column)
            if column is not None:
                labels[name] = head.collate([column[i] for i in indices], width)
        word_shapes = None
        shape_col = self.columns.get("word_shape")
        if shape_col is not None:
            word_shapes = torch.zeros((n, width), dtype=torch.long)
            for row, i in enumerate(indices):
                word_shapes[row, : lengths[row]] = torch.tensor(shape_col[i], dtype=torch.long)
        return Batch(
            task=self.task.name,
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            labels=labels,
            indices=list(indices),
            real_tokens=sum(lengths),
            lengths=lengths,
            word_shapes=word_shapes,
        )
