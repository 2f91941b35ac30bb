"""Per-head metrics of a saved model folder on one split of a config's tasks."""

from __future__ import annotations

import logging
from pathlib import Path

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import present_splits, tokenize_and_cache
from multitask_bert.data.prepare import load_split
from multitask_bert.errors import ConfigError
from multitask_bert.evaluation.evaluator import Metrics
from multitask_bert.evaluation.loop import evaluate_model
from multitask_bert.models.multitask import MultiTaskModel, load_tokenizer

log = logging.getLogger("multitask_bert")


def evaluate_saved_model(
    model_dir: str | Path,
    config: ExperimentConfig,
    split: str = "validation",
    batch_size: int | None = None,
) -> Metrics:
    """Per-head metrics of a saved model on one split of the config's tasks.

    Tasks the model does not know, or without the split, are skipped with a warning.

    Raises:
        ConfigError: nothing to evaluate, or the data's labels differ from the model's.
    """
    model = MultiTaskModel.load(model_dir)
    tokenizer = load_tokenizer(model_dir)
    datasets = {}
    for task in config.tasks:
        if task.name not in model.heads:
            log.warning("task %s: not in the model (tasks: %s), skipped", task.name,
                        model.task_names)
            continue
        if split not in present_splits(task, [split]):  # a held-out validation split counts
            log.warning("task %s: no %s split, skipped", task.name, split)
            continue
        cached = tokenize_and_cache(task, tokenizer, max_length=config.max_length_for(task),
                                    cache_dir=config.cache_path, seed=config.training.seed)
        _check_vocab(task.name, model.label_vocab.get(task.name, {}), cached.label_vocab)
        dataset = load_split(config, cached, split, tokenizer.pad_token_id or 0)
        if dataset is not None:
            datasets[task.name] = dataset
    if not datasets:
        raise ConfigError(f"nothing to evaluate: no task of the config has a {split!r} split "
                          f"that the model knows (model tasks: {model.task_names})")
    return evaluate_model(model, datasets, batch_size or config.training.eval_batch_size)


def _check_vocab(task: str, model_vocab: dict, data_vocab: dict) -> None:
    for head, labels in data_vocab.items():
        if model_vocab.get(head) != labels:
            raise ConfigError(
                f"task {task}, head {head}: the model was trained with labels "
                f"{model_vocab.get(head)} but the data gives {labels}; evaluate with the "
                "config the model was trained with (runs/<name>/config.yaml)"
            )
