import pytest

from multitask_bert.data.dataset import TaskDataset
from multitask_bert.evaluation.majority import majority_baseline
from multitask_bert.tasks import TaskSpec


def dataset(task, vocab, **columns):
    n = len(next(iter(columns.values())))
    return TaskDataset(task, vocab, {"length": [4] * n, "input_ids": [[1]] * n, **columns})


def test_sequence_heads():
    task = TaskSpec(name="t", type="sequence", train="x.jsonl", heads=[
        {"name": "c", "type": "classification"}, {"name": "r", "type": "regression"},
        {"name": "m", "type": "multilabel"}])
    vocab = {"c": ["a", "b", "z"], "m": ["x", "y"]}
    train = dataset(task, vocab, label__c=[1, 1, 0], label__r=[1.0, 2.0, 3.0],
                    label__m=[[0, 1], [1, 1], [0, 1]])
    evaluation = dataset(task, vocab, label__c=[1, 0, 0, 1], label__r=[1.0, 2.0, 2.5, 4.0],
                         label__m=[[0, 1], [1, 0], [0, 1], [1, 1]])
    result = majority_baseline(train, evaluation)
    assert result["c"]["accuracy"] == 0.5  # always "b": right on 2 of 4
    # macro F1 over the full vocabulary: b gets 2/3 (p 0.5, r 1), a and z get 0
    assert result["c"]["macro_f1"] == pytest.approx((2 / 3) / 3)
    assert result["r"]["pearson"] == 0.0  # constant prediction
    assert result["r"]["mse"] == pytest.approx(((1 - 2) ** 2 + 0 + 0.25 + 4) / 4)
    # always {y}: exact on rows 1 and 3
    assert result["m"]["subset_accuracy"] == 0.5


def test_tagging_heads_score_the_majority_tag_with_the_head_metric():
    task = TaskSpec(name="t", type="token", train="x.jsonl", heads=[
        {"name": "ner", "type": "tagging", "scheme": "IOB1"}, {"name": "pos", "type": "tagging"}])
    vocab = {"ner": ["I-PER", "O"], "pos": ["NN", "VB"]}
    train = dataset(task, vocab, word_label__ner=[[1, 1, 0]], word_label__pos=[[0, 0, 1]])
    evaluation = dataset(task, vocab, word_label__ner=[[0, 1], [1, 1, 1]],
                         word_label__pos=[[0, 1], [0, 0, 0]])
    result = majority_baseline(train, evaluation)
    assert result["ner"]["f1"] == 0.0  # all "O" finds no entity
    assert result["pos"]["accuracy"] == pytest.approx(4 / 5)  # always NN
