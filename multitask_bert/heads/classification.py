"""``classification``: one label per example (softmax, cross-entropy, accuracy)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import torch
from torch.nn import functional as F

from multitask_bert.errors import short_repr
from multitask_bert.evaluation.metrics import compute_classification_metrics, confusion_matrix
from multitask_bert.heads.base import HeadModule, HeadType, RawLabel, reject_null
from multitask_bert.heads.registry import register_head_type

if TYPE_CHECKING:
    from multitask_bert.data.alignment import RowWords
    from multitask_bert.data.dataset import TaskDataset


class ClassificationModule(HeadModule):
    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits.float(), labels.long())


@register_head_type
class ClassificationHead(HeadType):
    """Single-label classification; predictions ``{"label", "score"}`` (softmax prob)."""

    name = "classification"
    output_fields: ClassVar[dict[str, Any]] = {"label": "string", "score": "double"}
    module = ClassificationModule
    label_type = pa.int64()

    def normalize(self, raw: RawLabel) -> str:
        value, head = reject_null(raw, self.spec.name), self.spec.name
        if isinstance(value, (str, int)):  # bool is an int: True -> "True"
            if isinstance(value, str) and not value.strip():
                raise raw.fail(f"empty label for head {head!r}", "Give the row a label")
            return str(value)
        raise raw.fail(
            f"a classification label must be a string or an integer, got "
            f"{type(value).__name__} {short_repr(value)}",
            "Use one label per row (a list needs `type: multilabel`, a number "
            "`type: regression`)",
        )

    def decode(self, logits: torch.Tensor, words: list[RowWords] | None = None) -> list[Any]:
        probs = logits.float().softmax(-1)
        best = logits.argmax(-1).tolist()
        return [{"label": self.labels[b], "score": float(probs[i, b])}
                for i, b in enumerate(best)]

    def metric_value(self, prediction: Any) -> int:
        return self.label_ids[prediction["label"]]

    def compute_metrics(self, y_true: list[Any], y_pred: list[Any], counts: dict[str, float]
                        ) -> dict[str, Any]:
        metrics: dict[str, Any] = compute_classification_metrics(y_true, y_pred, self.labels)
        metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, len(self.labels))
        metrics["labels"] = list(self.labels)
        return metrics

    def majority_baseline(self, train: TaskDataset, evaluation: TaskDataset) -> dict[str, Any]:
        gold = evaluation.columns[self.column]
        majority = Counter(train.columns[self.column]).most_common(1)[0][0]
        return compute_classification_metrics(gold, [majority] * len(gold), self.labels)
