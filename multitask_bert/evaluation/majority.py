"""Majority-class baselines: what a model that ignores its input scores on each head.

Each head predicts its most frequent train label (tagging: the most frequent word tag;
multilabel: the most frequent label alone; regression: the train mean) and is scored with
the same metric functions as the model, so "beats the baseline" compares like with like.
Each head type defines its own (:meth:`HeadType.majority_baseline`).
"""

from __future__ import annotations

from typing import Any

from multitask_bert.data.dataset import TaskDataset
from multitask_bert.evaluation.evaluator import Metrics


def majority_baseline(train: TaskDataset, evaluation: TaskDataset) -> dict[str, dict[str, Any]]:
    """Per-head metrics of the majority-class predictor fitted on ``train``."""
    return {name: head.majority_baseline(train, evaluation)
            for name, head in evaluation.heads.items()}


def majority_baselines(train: dict[str, TaskDataset], evaluation: dict[str, TaskDataset]
                       ) -> Metrics:
    """:func:`majority_baseline` of every task that has both splits."""
    return {name: majority_baseline(train[name], data)
            for name, data in evaluation.items() if name in train}
