"""The head-type unit: everything one kind of head means, in one class.

A head *type* (``classification``, ``multilabel``, ``regression``, ``tagging``, or one of
yours) answers every question the pipeline asks about a head of that type:

===================  ==========================================================================
config               which task types take it, which spec options apply, its major metric
raw rows             :meth:`HeadType.normalize` checks a raw label, :meth:`HeadType.labels_in`
                     lists the labels in one (the vocabulary is built from them)
cache table          :meth:`HeadType.fields` (Arrow columns), :meth:`HeadType.encode`
batches              :meth:`HeadType.collate` (column values -> a label tensor)
model                :attr:`HeadType.module` (an ``nn.Module`` with its ``loss``)
predictions          :meth:`HeadType.decode`: logits -> JSON-able predictions, the one place
                     that turns logits into predictions (evaluation, ``predict``, the pyfunc)
evaluation           :meth:`HeadType.evaluation_pairs`, :meth:`HeadType.compute_metrics`,
                     :meth:`HeadType.majority_baseline`
===================  ==========================================================================

An instance is the type bound to one head of one task: its spec and its label vocabulary
(empty for heads without one, and before the vocabulary is known). Add a head type by
subclassing :class:`HeadType` and decorating it with
:func:`multitask_bert.heads.register_head_type`; no other file changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import torch
from torch import nn

from multitask_bert.errors import DataError

if TYPE_CHECKING:
    from multitask_bert.data.alignment import ChunkAlignment, RowWords
    from multitask_bert.data.dataset import Batch, TaskDataset
    from multitask_bert.tasks import HeadSpec


class HeadModule(nn.Module):
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


@dataclass(frozen=True)
class RawLabel:
    """One raw label to check, with what its error messages need."""

    value: Any
    fail: Callable[[str, str], DataError]
    """``fail(problem, fix)``: the error naming the file, the line and the field."""
    words: list[str] | None = None
    """The row's words (token tasks), for heads with one label per word."""
    words_field: str = "tokens"


def reject_null(raw: RawLabel, head: str) -> Any:
    """The raw value, unless it is null (an unlabeled row): then the error that says so."""
    if raw.value is None:
        raise raw.fail(
            f"null label for head {head!r} (an unlabeled row, as in GLUE test splits)",
            "Give the row a label, or, for a validation or test split, leave this split out "
            "of the task YAML (train is required)",
        )
    return raw.value


