"""Tokenising normalized examples, aligning labels to sub-words, and the Arrow table layout.

The table of one split (what the trainer reads; exact column names):

* ``input_ids`` list<int32>, ``attention_mask`` list<int8>, ``token_type_ids`` list<int8>
  (zeros for a single text), ``length`` int32 (sub-words incl. special tokens), ``example_id``
  int32 (index of the example within the split, after any subset).
* per head ``label__<head>``: classification int64 id; multilabel list<float32> multi-hot over
  the vocabulary; regression float32; tagging list<int32> aligned to sub-words, the word's label
  on its *first* sub-word and -100 on every other position (special tokens, continuations).
* token tasks only: ``word_label__<head>`` list<int32>, the word-level gold ids of *every* word
  (truncated ones included, so word-level metrics see the whole sentence); ``num_words``,
  ``num_words_kept`` (words that have a label position) and ``num_words_truncated`` (words
  cut off by ``max_length``), int32.

Stats per split: ``examples``, ``truncated_examples``, ``truncated_words`` (token tasks: words
cut off by ``max_length``; sequence tasks count examples whose sub-words were cut and report 0
words) and ``empty_words``: words the tokenizer turns into no sub-word at all (e.g. a lone
zero-width space). Such a word is not truncated; it just has no label position, so it counts
in ``num_words`` but in neither ``num_words_kept`` nor ``num_words_truncated``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa

from multitask_bert.data.alignment import IGNORE_INDEX, align_labels, first_subword_positions
from multitask_bert.data.rows import LOCATION_KEY
from multitask_bert.errors import DataError
from multitask_bert.heads import HeadType, build_head_type
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import TaskSpec

__all__ = [
    "IGNORE_INDEX",
    "align_labels",
    "build_label_vocab",
    "encode_split",
    "first_subword_positions",
    "sorted_labels",
    "table_schema",
]

logger = logging.getLogger("multitask_bert.data")

CHUNK_SIZE = 1000
"""Examples per batched tokenizer call."""

_FEW_LABELS = 10


# --------------------------------------------------------------------------------------------
# Label vocabularies
# --------------------------------------------------------------------------------------------


def build_label_vocab(task: TaskSpec, train_examples: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Label vocabulary of each head that has one (regression heads have none).

    ``head.labels`` from the task YAML when given (in that order), else the sorted unique
    labels of the train split (numerically when every label is an integer, so ``"2"`` comes
    before ``"10"``). A vocabulary read from the data is logged: its size, and each label seen
    fewer than :data:`RARE_LABEL_COUNT` times with its count and first line, since a typo in
    a tag becomes a class of its own there instead of an error.
    """
    vocab: dict[str, list[str]] = {}
    for head in task.heads:
        kind = build_head_type(head)
        if not kind.has_vocabulary:
            continue
        if head.labels is not None:
            vocab[head.name] = list(head.labels)
            continue
        counts: Counter[str] = Counter()
        first: dict[str, str] = {}
        for example in train_examples:
            labels = kind.labels_in(example[head.field])
            counts.update(labels)
            for label in labels:
                first.setdefault(label, example.get(LOCATION_KEY, "?"))
        if not counts:
            raise DataError(
                f"task {task.name!r}, head {head.name!r}: the train split holds no label at all; "
                f"list the labels under `labels:` of head {head.name!r} in the task YAML"
            )
        vocab[head.name] = sorted_labels(set(counts))
        _log_vocabulary(task, head.name, vocab[head.name], counts, first)
    return vocab


RARE_LABEL_COUNT = 3
"""A label read from train data seen fewer times than this is logged with its first line."""


def _log_vocabulary(task: TaskSpec, head: str, labels: list[str], counts: Counter[str],
                    first: dict[str, str]) -> None:
    logger.info("%s/%s: %d labels read from the train split (no `labels:` in the task YAML): %s",
                task.name, head, len(labels), _few(labels))
    rare = [label for label in labels if counts[label] < RARE_LABEL_COUNT]
    if not rare:
        return
    source = task.resolve_path(task.train) if task.train else "train"
    seen = [f"{label!r} {counts[label]}x (first: {first[label]})" for label in rare]
    logger.warning(
        "%s/%s: %d of %d labels occur fewer than %d times in %s: %s. Each is a class of its "
        "own; if one is a typo, fix the rows, or list the labels under `labels:` of head %r in "
        "the task YAML so that an unknown label is an error",
        task.name, head, len(rare), len(labels), RARE_LABEL_COUNT, source, _few(seen), head)


def _few(items: list[str]) -> str:
    return ", ".join(items[:_FEW_LABELS]) + (
        f", ... ({len(items)} in all)" if len(items) > _FEW_LABELS else "")


