"""Per-head evaluation that accumulates predictions batch by batch (never a logits array).

Tagging heads are scored at the word level on every word of the example: words cut off by
truncation have no prediction, so they count as ``O`` for entity heads (the entity is
missed) and as wrong for accuracy heads. Their number is reported as ``truncated_words``.
"""

from __future__ import annotations

from typing import Any

import torch

from multitask_bert.data.dataset import Batch, TaskDataset
from multitask_bert.evaluation.metrics import (
    compute_classification_metrics,
    compute_multilabel_metrics,
    compute_ner_metrics,
    compute_regression_metrics,
    compute_tagging_accuracy,
    confusion_matrix,
)
from multitask_bert.models.heads import IGNORE_INDEX
from multitask_bert.tasks import HeadSpec

Metrics = dict[str, dict[str, dict[str, Any]]]
"""``{task: {head: {metric: value}}}``; ``per_type`` values are nested dicts."""

_MISSING = "<truncated>"


class HeadAccumulator:
    """Collects one head's predictions and gold labels over an evaluation pass."""

    def __init__(self, head: HeadSpec, labels: list[str] | None) -> None:
        self.head = head
        self.labels = labels or []
        self.y_true: list[Any] = []
        self.y_pred: list[Any] = []
        self.truncated_words = 0

    def update(self, logits: torch.Tensor, batch: Batch, dataset: TaskDataset) -> None:
        name, kind = self.head.name, self.head.type
        gold = batch.labels.get(name)
        if kind == "classification":
            self.y_pred += logits.argmax(-1).tolist()
            self.y_true += gold.tolist()
        elif kind == "multilabel":
            self.y_pred += (logits > 0).int().tolist()  # sigmoid(x) > 0.5
            self.y_true += gold.int().tolist()
        elif kind == "regression":
            self.y_pred += logits.float().tolist()
            self.y_true += gold.tolist()
        else:
            self._update_tags(logits, batch, dataset)

    def _update_tags(self, logits: torch.Tensor, batch: Batch, dataset: TaskDataset) -> None:
        predicted = logits.argmax(-1)
        positions = batch.labels[self.head.name] != IGNORE_INDEX
        word_gold = dataset.columns[f"word_label__{self.head.name}"]
        fill = "O" if self.head.scheme else _MISSING
        for row, index in enumerate(batch.indices):
            kept = [self.labels[i] for i in predicted[row][positions[row]].tolist()]
            gold = [self.labels[i] for i in word_gold[index]]
            missing = len(gold) - len(kept)
            self.truncated_words += missing
            self.y_true.append(gold)
            self.y_pred.append(kept + [fill] * missing)

    def state(self) -> tuple[list, list, int]:
        return self.y_true, self.y_pred, self.truncated_words

    def merge(self, states: list[tuple[list, list, int]]) -> None:
        """Replace this accumulator's contents by the union of several (one per rank)."""
        self.y_true = [y for s in states for y in s[0]]
        self.y_pred = [y for s in states for y in s[1]]
        self.truncated_words = sum(s[2] for s in states)

    def compute(self) -> dict[str, Any]:
        kind = self.head.type
        if kind == "classification":
            metrics = compute_classification_metrics(self.y_true, self.y_pred, self.labels)
            metrics["confusion_matrix"] = confusion_matrix(self.y_true, self.y_pred,
                                                           len(self.labels))
            metrics["labels"] = list(self.labels)
            return metrics
        if kind == "multilabel":
            return compute_multilabel_metrics(self.y_true, self.y_pred, self.labels)
        if kind == "regression":
            return compute_regression_metrics(self.y_true, self.y_pred)
        if self.head.scheme:
            metrics = compute_ner_metrics(self.y_true, self.y_pred, self.head.scheme)
        else:
            metrics = compute_tagging_accuracy(self.y_true, self.y_pred)
        metrics["truncated_words"] = float(self.truncated_words)
        return metrics


def major_score(metrics: Metrics, spec: str, tasks: dict[str, list[HeadSpec]]) -> float:
    """The score early stopping and promotion look at.

    ``mean``: the mean over tasks of each task's major score (the mean of its heads' major
    metrics); ``task/head``: that head's major metric; ``task/head/metric``: that metric.
    """
    if spec == "mean":
        per_task = []
        for task, heads in tasks.items():
            if task in metrics:
                per_task.append(
                    sum(float(metrics[task][h.name][h.major]) for h in heads) / len(heads)
                )
        return sum(per_task) / len(per_task) if per_task else float("nan")
    parts = spec.split("/")
    task, head = parts[0], parts[1]
    metric = parts[2] if len(parts) == 3 else next(h for h in tasks[task] if h.name == head).major
    return float(metrics[task][head][metric])


def flatten_metrics(metrics: Metrics, prefix: str = "") -> dict[str, float]:
    """``{task: {head: {f1: x, per_type: {PER: {f1: y}}}}}`` -> ``{task/head/f1: x,
    task/head/per_type/PER/f1: y}`` (the log key layout)."""
    flat: dict[str, float] = {}

    def walk(node: Any, path: list[str]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, [*path, str(key)])
        elif isinstance(node, (int, float)):
            flat["/".join(path)] = float(node)

    walk(metrics, [prefix] if prefix else [])
    return flat
