"""An experiment's data: tokenise its tasks into the cache, load their splits for training.

``prepare_data(config)`` gives one :class:`CachedTask` per task (a cache hit when nothing
changed); ``load_datasets(config, cached, "train", pad_id)`` the in-memory splits.
"""

from __future__ import annotations

from typing import Any

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import CachedTask, tokenize_and_cache
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.models.multitask import load_tokenizer


def prepare_task(config: ExperimentConfig, task_name: str, tokenizer: Any = None) -> CachedTask:
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


def prepare_data(config: ExperimentConfig, tokenizer: Any = None) -> dict[str, CachedTask]:
    """:func:`prepare_task` for every task of the experiment."""
    tokenizer = tokenizer or load_tokenizer(config.encoder.resolve_path())
    return {task.name: prepare_task(config, task.name, tokenizer) for task in config.tasks}


def load_split(
    config: ExperimentConfig, cached: CachedTask, split: str, pad_token_id: int
) -> TaskDataset | None:
    """One split of a cached task in memory (None when the task has no such split)."""
    path = cached.splits.get(split)
    if path is None:
        return None
    dataset = TaskDataset.from_parquet(
        path,
        config.task(cached.task),
        cached.label_vocab,
        split=split,
        pad_token_id=pad_token_id,
        pad_to_multiple_of=config.training.pad_multiple(),
    )
    dataset.fingerprint = cached.fingerprint
    return dataset


def load_datasets(
    config: ExperimentConfig, cached: dict[str, CachedTask], split: str, pad_token_id: int
) -> dict[str, TaskDataset]:
    """:func:`load_split` of every task that has the split."""
    datasets = {}
    for name, entry in cached.items():
        dataset = load_split(config, entry, split, pad_token_id)
        if dataset is not None:
            datasets[name] = dataset
    return datasets