class HeadType:
    """One head type bound to one head: ``HeadType(spec, labels)``.

    Subclasses set :attr:`name`, :attr:`module`, :attr:`label_type` and override the methods
    whose default does not fit. The defaults describe a sequence-level head with one value
    per example.
    """

    name: ClassVar[str]
    """The ``type:`` of a head in a task YAML."""
    task_types: ClassVar[tuple[str, ...]] = ("sequence",)
    """Task types whose examples this head can label."""
    has_vocabulary: ClassVar[bool] = True
    """Whether the head predicts labels from a vocabulary (``labels:`` or the train split)."""
    major_metric: ClassVar[str] = "accuracy"
    """The metric early stopping and promotion read, unless the head sets ``major_metric``."""
    lower_is_better: ClassVar[frozenset[str]] = frozenset()
    """Metrics of this head where smaller is better (``mse``...)."""
    module: ClassVar[type[HeadModule]]
    """The ``nn.Module`` of the head (output layer and loss)."""
    label_type: ClassVar[pa.DataType]
    """Arrow type of the head's ``label__<head>`` column in the cache."""
    output_fields: ClassVar[dict[str, Any]] = {}
    """What :meth:`decode` returns per row, for the served model's signature: field ->
    ``"string"``, ``"double"``, ``"long"``, ``[type]`` (a list), ``{"*": type}`` (a map) or
    ``{field: type}`` (an object); a ``?`` after a name marks a field that may be absent."""

    def __init__(self, spec: HeadSpec, labels: list[str] | None = None) -> None:
        self.spec = spec
        self.labels = list(labels or [])
        self.label_ids = {label: i for i, label in enumerate(self.labels)}

    # -- config ---------------------------------------------------------------------------
    @classmethod
    def check_spec(cls, spec: HeadSpec) -> None:
        """Raise ``ValueError`` for a spec option that does not apply to this type."""
        if spec.scheme:
            raise ValueError(f"head {spec.name!r}: `scheme` applies to tagging heads only")

    @classmethod
    def default_major(cls, spec: HeadSpec) -> str:
        """The major metric of a head of this type that does not name one."""
        return cls.major_metric

    # -- raw rows -------------------------------------------------------------------------
    def normalize(self, raw: RawLabel) -> Any:
        """The checked label of one raw row (raises ``raw.fail(...)`` when it is malformed)."""
        raise NotImplementedError

    def labels_in(self, value: Any) -> Iterable[str]:
        """The vocabulary labels a normalized value holds (none for label-free heads)."""
        return [value]

    # -- the cache table ------------------------------------------------------------------
    @property
    def column(self) -> str:
        """The cache column of the head's training labels."""
        return f"label__{self.spec.name}"

    def fields(self) -> list[pa.Field]:
        """The head's columns in a task's cache table."""
        return [pa.field(self.column, self.label_type)]

    def encode(self, values: list[Any], alignment: ChunkAlignment | None) -> dict[str, pa.Array]:
        """The head's columns for a chunk of normalized values (``alignment`` for token
        tasks). Raises ``KeyError`` for a label outside the vocabulary."""
        return {self.column: pa.array([self.label_ids[v] for v in values], self.label_type)}

    # -- batches --------------------------------------------------------------------------
    def collate(self, values: list[Any], width: int) -> torch.Tensor:
        """The label tensor of a batch from the rows' column values (``width``: padded
        length of the batch)."""
        return torch.tensor(values, dtype=torch.long)

    def collate_packed(self, values: list[Any], lengths: list[int]) -> torch.Tensor:
        """The label tensor of a packed batch (the rows one after the other, no padding;
        ``lengths``: tokens of each row). Per-example labels are the same as padded."""
        return self.collate(values, max(lengths))

    # -- model ----------------------------------------------------------------------------
    def build_module(self, hidden_size: int) -> HeadModule:
        """The head's ``nn.Module`` (one output per label)."""
        return self.module(hidden_size, len(self.labels) or 1, self.spec.dropout)

    def describe(self) -> str:
        """The head's type (and its options), for docs: ``classification``, ``tagging
        (IOB2)``."""
        return self.name

    # -- predictions ----------------------------------------------------------------------
    def decode(self, logits: torch.Tensor, words: list[RowWords] | None = None) -> list[Any]:
        """One JSON-able prediction per row of a batch's logits (``words``: token tasks)."""
        raise NotImplementedError

    # -- evaluation -----------------------------------------------------------------------
    def evaluation_pairs(
        self, logits: torch.Tensor, batch: Batch, dataset: TaskDataset
    ) -> tuple[list[Any], list[Any], dict[str, float]]:
        """Gold and predicted values of one batch, in the form :meth:`compute_metrics`
        takes, plus counts to add up over the pass (e.g. ``truncated_words``)."""
        gold = self.gold_values(batch.labels[self.spec.name])
        return gold, [self.metric_value(p) for p in self.decode(logits)], {}

    def gold_values(self, labels: torch.Tensor) -> list[Any]:
        """A batch's label tensor in the form :meth:`compute_metrics` takes."""
        return labels.tolist()

    def metric_value(self, prediction: Any) -> Any:
        """A decoded prediction in the form :meth:`compute_metrics` takes."""
        return prediction

    def compute_metrics(
        self, y_true: list[Any], y_pred: list[Any], counts: dict[str, float]
    ) -> dict[str, Any]:
        """``{metric: value}`` over a whole evaluation pass."""
        raise NotImplementedError

    def majority_baseline(self, train: TaskDataset, evaluation: TaskDataset) -> dict[str, Any]:
        """Metrics of a predictor that ignores its input (the most frequent train label)."""
        raise NotImplementedError