def sorted_labels(labels: set[str] | list[str]) -> list[str]:
    """Labels sorted as strings, or as numbers when all of them are integers."""
    labels = set(labels)
    if all(_is_int(label) for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


class _UnknownLabels:
    """Builds the error for a label outside its head's vocabulary, naming file and line."""

    def __init__(self, source_name: str, split_name: str) -> None:
        self.source_name, self.split_name = source_name, split_name

    def error(self, examples: list[dict[str, Any]], head: HeadType) -> DataError:
        """The error for the first label of ``head`` in ``examples`` (a split) not in its
        vocabulary; with a vocabulary read from train, it counts every such label."""
        spec, vocab = head.spec, head.labels
        unknown: Counter[str] = Counter()
        where = None
        for example in examples:
            for label in head.labels_in(example[spec.field]):
                if label not in head.label_ids:
                    unknown[label] += 1
                    where = where or (example.get(LOCATION_KEY, "?"), label)
        if where is None:  # pragma: no cover
            raise AssertionError("no unknown label")
        location, label = where
        at = f"{self.source_name}, {location}, field {spec.field!r}: label {label!r} of head " \
             f"{spec.name!r} ({self.split_name} split)"
        if spec.labels is not None:
            return DataError(
                f"{at} is not in the label vocabulary (known: {_few(vocab)}). Add it to "
                f"`labels:` of head {spec.name!r} in the task YAML, or fix the row."
            )
        others = ", ".join(f"{name!r} {count}x" for name, count in unknown.most_common(5))
        return DataError(
            f"{at} does not occur in the train split, which this head's labels come from (no "
            f"`labels:` in the task YAML; train has: {_few(vocab)}). Labels of the "
            f"{self.split_name} split missing from train: {others}. Fix the row, add train "
            f"examples with the label, or list every label under `labels:` of head "
            f"{spec.name!r} in the task YAML (a label without train examples is then never "
            "learnt)."
        )


# --------------------------------------------------------------------------------------------
# Encoding one split
# --------------------------------------------------------------------------------------------

INPUT_FIELDS = [
    pa.field("input_ids", pa.list_(pa.int32())),
    pa.field("attention_mask", pa.list_(pa.int8())),
    pa.field("token_type_ids", pa.list_(pa.int8())),
    pa.field("length", pa.int32()),
    pa.field("example_id", pa.int32()),
]
"""The columns every task's table starts with."""


def table_schema(task: TaskSpec, label_vocab: dict[str, list[str]] | None = None) -> pa.Schema:
    """Arrow schema of a task's encoded splits: the inputs, every head's label column, then
    the heads' further columns (``word_label__<head>``) and the task type's own."""
    vocab = label_vocab or {}
    per_head = [build_head_type(h, vocab.get(h.name)).fields() for h in task.heads]
    fields = [*INPUT_FIELDS, *(columns[0] for columns in per_head)]
    fields += [field for columns in per_head for field in columns[1:]]
    return pa.schema(fields + task_type_of(task).fields(task))


def encode_split(
    examples: list[dict[str, Any]],
    task: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    label_vocab: dict[str, list[str]],
    split_name: str,
    source_name: str,
) -> tuple[pa.Table, dict[str, int]]:
    """Tokenise one split and align its labels.

    Args:
        examples: Normalized examples from :func:`~multitask_bert.data.sources.read_split`.
        task: The task spec.
        tokenizer: A Hugging Face *fast* tokenizer (its Rust ``backend_tokenizer`` does the work).
        max_length: Sub-word truncation length, special tokens included.
        label_vocab: Vocabulary per head, from :func:`build_label_vocab`.
        split_name: Split name, for messages.
        source_name: File (or dataset id) the examples came from, for messages.

    Returns:
        The table (schema :func:`table_schema`) and the stats ``examples``,
        ``truncated_examples``, ``truncated_words`` and ``empty_words``.

    Raises:
        DataError: A label is not in its head's vocabulary (names the file, line, head, label).
    """
    stats = {
        "examples": len(examples),
        "truncated_examples": 0,
        "truncated_words": 0,
        "empty_words": 0,
    }
    schema = table_schema(task, label_vocab)
    if not examples:
        return schema.empty_table(), stats
    task_type = task_type_of(task)
    fields = task_type.input_fields(task, examples[0])
    heads = [build_head_type(h, label_vocab.get(h.name)) for h in task.heads]
    unknown = _UnknownLabels(source_name, split_name)
    tables = []
    with _truncating(tokenizer, max_length) as backend:
        state = task_type.prepare_split(task, tokenizer, backend, examples, fields, max_length)
        for start in range(0, len(examples), CHUNK_SIZE):
            chunk = examples[start : start + CHUNK_SIZE]
            columns, alignment = task_type.encode_chunk(backend, chunk, fields, max_length, stats,
                                                        state, start)
            for head in heads:
                try:
                    columns.update(head.encode([ex[head.spec.field] for ex in chunk], alignment))
                except KeyError:
                    raise unknown.error(examples, head) from None  # the whole split
            columns["example_id"] = pa.array(np.arange(start, start + len(chunk), dtype=np.int32))
            tables.append(
                pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)
            )
    return pa.concat_tables(tables).combine_chunks(), stats


@contextmanager
def _truncating(tokenizer: Any, max_length: int) -> Iterator[Any]:
    """The Rust tokenizer set to truncate at ``max_length`` without padding; restored after.

    Calling the Rust tokenizer directly (as ``transformers`` does inside ``__call__``) skips
    the per-example conversion to Python dicts, a third of the time of a ``__call__``.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"tokenize with a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True)); "
            f"{type(tokenizer).__name__} has no Rust backend"
        )
    truncation, padding = backend.truncation, backend.padding
    direction = getattr(tokenizer, "truncation_side", "right")
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=direction)
    backend.no_padding()
    try:
        yield backend
    finally:
        if truncation:
            backend.enable_truncation(**truncation)
        else:
            backend.no_truncation()
        if padding:
            backend.enable_padding(**padding)


