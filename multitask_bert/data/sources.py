"""Reading one split of a task: its source, read by format and checked row by row.

``read_split(task, "train")`` returns the split's *normalized examples* (see
:mod:`multitask_bert.data.rows`); the format readers live in
:mod:`multitask_bert.data.readers`. ``source_fingerprint`` identifies a split's content for
the cache.
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

from multitask_bert.data.readers import check_exists, hf_rows, load_hf, read_raw_rows
from multitask_bert.data.rows import LOCATION_KEY, RowValidator
from multitask_bert.errors import DataError
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import SPLITS, SourceSpec, TaskSpec

__all__ = [
    "LOCATION_KEY",
    "hf_rows",
    "input_fields",
    "read_split",
    "source_fingerprint",
    "take_subset",
]


_EMPTY_SPLIT_FIX = {
    # every task needs a train split (TaskSpec refuses one without): no "remove it" there
    "train": "Fill it, or point `train:` in the task YAML at a file that has examples (a task "
             "cannot do without a train split: the model learns it from it).",
    "validation": "Fill it, or remove `validation:` from the task YAML (the task is then not "
                  "evaluated; `holdout_fraction: 0.1` instead holds out part of train).",
    "test": "Fill it, or remove `test:` from the task YAML.",
}


def input_fields(task: TaskSpec, first_example: dict[str, Any]) -> list[str]:
    """Names of the input fields of a task's examples.

    ``task.text_fields`` when given; else ``["tokens"]`` for token tasks and, for sequence
    tasks, ``["text_a", "text_b"]`` when the first example has ``text_a``, otherwise ``["text"]``.
    Raw rows and normalized examples give the same answer, so the encoder uses it too.
    """
    return task_type_of(task).input_fields(task, first_example)


def read_split(
    task: TaskSpec, split: str, *, seed: int = 0, apply_limit: bool = True
) -> list[dict[str, Any]]:
    """Read and check one split of a task.

    Args:
        task: The task spec; relative paths resolve against ``task.base_dir``.
        split: ``train``, ``validation`` or ``test``; the task must have a source for it.
        seed: Seed of the random subset taken when the source has ``limit``.
        apply_limit: Set ``False`` to read every row even when the source has ``limit``
            (the label vocabulary is built from the whole train split).

    Returns:
        Normalized examples in file order (see :mod:`multitask_bert.data.rows`).

    Raises:
        DataError: The source is missing or a row is malformed (the message names the
            file, the line or row, the field and the fix).
    """
    source = _source(task, split)
    path = task.resolve_path(source)
    rows = read_raw_rows(task, split, source, path)
    if not rows:
        raise DataError(
            f"{path}: no examples in the {split} split of task {task.name!r} (the source is "
            f"empty or holds only blank/comment lines). {_EMPTY_SPLIT_FIX[split]}"
        )
    fields = input_fields(task, rows[0][1] if isinstance(rows[0][1], dict) else {})
    validate = RowValidator(task, fields, path)
    examples = [validate(where, row) for where, row in rows]
    if apply_limit and source.limit is not None:
        examples = take_subset(examples, source.limit, seed)
    return examples


def take_subset(examples: list[Any], limit: int, seed: int) -> list[Any]:
    """A seeded random subset of ``limit`` items, in their original order."""
    if limit >= len(examples):
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def source_fingerprint(task: TaskSpec, split: str) -> str:
    """Content fingerprint of a split's source.

    The sha256 of the raw bytes for a local file (so a moved file with the same content keeps
    its fingerprint); for ``hf`` sources the loaded dataset's own fingerprint.
    """
    source = _source(task, split)
    path = task.resolve_path(source)
    if source.resolved_format == "hf":
        # `datasets` derives it from the data files (local) or the Hub revision (remote)
        return f"hf:{load_hf(task, split, source, path)._fingerprint}"
    check_exists(task, split, source, path)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _source(task: TaskSpec, split: str) -> SourceSpec:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {list(SPLITS)}")
    source = task.source(split)
    if source is None:
        raise DataError(
            f"task {task.name!r} has no `{split}` source; add `{split}:` to the task YAML or "
            f"do not ask for this split"
        )
    return source
