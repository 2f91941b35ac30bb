"""The steps of one run as plain functions: tokenise and cache, train, evaluate.

The CLI calls them in a row; the Prefect flow wraps each in a task. Between steps travel
paths and small dicts, never tensors.
"""

from __future__ import annotations

import logging
from pathlib import Path

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import CachedTask, tokenize_and_cache
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.errors import ConfigError
from multitask_bert.evaluation.baselines import majority_baselines
from multitask_bert.evaluation.evaluator import Metrics
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.tracking import TrackingLogger
from multitask_bert.training.trainer import Trainer, TrainResult, evaluate_model

log = logging.getLogger("multitask_bert")


def prepare_task(config: ExperimentConfig, task_name: str, tokenizer=None) -> CachedTask:
    """Tokenise one task's splits into the Parquet cache (a hit when nothing changed)."""
    task = config.task(task_name)
    tokenizer = tokenizer or load_tokenizer(config.encoder.resolve_path())
    return tokenize_and_cache(
        task,
        tokenizer,
        max_length=config.max_length_for(task),
        cache_dir=config.cache_path,
        seed=config.training.seed,
    )


def prepare_data(config: ExperimentConfig, tokenizer=None) -> dict[str, CachedTask]:
    tokenizer = tokenizer or load_tokenizer(config.encoder.resolve_path())
    return {task.name: prepare_task(config, task.name, tokenizer) for task in config.tasks}


def load_split(
    config: ExperimentConfig, cached: CachedTask, split: str, pad_token_id: int
) -> TaskDataset | None:
    path = cached.splits.get(split)
    if path is None:
        return None
    return TaskDataset.from_parquet(
        path,
        config.task(cached.task),
        cached.label_vocab,
        split=split,
        pad_token_id=pad_token_id,
        pad_to_multiple_of=config.training.pad_to_multiple_of,
    )


def load_datasets(
    config: ExperimentConfig, cached: dict[str, CachedTask], split: str, pad_token_id: int
) -> dict[str, TaskDataset]:
    datasets = {}
    for name, entry in cached.items():
        dataset = load_split(config, entry, split, pad_token_id)
        if dataset is not None:
            datasets[name] = dataset
    return datasets


def train_experiment(
    config: ExperimentConfig,
    cached: dict[str, CachedTask] | None = None,
    logger: TrackingLogger | None = None,
) -> TrainResult:
    """Tokenise (or reuse the cache), build the model, train, write metrics and ``best/``."""
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = cached or prepare_data(config, tokenizer)
    pad = tokenizer.pad_token_id or 0
    train_sets = load_datasets(config, cached, "train", pad)
    eval_sets = load_datasets(config, cached, "validation", pad)
    label_vocab = {name: entry.label_vocab for name, entry in cached.items()}
    model = build_model(config.encoder, config.tasks, label_vocab, seed=config.training.seed)
    trainer = Trainer(config, model, tokenizer, train_sets, eval_sets, logger=logger)
    trainer.result.baseline = majority_baselines(train_sets, eval_sets)
    try:
        result = trainer.train()
        for name, entry in cached.items():
            trainer.logger.log_dict(entry.to_dict(), f"data/{name}.json")
    finally:
        trainer.close()
    return result


def evaluate_saved_model(
    model_dir: str | Path,
    config: ExperimentConfig,
    split: str = "validation",
    batch_size: int | None = None,
) -> Metrics:
    """Per-head metrics of a saved model on one split of the config's tasks."""
    model = MultiTaskModel.load(model_dir)
    tokenizer = load_tokenizer(model_dir)
    datasets = {}
    for task in config.tasks:
        if task.name not in model.heads:
            log.warning("task %s: not in the model (tasks: %s), skipped", task.name,
                        model.task_names)
            continue
        if task.source(split) is None:
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
