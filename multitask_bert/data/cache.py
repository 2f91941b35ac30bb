"""The content-addressed Parquet cache of tokenised tasks.

An entry is ``<cache_dir>/<task>/<fingerprint>/`` holding one ``<split>.parquet`` per split
and ``meta.json``, written last: an entry is complete when its folder has ``meta.json``.
The fingerprint covers everything the tables depend on (see :func:`compute_fingerprint`), so
a changed data file, task spec, tokenizer or ``max_length`` gets a new entry and an unchanged
one is reused, wherever its files have moved.

Entries are built in a temporary folder next to their final place and renamed into place
(atomic on one file system), under an exclusive ``fcntl.flock`` on ``<fingerprint>.lock``, a
file that lives only while a build holds it: two processes tokenising the same task at once
build it once, and a crash or an error leaves no partial entry and no lock file behind
(leftover temporary folders are removed by the next build; a lock file left by a killed
process is reused and then removed). A full disk raises
:class:`~multitask_bert.errors.DiskFullError` (the entry's path, the space it needs,
``cache_dir`` to move it); the entries already there stay valid.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from multitask_bert.atomic import building_dir, fsync_dir, fsync_tree
from multitask_bert.data.encoding import build_label_vocab, encode_split
from multitask_bert.data.sources import read_split, source_fingerprint, take_subset
from multitask_bert.tasks import SPLITS, TaskSpec

logger = logging.getLogger("multitask_bert.data")

CACHE_FORMAT_VERSION = 2
"""Bump when the table layout or the encoding changes: every old entry then misses.
2: token tasks gained the ``num_words_truncated`` column."""

META_FILE = "meta.json"
_TEMP_PREFIX = ".building-"
# head fields that only the trainer reads: changing them must not re-tokenise
_TRAINING_ONLY_HEAD_FIELDS = ("loss_weight", "dropout", "major_metric")


@dataclass(frozen=True)
class CachedTask:
    """A tokenised task in the cache; small and JSON-able, to travel between Prefect tasks."""

    task: str
    """Task name."""
    fingerprint: str
    """Content fingerprint of the entry (:func:`compute_fingerprint`)."""
    path: Path
    """The entry folder."""
    splits: dict[str, Path]
    """Parquet file of each split present."""
    label_vocab: dict[str, list[str]]
    """Label vocabulary per head (regression heads have none)."""
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per split: ``examples``, ``truncated_examples``, ``truncated_words``, ``empty_words``."""
    cache_hit: bool = False
    """Whether the entry was already there."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "fingerprint": self.fingerprint,
            "path": str(self.path),
            "splits": {split: str(path) for split, path in self.splits.items()},
            "label_vocab": {head: list(labels) for head, labels in self.label_vocab.items()},
            "stats": {split: dict(values) for split, values in self.stats.items()},
            "cache_hit": self.cache_hit,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CachedTask:
        return cls(
            task=data["task"],
            fingerprint=data["fingerprint"],
            path=Path(data["path"]),
            splits={split: Path(path) for split, path in data["splits"].items()},
            label_vocab={head: list(labels) for head, labels in data["label_vocab"].items()},
            stats={split: dict(values) for split, values in data.get("stats", {}).items()},
            cache_hit=bool(data.get("cache_hit", False)),
        )


def present_splits(task: TaskSpec, splits: Iterable[str] = SPLITS) -> list[str]:
    """The asked-for splits that the task has a source for, in canonical order."""
    wanted = set(splits)
    unknown = wanted - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; splits are {list(SPLITS)}")
    return [split for split in SPLITS if split in wanted and _has_split(task, split)]


def _has_split(task: TaskSpec, split: str) -> bool:
    return task.source(split) is not None or (
        split == "validation" and task.holdout_fraction is not None
    )


def split_holdout(examples: list[Any], fraction: float, seed: int) -> tuple[list, list]:
    """(train, held-out validation): a seeded ``fraction`` of ``examples``, order kept."""
    count = max(1, round(len(examples) * fraction))
    held = set(random.Random(f"holdout/{seed}").sample(range(len(examples)), count))
    train = [e for i, e in enumerate(examples) if i not in held]
    return train, [e for i, e in enumerate(examples) if i in held]


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a fast tokenizer: its Rust definition plus the settings that change output.

    The definition is taken with truncation and padding switched off (and restored after):
    every tokenizer call rewrites those two sections, so they must not count.
    """
    backend = tokenizer.backend_tokenizer
    truncation, padding = backend.truncation, backend.padding
    backend.no_truncation()
    backend.no_padding()
    try:
        definition = backend.to_str()
    finally:
        if truncation:
            backend.enable_truncation(**truncation)
        if padding:
            backend.enable_padding(**padding)
    settings = {
        "class": type(tokenizer).__name__,
        "truncation_side": getattr(tokenizer, "truncation_side", None),
        "special_tokens": {k: str(v) for k, v in sorted(tokenizer.special_tokens_map.items())},
    }
    digest = hashlib.sha256(definition.encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def task_spec_for_fingerprint(task: TaskSpec) -> dict[str, Any]:
    """The task spec as it affects the tables: no ``base_dir``, no source paths (the content
    fingerprint stands for them), no training-only head settings (loss weight, dropout...)."""
    spec = task.model_dump(mode="json", exclude={"base_dir"})
    for split in SPLITS:
        if spec.get(split):
            spec[split].pop("path", None)
    for head in spec["heads"]:
        for key in _TRAINING_ONLY_HEAD_FIELDS:
            head.pop(key, None)
    return spec


def compute_fingerprint(
    task: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    seed: int = 0,
    splits: Iterable[str] = SPLITS,
) -> str:
    """The cache fingerprint of a task (sha256 hex), without tokenising anything.

    Covers the content of each split's source (and of train, which the label vocabulary comes
    from), the task spec (:func:`task_spec_for_fingerprint`), the tokenizer
    (:func:`tokenizer_fingerprint`), ``max_length``, the subset seed (only when a source has a
    ``limit``; otherwise it changes nothing) and :data:`CACHE_FORMAT_VERSION`.
    """
    names = present_splits(task, splits)
    sources = {
        split: source_fingerprint(task, split)
        for split in sorted({"train", *names})
        if task.source(split) is not None
    }
    uses_seed = task.holdout_fraction is not None or any(
        task.source(split).limit is not None for split in names if task.source(split)
    )
    payload = {
        "format_version": CACHE_FORMAT_VERSION,
        "splits": names,
        "sources": sources,
        "task": task_spec_for_fingerprint(task),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": max_length,
        "seed": seed if uses_seed else None,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def tokenize_and_cache(
    task: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    cache_dir: str | Path,
    seed: int = 0,
    splits: Iterable[str] = SPLITS,
) -> CachedTask:
    """Tokenise a task's splits into Parquet files, or reuse the cache entry that has them.

    Args:
        task: The task spec.
        tokenizer: A fast Hugging Face tokenizer.
        max_length: Sub-word truncation length.
        cache_dir: Root of the cache; entries go to ``<cache_dir>/<task>/<fingerprint>/``.
        seed: Seed of the random subsets of sources with ``limit``.
        splits: The splits to encode; those without a source in the task are skipped.

    Returns:
        The entry: its folder, the Parquet file per split, label vocabularies and stats.

    Raises:
        DataError: A source is missing or malformed; nothing is left in the cache then.
    """
    splits = present_splits(task, splits)
    fingerprint = compute_fingerprint(
        task, tokenizer, max_length=max_length, seed=seed, splits=splits
    )
    task_dir = Path(cache_dir) / task.name
    entry = task_dir / fingerprint
    try:
        with _exclusive_lock(task_dir / f"{fingerprint}.lock"):
            cached = _load_entry(entry, task.name)
            if cached is None:
                _remove_leftovers(task_dir, fingerprint, entry)
                cached = _build_entry(task, tokenizer, entry, fingerprint, max_length, seed,
                                      splits)
    except BaseException:
        try:  # a refused first build leaves no empty <cache>/<task>/ behind
            task_dir.rmdir()
        except OSError:  # other entries (or another builder's lock) live there
            pass
        raise
    for split in cached.splits:
        values = cached.stats.get(split, {})
        logger.info(
            "%s/%s: %d examples, %d truncated examples, %d truncated words, %d empty words (%s)",
            task.name,
            split,
            values.get("examples", 0),
            values.get("truncated_examples", 0),
            values.get("truncated_words", 0),
            values.get("empty_words", 0),
            "cache hit" if cached.cache_hit else "tokenised",
        )
    return cached


@contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` and remove the file when done.

    The file is removed while the lock is still held, so a process that opened it before the
    removal finds, once it gets the lock, that ``path`` is gone (or is a newer file): it opens
    ``path`` again and waits on that one. Whoever holds the lock on the file that ``path``
    names is alone; no empty lock file stays in the cache.
    """
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # a refused build removed the empty folder just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:  # the holder before us removed it: lock the new one
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        try:
            os.unlink(path)  # before unlocking: see above
        except FileNotFoundError:  # removed by hand meanwhile
            pass
        os.close(fd)  # releases the lock


def _load_entry(entry: Path, task_name: str) -> CachedTask | None:
    """The complete entry at ``entry``, or None when there is none (or it is damaged)."""
    meta_path = entry / META_FILE
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        split_paths = {split: entry / name for split, name in meta["files"].items()}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    if meta.get("format_version") != CACHE_FORMAT_VERSION or not all(
        p.is_file() for p in split_paths.values()
    ):
        return None
    return CachedTask(
        task=task_name,
        fingerprint=meta["fingerprint"],
        path=entry,
        splits=split_paths,
        label_vocab=meta["label_vocab"],
        stats=meta["stats"],
        cache_hit=True,
    )


def _remove_leftovers(task_dir: Path, fingerprint: str, entry: Path) -> None:
    """Remove what a crashed build of this fingerprint left (we hold its lock)."""
    for leftover in task_dir.glob(f"{_TEMP_PREFIX}{fingerprint}-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    if entry.exists():  # a folder without a valid meta.json: damaged, rebuild it
        shutil.rmtree(entry)


def _build_entry(
    task: TaskSpec,
    tokenizer: Any,
    entry: Path,
    fingerprint: str,
    max_length: int,
    seed: int,
    splits: list[str],
) -> CachedTask:
    with building_dir(entry, prefix=f"{_TEMP_PREFIX}{fingerprint}-",
                      setting="cache_dir") as building:
        temp = building.path
        # The vocabulary comes from the whole train split, even when train has a `limit`, so a
        # small subset does not turn rare validation labels into errors.
        needs_train = "train" in splits or task.holdout_fraction is not None or any(
            h.has_vocabulary and h.labels is None for h in task.heads
        )
        train_all = read_split(task, "train", seed=seed, apply_limit=False) if needs_train else []
        label_vocab = build_label_vocab(task, train_all)
        held_out: list[Any] = []
        if task.holdout_fraction is not None:  # validation = a seeded part of train
            train_all, held_out = split_holdout(train_all, task.holdout_fraction, seed)
        stats: dict[str, dict[str, int]] = {}
        files: dict[str, str] = {}
        for split in splits:
            source = task.source(split)
            source_name = task.resolve_path(source or task.train)
            if split == "train":
                examples = train_all
                if source.limit is not None:
                    examples = take_subset(train_all, source.limit, seed)
            elif source is None:
                examples = held_out
                source_name += f" (held-out {task.holdout_fraction:.0%} of train)"
            else:
                examples = read_split(task, split, seed=seed)
            table, stats[split] = encode_split(
                examples,
                task,
                tokenizer,
                max_length=max_length,
                label_vocab=label_vocab,
                split_name=split,
                source_name=source_name,
            )
            files[split] = f"{split}.parquet"
            building.expected_bytes += table.nbytes  # about the Parquet size, or more
            pq.write_table(table, temp / files[split])
        meta = {
            "fingerprint": fingerprint,
            "format_version": CACHE_FORMAT_VERSION,
            "task": task.model_dump(mode="json"),
            "label_vocab": label_vocab,
            "stats": stats,
            "files": files,
            "tokenizer": getattr(tokenizer, "name_or_path", type(tokenizer).__name__),
            "tokenizer_fingerprint": tokenizer_fingerprint(tokenizer),
            "max_length": max_length,
            "seed": seed,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (temp / META_FILE).write_text(
            json.dumps(meta, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        os.chmod(temp, 0o755)  # mkdtemp makes it private
        fsync_tree(temp)
        try:
            os.rename(temp, entry)
        except OSError:
            # Someone else put a complete entry there (a file system without working flock,
            # e.g. some network mounts): theirs is as good as ours.
            existing = _load_entry(entry, task.name)
            if existing is None:
                raise
            shutil.rmtree(temp, ignore_errors=True)
            return existing
        fsync_dir(entry.parent)
    return CachedTask(
        task=task.name,
        fingerprint=fingerprint,
        path=entry,
        splits={split: entry / name for split, name in files.items()},
        label_vocab=label_vocab,
        stats=stats,
        cache_hit=False,
    )
