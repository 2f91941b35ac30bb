"""Pinned behaviour: the math of training, evaluation and prediction for a fixed seed.

These values were recorded on main before the architecture refactor (issue 10) and must not
change when code moves: the loss of every task after N optimizer steps, the per-head metrics
of a short run, and the predictions of its saved model. A change in any of them means a
refactor changed behaviour (or the math was changed on purpose: then re-record them and say
why in the commit).

Re-record (prints the dictionaries below)::

    source scripts/env.sh && source .venv/bin/activate
    python -m tests.test_pinned_behaviour

Tolerances: losses and scores to 1e-4 relative (CPU kernels of another machine may sum in
another order), discrete outputs (labels, tags, accuracies on 8 rows) exactly.
"""

from __future__ import annotations

import json
import pprint
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import (
    _pair_rows,
    _sentiment_rows,
    _tagging_rows,
    _topic_rows,
    tiny_config_dict,
    write_jsonl,
)

N_STEPS = 10

# -- recorded values: `python -m tests.test_pinned_behaviour` on main at af44cf9 (before the
#    refactor), 2-core AMD EPYC, torch 2.13.0+cpu, 2026-12-05. Issue 12 added fields to the
#    tagging predictions (`tag_scores`, `spans`), re-recorded on branch `serving` the same day;
#    every value recorded before (tags, labels, scores, values) is unchanged -----------------
PINNED_LOSSES: dict[str, float] = {'tagging/loss': 2.5888991355895996,
 'tagging/ner': 1.2486134767532349,
 'tagging/pos': 1.3402857780456543,
 'sentiment/loss': 0.7134036421775818,
 'sentiment/label': 0.7134036421775818,
 'pairs/loss': 10.710233688354492,
 'pairs/score': 10.710233688354492,
 'topics/loss': 0.7150843739509583,
 'topics/topics': 0.7150843739509583}
PINNED_METRICS: dict[str, float] = {'tagging/ner/precision': 1.0,
 'tagging/ner/recall': 1.0,
 'tagging/ner/f1': 1.0,
 'tagging/ner/accuracy': 1.0,
 'tagging/ner/truncated_words': 0.0,
 'tagging/pos/accuracy': 1.0,
 'tagging/pos/truncated_words': 0.0,
 'sentiment/label/accuracy': 0.5,
 'sentiment/label/micro_f1': 0.5,
 'sentiment/label/micro_precision': 0.5,
 'sentiment/label/micro_recall': 0.5,
 'sentiment/label/macro_f1': 0.3333333333333333,
 'sentiment/label/macro_precision': 0.25,
 'sentiment/label/macro_recall': 0.5,
 'pairs/score/pearson': 0.7684168402777569,
 'pairs/score/spearman': 0.7637626158259734,
 'pairs/score/mse': 5.740258149178199,
 'pairs/score/mae': 2.2090117931365967,
 'topics/topics/micro_f1': 0.7692307692307693,
 'topics/topics/micro_precision': 0.625,
 'topics/topics/micro_recall': 1.0,
 'topics/topics/macro_f1': 0.5128205128205129,
 'topics/topics/macro_precision': 0.4166666666666667,
 'topics/topics/macro_recall': 0.6666666666666666,
 'topics/topics/subset_accuracy': 0.25,
 'topics/topics/hamming_accuracy': 0.75,
 'best_score': 0.7594119023771315,
 'best_step': 48.0}
PINNED_PREDICTIONS: list[Any] = [['tagging',
  [{'ner': {'tags': ['B-PER', 'I-PER', 'O', 'B-LOC', 'O', 'O'],
            'tag_scores': [0.5690129399299622,
                           0.4259357154369354,
                           0.5340456366539001,
                           0.34871429204940796,
                           0.5477936267852783,
                           0.5399729013442993],
            'spans': [{'type': 'PER',
                       'first_word': 0,
                       'last_word': 1,
                       'score': 0.7038006782531738,
                       'text': 'Alice smith'},
                      {'type': 'LOC',
                       'first_word': 3,
                       'last_word': 3,
                       'score': 0.34871429204940796,
                       'text': 'Paris'}]},
    'pos': {'tags': ['PROPN', 'PROPN', 'VERB', 'PROPN', 'NOUN', 'PUNCT'],
            'tag_scores': [0.5146108865737915,
                           0.5794399976730347,
                           0.41736045479774475,
                           0.4211837351322174,
                           0.5179142355918884,
                           0.6231340169906616]}},
   {'ner': {'tags': ['B-PER', 'B-PER', 'O'],
            'tag_scores': [0.4736192226409912, 0.41188785433769226, 0.39910730719566345],
            'spans': [{'type': 'PER',
                       'first_word': 0,
                       'last_word': 0,
                       'score': 0.7060309648513794,
                       'text': 'Bob',
                       'start_char': 0,
                       'end_char': 3},
                      {'type': 'PER',
                       'first_word': 1,
                       'last_word': 1,
                       'score': 0.6366241574287415,
                       'text': 'left',
                       'start_char': 4,
                       'end_char': 8}]},
    'pos': {'tags': ['PROPN', 'PROPN', 'PROPN'],
            'tag_scores': [0.40846526622772217, 0.32866808772087097, 0.3711494505405426]}}]],
 ['sentiment',
  [{'label': {'label': 'neg', 'score': 0.5078129172325134}},
   {'label': {'label': 'neg', 'score': 0.6637727618217468}}]],
 ['pairs',
  [{'score': {'value': 1.6456352472305298}}, {'score': {'value': 1.7851682901382446}}]],
 ['topics',
  [{'topics': {'labels': ['sports', 'politics'],
               'scores': {'sports': 0.7167730927467346,
                          'politics': 0.5872634053230286,
                          'health': 0.1834394782781601}}},
   {'topics': {'labels': ['sports', 'politics'],
               'scores': {'sports': 0.6978960633277893,
                          'politics': 0.5846941471099854,
                          'health': 0.216216042637825}}}]]]


