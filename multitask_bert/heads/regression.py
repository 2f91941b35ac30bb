"""``regression``: one number per example (MSE loss; Pearson as the major metric)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import torch
from torch.nn import functional as F

from multitask_bert.errors import short_repr
from multitask_bert.evaluation.metrics import compute_regression_metrics
from multitask_bert.heads.base import HeadModule, HeadType, RawLabel, reject_null
from multitask_bert.heads.registry import register_head_type

if TYPE_CHECKING:
    from multitask_bert.data.alignment import ChunkAlignment, RowWords
    from multitask_bert.data.dataset import TaskDataset


class RegressionModule(HeadModule):
    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__(hidden_size, 1, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(logits.float(), labels.float())


@register_head_type
class RegressionHead(HeadType):
    """A float per example; predictions ``{"value"}``."""

    name = "regression"
    output_fields: ClassVar[dict[str, Any]] = {"value": "double"}
    has_vocabulary = False
    major_metric = "pearson"
    lower_is_better = frozenset({"mse", "mae"})
    module = RegressionModule
    label_type = pa.float32()

    def normalize(self, raw: RawLabel) -> float:
        value = reject_null(raw, self.spec.name)
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise raw.fail(
                f"a regression label must be a finite number, got "
                f"{type(value).__name__} {short_repr(value)}",
                "Fix the value",
            )
        return number

    def labels_in(self, value: Any) -> Iterable[str]:
        return []

    def encode(self, values: list[Any], alignment: ChunkAlignment | None) -> dict[str, pa.Array]:
        return {self.column: pa.array(values, self.label_type)}

    def collate(self, values: list[Any], width: int) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    def decode(self, logits: torch.Tensor, words: list[RowWords] | None = None) -> list[Any]:
        return [{"value": value} for value in logits.float().tolist()]

    def metric_value(self, prediction: Any) -> float:
        return prediction["value"]

    def compute_metrics(self, y_true: list[Any], y_pred: list[Any], counts: dict[str, float]
                        ) -> dict[str, Any]:
        return compute_regression_metrics(y_true, y_pred)

    def majority_baseline(self, train: TaskDataset, evaluation: TaskDataset) -> dict[str, Any]:
        train_values = train.columns[self.column]
        gold = evaluation.columns[self.column]
        mean = sum(train_values) / len(train_values)
        return compute_regression_metrics(gold, [mean] * len(gold))
