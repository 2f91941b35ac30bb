"""Evaluation keeps predictions as plain labels, never tensors: what it holds does not grow
with the number of batches (issue 5, memory)."""

import gc

import torch

from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.pipeline import load_datasets, prepare_data
from multitask_bert.training.trainer import evaluate_model


def _live_tensors() -> int:
    return sum(isinstance(obj, torch.Tensor) for obj in gc.get_objects())


def test_live_tensors_do_not_grow_with_the_number_of_evaluation_batches(tiny_config):
    config = tiny_config()
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    datasets = load_datasets(config, cached, "validation", tokenizer.pad_token_id)
    vocab = {name: entry.label_vocab for name, entry in cached.items()}
    model = build_model(config.encoder, config.tasks, vocab, seed=1)
    counts: list[int] = []
    model.register_forward_pre_hook(lambda module, args: counts.append(_live_tensors()))

    metrics = evaluate_model(model, datasets, batch_size=2)

    assert set(metrics) == set(datasets)
    per_task = {name: -(-len(d) // 2) for name, d in datasets.items()}
    assert len(counts) == sum(per_task.values()) and min(per_task.values()) >= 4
    start = 0
    for name, n in per_task.items():  # within each task: the count at the last batch is the
        task_counts = counts[start : start + n]  # count at its second one (first: warm-up)
        assert task_counts[-1] <= task_counts[1], (name, task_counts)
        start += n
