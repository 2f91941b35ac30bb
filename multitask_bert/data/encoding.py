"""Tokenising normalized examples, aligning labels to sub-words, and the Arrow table layout.

The table of one split (what the trainer reads; exact column names):

* ``input_ids`` list<int32>, ``attention_mask`` list<int8>, ``token_type_ids`` list<int8>
  (zeros for a single text), ``length`` int32 (sub-words incl. special tokens), ``example_id``
  int32 (index of the example within the split, after any subset).
* per head ``label__<head>``: classification int64 id; multilabel list<float32> multi-hot over
  the vocabulary; regression float32; tagging list<int32> aligned to sub-words, the word's label
  on its *first* sub-word and -100 on every other position (special tokens, continuations).
* token tasks only: ``word_label__<head>`` list<int32>, the word-level gold ids of *every* word
  (truncated ones included, so word-level metrics see the whole sentence); ``num_words`` and
  ``num_words_kept`` int32 (words that have a label position).

Stats per split: ``examples``, ``truncated_examples``, ``truncated_words`` (token tasks: words
cut off by ``max_length``; sequence tasks count examples whose sub-words were cut and report 0
words) and ``empty_words``: words the tokenizer turns into no sub-word at all (e.g. a lone
zero-width space). Such a word is not truncated; it just has no label position, so it counts
in ``num_words`` but not in ``num_words_kept``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa

from multitask_bert.data.sources import LOCATION_KEY, input_fields
from multitask_bert.errors import DataError
from multitask_bert.tasks import HeadSpec, TaskSpec

IGNORE_INDEX = -100
"""Label of positions that carry no loss (special tokens, continuation sub-words)."""

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
    before ``"10"``).
    """
    vocab: dict[str, list[str]] = {}
    for head in task.heads:
        if not head.has_vocabulary:
            continue
        if head.labels is not None:
            vocab[head.name] = list(head.labels)
            continue
        seen: set[str] = set()
        for example in train_examples:
            value = example[head.field]
            if head.type == "classification":
                seen.add(value)
            else:  # tagging and multilabel hold lists
                seen.update(value)
        if not seen:
            raise DataError(
                f"task {task.name!r}, head {head.name!r}: the train split holds no label at all; "
                f"list the labels under `labels:` of head {head.name!r} in the task YAML"
            )
        vocab[head.name] = sorted_labels(seen)
    return vocab


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


def _unknown_label(
    source_name: str,
    split_name: str,
    example: dict[str, Any],
    head: HeadSpec,
    label: Any,
    vocab: list[str],
) -> DataError:
    where = example.get(LOCATION_KEY, "?")
    known = ", ".join(vocab[:_FEW_LABELS]) + (
        f", ... ({len(vocab)} in all)" if len(vocab) > _FEW_LABELS else ""
    )
    return DataError(
        f"{source_name}, {where}, field {head.field!r}: label {label!r} of head {head.name!r} "
        f"({split_name} split) is not in the label vocabulary (known: {known}). Add it to "
        f"`labels:` of head {head.name!r} in the task YAML, or fix the row."
    )


# --------------------------------------------------------------------------------------------
# Sub-word alignment (pure; no tokenizer needed)
# --------------------------------------------------------------------------------------------


def first_subword_positions(word_ids: Sequence[int | None]) -> list[tuple[int, int]]:
    """``(position, word index)`` of the first sub-word of every word that has one."""
    firsts = []
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            firsts.append((position, word))
        previous = word
    return firsts


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Sub-word labels: a word's label on its first sub-word, :data:`IGNORE_INDEX` elsewhere."""
    labels = [IGNORE_INDEX] * len(word_ids)
    for position, word in first_subword_positions(word_ids):
        labels[position] = word_labels[word]
    return labels


# --------------------------------------------------------------------------------------------
# Encoding one split
# --------------------------------------------------------------------------------------------


def table_schema(task: TaskSpec) -> pa.Schema:
    """Arrow schema of a task's encoded splits."""
    fields = [
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("attention_mask", pa.list_(pa.int8())),
        pa.field("token_type_ids", pa.list_(pa.int8())),
        pa.field("length", pa.int32()),
        pa.field("example_id", pa.int32()),
    ]
    label_types = {
        "classification": pa.int64(),
        "multilabel": pa.list_(pa.float32()),
        "regression": pa.float32(),
        "tagging": pa.list_(pa.int32()),
    }
    for head in task.heads:
        fields.append(pa.field(f"label__{head.name}", label_types[head.type]))
    if task.type == "token":
        for head in task.heads:
            fields.append(pa.field(f"word_label__{head.name}", pa.list_(pa.int32())))
        fields += [pa.field("num_words", pa.int32()), pa.field("num_words_kept", pa.int32())]
    return pa.schema(fields)


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
    schema = table_schema(task)
    if not examples:
        return schema.empty_table(), stats
    ctx = _Context(task, label_vocab, split_name, source_name, input_fields(task, examples[0]))
    encode_chunk = _encode_token_chunk if task.type == "token" else _encode_sequence_chunk
    tables = []
    with _truncating(tokenizer, max_length) as backend:
        for start in range(0, len(examples), CHUNK_SIZE):
            chunk = examples[start : start + CHUNK_SIZE]
            columns = encode_chunk(ctx, backend, chunk, max_length, stats)
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