# -- the runs --------------------------------------------------------------------------------
def make_task_dir(root: Path) -> Path:
    """The same rows as the ``task_dir`` fixture (seeded)."""
    rng = random.Random(0)
    folder = root / "tasks"
    for split, n in (("train", 24), ("validation", 8)):
        write_jsonl(folder / "tagging" / f"{split}.jsonl", _tagging_rows(n, rng))
        write_jsonl(folder / "sentiment" / f"{split}.jsonl", _sentiment_rows(n, rng))
        write_jsonl(folder / "pairs" / f"{split}.jsonl", _pair_rows(n, rng))
        write_jsonl(folder / "topics" / f"{split}.jsonl", _topic_rows(n, rng))
    return folder


def config_for(root: Path, name: str, **training: Any):
    from multitask_bert.config import ExperimentConfig

    data = tiny_config_dict(make_task_dir(root), root / name, **training)
    return ExperimentConfig.from_dict(data, base_dir=root)


def fixed_batches(config) -> dict[str, Any]:
    """The first four validation rows of every task, tokenised as training does."""
    from multitask_bert.models.multitask import load_tokenizer
    from multitask_bert.pipeline import load_datasets, prepare_data

    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    datasets = load_datasets(config, cached, "validation", tokenizer.pad_token_id or 0)
    return {name: dataset.collate([0, 1, 2, 3]) for name, dataset in datasets.items()}


def losses_after_n_steps(root: Path) -> dict[str, float]:
    """Train N optimizer steps, then the loss of each task's head on fixed batches."""
    from multitask_bert.models.multitask import MultiTaskModel
    from multitask_bert.pipeline import train_experiment

    config = config_for(root, "steps", epochs=1, max_steps=N_STEPS, eval_strategy="no")
    result = train_experiment(config)
    assert result.global_step == N_STEPS
    model = MultiTaskModel.load(Path(result.output_dir) / "best")
    losses: dict[str, float] = {}
    with torch.no_grad():
        for task, batch in fixed_batches(config).items():
            out = model(batch.input_ids, batch.attention_mask, batch.labels, task_id=task,
                        token_type_ids=batch.token_type_ids)
            losses[f"{task}/loss"] = float(out.loss)
            for head, value in out.head_losses.items():
                losses[f"{task}/{head}"] = float(value)
    return losses


def short_run(root: Path) -> tuple[dict[str, float], list[Any]]:
    """Two epochs with evaluation per epoch: the best metrics and the saved model's output."""
    from multitask_bert.inference import Predictor
    from multitask_bert.pipeline import train_experiment

    config = config_for(root, "short")
    result = train_experiment(config)
    metrics = {}
    for task, heads in result.best.items():
        for head, values in heads.items():
            for metric, value in values.items():
                if isinstance(value, (int, float)):
                    metrics[f"{task}/{head}/{metric}"] = float(value)
    metrics["best_score"] = float(result.best_score)
    metrics["best_step"] = float(result.best_step)
    predictor = Predictor(Path(result.output_dir) / "best")
    rows = {
        "tagging": [{"tokens": ["Alice", "smith", "visited", "Paris", "today", "."]},
                    {"text": "Bob left Oslo"}],
        "sentiment": [{"text": "the film was superb"}, {"text": "dreadful and boring"}],
        "pairs": [{"text_a": "eve saw lima", "text_b": "eve saw lima"},
                  {"text_a": "bob left oslo", "text_b": "carol cooked soup"}],
        "topics": [{"text": "the match ended"}, {"text": "the vote passed and the match ended"}],
    }
    predictions = [[task, predictor.predict(task, task_rows)] for task, task_rows in rows.items()]
    return metrics, json.loads(json.dumps(predictions))


# -- comparison ----------------------------------------------------------------------------
def assert_close(actual: Any, expected: Any, where: str = "") -> None:
    """Floats to 1e-4 relative (1e-6 absolute), everything else exactly, recursively."""
    if isinstance(expected, float):
        assert isinstance(actual, (int, float)), where
        assert actual == pytest.approx(expected, rel=1e-4, abs=1e-6), where
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), where
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}/{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), where
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close(a, e, f"{where}[{i}]")
    else:
        assert actual == expected, where


def test_loss_after_n_steps_is_pinned(tmp_path):
    assert PINNED_LOSSES, "record the values: python -m tests.test_pinned_behaviour"
    assert_close(losses_after_n_steps(tmp_path), PINNED_LOSSES, "loss")


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    return short_run(tmp_path_factory.mktemp("pinned"))


def test_per_head_metrics_of_a_short_run_are_pinned(short):
    assert PINNED_METRICS, "record the values: python -m tests.test_pinned_behaviour"
    assert_close(short[0], PINNED_METRICS, "metrics")


def test_predictions_of_the_saved_model_are_pinned(short):
    assert PINNED_PREDICTIONS, "record the values: python -m tests.test_pinned_behaviour"
    assert_close(short[1], PINNED_PREDICTIONS, "predictions")


if __name__ == "__main__":
    torch.set_num_threads(min(2, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as folder:
        losses = losses_after_n_steps(Path(folder))
        metrics, predictions = short_run(Path(folder))
    for name, value in (("PINNED_LOSSES", losses), ("PINNED_METRICS", metrics),
                        ("PINNED_PREDICTIONS", predictions)):
        sys.stdout.write(f"{name} = {pprint.pformat(value, width=96, sort_dicts=False)}\n")
