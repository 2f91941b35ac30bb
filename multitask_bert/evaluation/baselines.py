"""Majority-class baselines: what a model that ignores its input scores on each head.

Each head predicts its most frequent train label (tagging: the most frequent word tag;
multilabel: the most frequent label alone; regression: the train mean) and is scored with
the same metric functions as the model, so "beats the baseline" compares like with like.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from multitask_bert.data.dataset import TaskDataset
from multitask_bert.evaluation.evaluator import Metrics
from multitask_bert.evaluation.metrics import (
    compute_classification_metrics,
    compute_multilabel_metrics,
    compute_ner_metrics,
    compute_regression_metrics,
    compute_tagging_accuracy,
)


def majority_baseline(train: TaskDataset, evaluation: TaskDataset) -> dict[str, dict[str, Any]]:
    """Per-head metrics of the majority-class predictor fitted on ``train``."""
    results = {}
    for head in evaluation.task.heads:
        labels = evaluation.label_vocab.get(head.name, [])
        if head.type == "tagging":
            column = f"word_label__{head.name}"
            counts = Counter(t for row in train.columns[column] for t in row)
            majority = labels[counts.most_common(1)[0][0]]
            gold = [[labels[t] for t in row] for row in evaluation.columns[column]]
            predicted = [[majority] * len(row) for row in gold]
            if head.scheme:
                results[head.name] = compute_ner_metrics(gold, predicted, head.scheme)
            else:
                results[head.name] = compute_tagging_accuracy(gold, predicted)
            continue
        gold_values = evaluation.columns[f"label__{head.name}"]
        train_values = train.columns[f"label__{head.name}"]
        if head.type == "classification":
            majority = Counter(train_values).most_common(1)[0][0]
            results[head.name] = compute_classification_metrics(
                gold_values, [majority] * len(gold_values), labels)
        elif head.type == "multilabel":
            counts = Counter(i for row in train_values for i, v in enumerate(row) if v)
            top = counts.most_common(1)[0][0] if counts else 0
            row = [int(i == top) for i in range(len(labels))]
            gold = [[int(v) for v in r] for r in gold_values]
            results[head.name] = compute_multilabel_metrics(gold, [row] * len(gold), labels)
        else:
            mean = sum(train_values) / len(train_values)
            results[head.name] = compute_regression_metrics(gold_values,
                                                            [mean] * len(gold_values))
    return results


def majority_baselines(train: dict[str, TaskDataset], evaluation: dict[str, TaskDataset]
                       ) -> Metrics:
    return {name: majority_baseline(train[name], data)
            for name, data in evaluation.items() if name in train}