class _Context:
    def __init__(
        self, task: TaskSpec, label_vocab, split_name: str, source_name: str, fields: list[str]
    ):
        self.task, self.label_vocab, self.fields = task, label_vocab, fields
        self.split_name, self.source_name = split_name, source_name
        self.label_ids = {
            head: {label: i for i, label in enumerate(v)} for head, v in label_vocab.items()
        }

    def unknown(self, examples: list[dict[str, Any]], head: HeadSpec) -> DataError:
        """The error for the first label of ``head`` in ``examples`` not in the vocabulary."""
        ids = self.label_ids[head.name]
        for example in examples:
            value = example[head.field]
            for label in value if isinstance(value, list) else [value]:
                if label not in ids:
                    vocab = self.label_vocab[head.name]
                    return _unknown_label(
                        self.source_name, self.split_name, example, head, label, vocab
                    )
        raise AssertionError("no unknown label")  # pragma: no cover


def _list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values))


def _input_columns(encodings: list[Any], pairs: bool) -> tuple[dict[str, Any], np.ndarray]:
    """Input columns of a chunk, built from flat arrays; also the row offsets."""
    ids = [encoding.ids for encoding in encodings]
    lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
    offsets = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    flat_ids = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=total)
    if pairs:
        types = [encoding.type_ids for encoding in encodings]
        flat_types = np.fromiter(chain.from_iterable(types), dtype=np.int8, count=total)
    else:
        flat_types = np.zeros(total, dtype=np.int8)
    columns = {
        "input_ids": _list_array(offsets, flat_ids),
        "attention_mask": _list_array(offsets, np.ones(total, dtype=np.int8)),  # no padding here
        "token_type_ids": _list_array(offsets, flat_types),
        "length": pa.array(lengths),
    }
    return columns, offsets


def _encode_sequence_chunk(ctx: _Context, backend, chunk, max_length: int, stats) -> dict[str, Any]:
    if len(ctx.fields) > 1:
        first, second = ctx.fields
        inputs = [(example[first], example[second]) for example in chunk]
    else:
        inputs = [example[ctx.fields[0]] for example in chunk]
    encodings = backend.encode_batch(inputs, add_special_tokens=True)
    columns, _ = _input_columns(encodings, pairs=len(ctx.fields) > 1)
    # only a full-length row can have been cut; its overflow then holds the cut sub-words
    stats["truncated_examples"] += sum(
        1 for encoding in encodings if len(encoding) >= max_length and encoding.overflowing
    )
    for head in ctx.task.heads:
        values = [example[head.field] for example in chunk]
        if head.type == "regression":
            column = pa.array(values, pa.float32())
        else:
            ids = ctx.label_ids[head.name]
            try:
                if head.type == "classification":
                    column = pa.array([ids[label] for label in values], pa.int64())
                else:  # multilabel: multi-hot over the vocabulary
                    size = len(ids)
                    hot = np.zeros((len(chunk), size), dtype=np.float32)
                    for row, labels in enumerate(values):
                        hot[row, [ids[label] for label in labels]] = 1.0
                    offsets = np.arange(0, len(chunk) * size + 1, size, dtype=np.int32)
                    column = _list_array(offsets, hot.reshape(-1))
            except KeyError:
                raise ctx.unknown(chunk, head) from None
        columns[f"label__{head.name}"] = column
    return columns


def _encode_token_chunk(ctx: _Context, backend, chunk, max_length: int, stats) -> dict[str, Any]:
    words_field = ctx.fields[0]
    word_lists = [example[words_field] for example in chunk]
    encodings = backend.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=True)
    columns, offsets = _input_columns(encodings, pairs=False)
    num_words = np.fromiter(map(len, word_lists), dtype=np.int32, count=len(chunk))
    word_offsets = np.zeros(len(chunk) + 1, dtype=np.int32)
    np.cumsum(num_words, out=word_offsets[1:])

    # Alignment: flat (sub-word position, word) of the first sub-word of every kept word.
    positions: list[int] = []
    words: list[int] = []
    num_kept = np.zeros(len(chunk), dtype=np.int32)
    for i, encoding in enumerate(encodings):
        firsts = first_subword_positions(encoding.word_ids)
        base, word_base = int(offsets[i]), int(word_offsets[i])
        positions.extend(base + position for position, _ in firsts)
        words.extend(word_base + word for _, word in firsts)
        num_kept[i] = len(firsts)
        if len(firsts) < num_words[i]:
            _count_missing_words(encoding, firsts, int(num_words[i]), stats)
    columns["num_words"] = pa.array(num_words)
    columns["num_words_kept"] = pa.array(num_kept)

    total_words, total_subwords = int(word_offsets[-1]), int(offsets[-1])
    positions_array = np.asarray(positions, dtype=np.int64)
    words_array = np.asarray(words, dtype=np.int64)
    for head in ctx.task.heads:
        ids = ctx.label_ids[head.name]
        try:
            word_labels = np.fromiter(
                (ids[tag] for example in chunk for tag in example[head.field]),
                dtype=np.int32,
                count=total_words,
            )
        except KeyError:
            raise ctx.unknown(chunk, head) from None
        labels = np.full(total_subwords, IGNORE_INDEX, dtype=np.int32)
        labels[positions_array] = word_labels[words_array]
        columns[f"label__{head.name}"] = _list_array(offsets, labels)
        columns[f"word_label__{head.name}"] = _list_array(word_offsets, word_labels)
    return columns


def _count_missing_words(encoding: Any, firsts: list[tuple[int, int]], n_words: int, stats) -> None:
    """Split words without a label position into truncated ones and empty ones."""
    kept = {word for _, word in firsts}
    cut: set[int] = set()
    for overflow in encoding.overflowing:
        cut.update(word for word in overflow.word_ids if word is not None)
    cut -= kept  # a word split at the boundary keeps its first sub-word, so its label
    if cut:
        stats["truncated_examples"] += 1
        stats["truncated_words"] += len(cut)
    stats["empty_words"] += n_words - len(kept) - len(cut)
