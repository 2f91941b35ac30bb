"""A head type defined here, in the test module, with no change to any library file: a
binary head with one logit and a decision threshold. It registers, trains, evaluates,
predicts, has a majority baseline and survives save/load."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import torch
from torch.nn import functional as F

from multitask_bert.config import ExperimentConfig
from multitask_bert.errors import ConfigError, DataError
from multitask_bert.heads import HEAD_TYPES, HeadModule, HeadType, RawLabel, register_head_type
from multitask_bert.inference import Predictor
from multitask_bert.models.multitask import MultiTaskModel, load_tokenizer
from multitask_bert.pipeline import evaluate_saved_model, load_datasets, prepare_data
from multitask_bert.pipeline import train_experiment as train
from tests.conftest import tiny_config_dict


class BinaryModule(HeadModule):
    """One logit: the log-odds of the second label."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float) -> None:
        super().__init__(hidden_size, 1, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return super().forward(features).squeeze(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


class BinaryThresholdHead(HeadType):
    """Two labels; predicts the second when its probability reaches ``threshold``."""

    name = "binary_threshold"
    module = BinaryModule
    label_type = pa.int64()
    major_metric = "f1"
    threshold = 0.7

    def normalize(self, raw: RawLabel) -> str:
        if not isinstance(raw.value, (str, int)) or isinstance(raw.value, bool):
            raise raw.fail(f"a binary label must be a string, got {raw.value!r}", "Fix it")
        return str(raw.value)

    def build_module(self, hidden_size: int) -> HeadModule:
        if len(self.labels) != 2:
            raise ValueError(f"head {self.spec.name!r} needs exactly two labels")
        return super().build_module(hidden_size)

    def decode(self, logits: torch.Tensor, words: Any = None) -> list[Any]:
        probability = logits.float().sigmoid().tolist()
        return [{"label": self.labels[int(p >= self.threshold)], "probability": p}
                for p in probability]

    def metric_value(self, prediction: Any) -> int:
        return self.label_ids[prediction["label"]]

    def compute_metrics(self, y_true: list[Any], y_pred: list[Any], counts: dict[str, float]
                        ) -> dict[str, Any]:
        pairs = list(zip(y_true, y_pred, strict=True))
        tp = sum(1 for t, p in pairs if t == p == 1)
        predicted, actual = sum(y_pred), sum(y_true)
        return {"accuracy": sum(t == p for t, p in pairs) / len(pairs),
                "f1": 2 * tp / (predicted + actual) if predicted + actual else 0.0}

    def majority_baseline(self, train: Any, evaluation: Any) -> dict[str, Any]:
        majority = Counter(train.columns[self.column]).most_common(1)[0][0]
        gold = evaluation.columns[self.column]
        return self.compute_metrics(gold, [majority] * len(gold), {})


@pytest.fixture(autouse=True)
def registered():
    """Registered for this module's tests only, so no other test's message lists it."""
    register_head_type(BinaryThresholdHead)
    yield
    HEAD_TYPES.pop(BinaryThresholdHead.name)


def binary_config(task_dir: Path, tmp_path: Path, **training: Any) -> ExperimentConfig:
    data = tiny_config_dict(task_dir, tmp_path, epochs=3, **training)
    data["tasks"] = [
        {**task, "heads": [{"name": "label", "type": "binary_threshold", "labels": ["neg", "pos"]}]}
        if task["name"] == "sentiment" else task
        for task in data["tasks"] if task["name"] in ("sentiment", "tagging")
    ]
    return ExperimentConfig.from_dict(data, base_dir=tmp_path)


def test_the_registry_knows_the_new_type():
    assert HEAD_TYPES["binary_threshold"] is BinaryThresholdHead


def test_train_evaluate_predict_and_round_trip(task_dir, tmp_path):
    config = binary_config(task_dir, tmp_path)
    head = config.task("sentiment").heads[0]
    assert head.major == "f1"  # the type's default major metric
    result = train(config)

    best = result.best["sentiment"]["label"]
    assert set(best) == {"accuracy", "f1"}
    assert result.baseline["sentiment"]["label"]["accuracy"] == 0.5  # 4 pos, 4 neg
    assert "tagging" in result.best  # a built-in head trains beside it

    model_dir = Path(result.output_dir) / "best"
    assert evaluate_saved_model(model_dir, config)["sentiment"]["label"] == best

    # predict decodes like evaluation: its accuracy on the validation rows is the metric's
    predictor = Predictor(model_dir)
    rows = [json.loads(line) for line in
            (task_dir / "sentiment" / "validation.jsonl").read_text().splitlines()]
    predictions = predictor.predict("sentiment", rows)
    assert all(set(p["label"]) == {"label", "probability"} for p in predictions)
    for prediction in predictions:
        label, probability = prediction["label"]["label"], prediction["label"]["probability"]
        assert label == ("pos" if probability >= BinaryThresholdHead.threshold else "neg")
    right = sum(p["label"]["label"] == row["label"] for p, row in zip(predictions, rows,
                                                                       strict=True))
    assert right / len(rows) == best["accuracy"]

    # round trip: the loaded model gives the same logits as the trained one
    loaded = MultiTaskModel.load(model_dir)
    assert loaded.heads["sentiment"]["label"].out.out_features == 1
    tokenizer = load_tokenizer(model_dir)
    cached = prepare_data(config, tokenizer)
    batch = load_datasets(config, cached, "validation", tokenizer.pad_token_id)["sentiment"]\
        .collate(list(range(8)))
    again = MultiTaskModel.load(model_dir)
    with torch.no_grad():
        a = loaded(batch.input_ids, batch.attention_mask, batch.labels, task_id="sentiment")
        b = again(batch.input_ids, batch.attention_mask, batch.labels, task_id="sentiment")
    assert torch.equal(a.logits["label"], b.logits["label"])
    assert a.loss is not None and torch.isfinite(a.loss)


def test_its_options_and_labels_are_checked(task_dir, tmp_path):
    data = tiny_config_dict(task_dir, tmp_path)
    data["tasks"] = [{**data["tasks"][0], "heads": [{"name": "ner", "type": "binary_threshold"}]}]
    with pytest.raises(ConfigError, match="token tasks take `tagging` heads only, not "
                                          "'binary_threshold'"):
        ExperimentConfig.from_dict(data)
    config = binary_config(task_dir, tmp_path)
    bad = task_dir / "sentiment" / "train.jsonl"
    bad.write_text(bad.read_text() + '{"text": "so so", "label": [1, 2]}\n')
    with pytest.raises(DataError, match=r"line 25, field 'label': a binary label must be"):
        prepare_data(config)
