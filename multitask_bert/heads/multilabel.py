"""``multilabel``: a set of labels per example (sigmoid per label, threshold 0.5)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from multitask_bert.data.alignment import list_array
from multitask_bert.errors import short_repr
from multitask_bert.evaluation.metrics import compute_multilabel_metrics
from multitask_bert.heads.base import HeadModule, HeadType, RawLabel, reject_null
from multitask_bert.heads.registry import register_head_type

if TYPE_CHECKING:
    from multitask_bert.data.alignment import ChunkAlignment, RowWords
    from multitask_bert.data.dataset import TaskDataset


class MultilabelModule(HeadModule):
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


@register_head_type
class MultilabelHead(HeadType):
    """Several labels per example; predictions ``{"labels", "scores"}`` (sigmoid per label;
    a label is predicted when its logit is above 0, i.e. its probability above 0.5)."""

    name = "multilabel"
    output_fields: ClassVar[dict[str, Any]] = {"labels": ["string"], "scores": {"*": "double"}}
    major_metric = "micro_f1"
    module = MultilabelModule
    label_type = pa.list_(pa.float32())
    """A multi-hot row over the vocabulary."""

    def normalize(self, raw: RawLabel) -> list[str]:
        value = reject_null(raw, self.spec.name)
        if not isinstance(value, list) or not all(
            isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
        ):
            raise raw.fail(
                f"a multilabel label must be a list of strings, got {type(value).__name__} "
                f"{short_repr(value)}",
                'Use a list of labels, e.g. ["a", "b"] (JSONL or Parquet; CSV cannot hold '
                "lists)",
            )
        return [str(v) for v in value]

    def labels_in(self, value: Any) -> Iterable[str]:
        return value

    def encode(self, values: list[Any], alignment: ChunkAlignment | None) -> dict[str, pa.Array]:
        size = len(self.label_ids)
        hot = np.zeros((len(values), size), dtype=np.float32)
        for row, labels in enumerate(values):
            hot[row, [self.label_ids[label] for label in labels]] = 1.0
        offsets = np.arange(0, len(values) * size + 1, size, dtype=np.int32)
        return {self.column: list_array(offsets, hot.reshape(-1))}

    def collate(self, values: list[Any], width: int) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    def decode(self, logits: torch.Tensor, words: list[RowWords] | None = None) -> list[Any]:
        probs = logits.float().sigmoid().tolist()
        chosen = (logits > 0).tolist()
        return [{"labels": [label for label, on in zip(self.labels, row_on, strict=True) if on],
                 "scores": dict(zip(self.labels, row_probs, strict=True))}
                for row_on, row_probs in zip(chosen, probs, strict=True)]

    def metric_value(self, prediction: Any) -> list[int]:
        chosen = set(prediction["labels"])
        return [int(label in chosen) for label in self.labels]

    def gold_values(self, labels: torch.Tensor) -> list[Any]:
        return labels.int().tolist()

    def compute_metrics(self, y_true: list[Any], y_pred: list[Any], counts: dict[str, float]
                        ) -> dict[str, Any]:
        return compute_multilabel_metrics(y_true, y_pred, self.labels)

    def majority_baseline(self, train: TaskDataset, evaluation: TaskDataset) -> dict[str, Any]:
        counts = Counter(i for row in train.columns[self.column] for i, v in enumerate(row) if v)
        top = counts.most_common(1)[0][0] if counts else 0
        row = [int(i == top) for i in range(len(self.labels))]
        gold = [[int(v) for v in r] for r in evaluation.columns[self.column]]
        return compute_multilabel_metrics(gold, [row] * len(gold), self.labels)
