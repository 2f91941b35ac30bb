"""A tokenised split in memory, and its collation into tensors: padded to the longest row
(dynamic padding), or packed (the rows one after the other, no padding at all)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from multitask_bert.heads import HeadType, build_head_type
from multitask_bert.tasks import TaskSpec


@dataclass
class PackedRows:
    """Where the rows of a packed batch lie in its one sequence of ``total`` tokens.

    A packed batch holds its rows one after the other, without padding: ``input_ids`` is
    ``(1, total)``. Attention must stay within each row (``cu_seqlens``) and position ids
    restart at 0 in each row, so every token sees exactly what it sees in a padded batch.
    """

    cu_seqlens: torch.Tensor
    """``(rows + 1,)`` int32: row ``i`` holds tokens ``cu_seqlens[i]:cu_seqlens[i + 1]``."""
    position_ids: torch.Tensor
    """``(1, total)``: 0, 1, ... within each row."""
    row_ids: torch.Tensor
    """``(total,)``: the row of each token (per-row pooling, the block-diagonal mask)."""
    lengths: torch.Tensor
    """``(rows,)``: tokens of each row."""
    max_length: int
    """The longest row (varlen attention kernels take it as a Python int)."""
    min_length: int
    """The shortest row (jagged nested tensors take it, to avoid a device sync)."""

    def block_mask(self) -> torch.Tensor:
        """``(total, total)`` bool, True where two tokens are in the same row: the dense
        attention mask, built once per batch (every layer reads the same one). Kept as a
        plain attribute, not a field: copies (``to``, DDP's ``dataclasses.replace``) drop it."""
        mask = getattr(self, "_block_mask", None)
        if mask is None:
            mask = self.row_ids.unsqueeze(0) == self.row_ids.unsqueeze(1)
            self._block_mask = mask
        return mask

    @classmethod
    def from_lengths(cls, lengths: list[int]) -> PackedRows:
        sizes = torch.tensor(lengths, dtype=torch.long)
        cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
        cu_seqlens[1:] = torch.cumsum(sizes, 0)
        starts = torch.repeat_interleave(cu_seqlens[:-1].long(), sizes)
        position_ids = (torch.arange(int(sizes.sum())) - starts).unsqueeze(0)
        row_ids = torch.repeat_interleave(torch.arange(len(lengths)), sizes)
        return cls(cu_seqlens, position_ids, row_ids, sizes, max(lengths), min(lengths))

    @property
    def rows(self) -> int:
        return int(self.lengths.numel())

    def _map(self, fn: Any) -> PackedRows:
        return PackedRows(fn(self.cu_seqlens), fn(self.position_ids), fn(self.row_ids),
                          fn(self.lengths), self.max_length, self.min_length)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedRows:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedRows:
        return self._map(lambda t: t.pin_memory())

    def unpack(self, packed: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
        """``(1, total, ...)`` per-token values back to ``(rows, max_length, ...)``, ``fill``
        at the positions past each row's end (the layout of a padded batch)."""
        values = packed.reshape(packed.shape[1:]) if packed.shape[0] == 1 else packed
        out = values.new_full((self.rows, self.max_length, *values.shape[1:]), fill)
        out[self.row_ids, self.position_ids[0]] = values
        return out


@dataclass
class Batch:
    """One collated batch of one task: padded (``packing`` is None), or packed (``packing``
    says where each row lies; ``input_ids`` is ``(1, total tokens)``)."""

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
    packing: PackedRows | None = None
    """Set for a packed batch (no padding): where its rows lie in the one sequence."""

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return self._map(move, lambda p: p.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> Batch:
        return self._map(lambda t: t.pin_memory(), lambda p: p.pin_memory())

    def _map(self, fn: Any, packing_fn: Any) -> Batch:
        return Batch(
            task=self.task,
            input_ids=fn(self.input_ids),
            attention_mask=fn(self.attention_mask),
            token_type_ids=fn(self.token_type_ids),
            labels={k: fn(v) for k, v in self.labels.items()},
            indices=self.indices,
            real_tokens=self.real_tokens,
            lengths=self.lengths,
            word_shapes=None if self.word_shapes is None else fn(self.word_shapes),
            packing=None if self.packing is None else packing_fn(self.packing),
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

    def collate(self, indices: list[int], packed: bool = False) -> Batch:
        """Pad the rows to the longest (rounded up to ``pad_to_multiple_of``), or, with
        ``packed``, put them one after the other without padding (:class:`PackedRows`)."""
        if packed:
            return self.collate_packed(indices)
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

    def collate_packed(self, indices: list[int]) -> Batch:
        """The rows one after the other in one sequence of ``sum(lengths)`` tokens: no pad
        token anywhere; per-token labels follow the same layout, per-example labels stay one
        per row."""
        lengths = [self._lengths[i] for i in indices]
        ids_col = self.columns["input_ids"]
        types_col = self.columns.get("token_type_ids")
        input_ids = torch.tensor([t for i in indices for t in ids_col[i]], dtype=torch.long)
        if types_col is not None:
            token_type_ids = torch.tensor([t for i in indices for t in types_col[i]],
                                          dtype=torch.long)
        else:
            token_type_ids = torch.zeros_like(input_ids)
        labels: dict[str, torch.Tensor] = {}
        for name, head in self.heads.items():
            column = self.columns.get(head.column)
            if column is not None:
                labels[name] = head.collate_packed([column[i] for i in indices], lengths)
        shape_col = self.columns.get("word_shape")
        word_shapes = None if shape_col is None else torch.tensor(
            [s for i in indices for s in shape_col[i]], dtype=torch.long).unsqueeze(0)
        return Batch(
            task=self.task.name,
            input_ids=input_ids.unsqueeze(0),
            attention_mask=torch.ones((1, input_ids.numel()), dtype=torch.long),
            token_type_ids=token_type_ids.unsqueeze(0),
            labels=labels,
            indices=list(indices),
            real_tokens=sum(lengths),
            lengths=lengths,
            word_shapes=word_shapes,
            packing=PackedRows.from_lengths(lengths),
        )
