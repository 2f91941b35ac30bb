"""``token``: pre-split words per example; heads label every word (``tagging``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from multitask_bert.data.alignment import ChunkAlignment, RowWords, first_subword_positions
from multitask_bert.errors import RowError, short_repr
from multitask_bert.task_types.base import FieldFail, TaskType, input_columns, present_fields
from multitask_bert.task_types.registry import register_task_type

if TYPE_CHECKING:
    from multitask_bert.tasks import TaskSpec


@register_task_type
class TokenTask(TaskType):
    """Input ``tokens`` (a list of words). Cache columns ``num_words`` and
    ``num_words_kept`` (words that have a label position) beside the heads' columns."""

    name = "token"
    column_files = True

    def input_fields(self, task: TaskSpec, first_row: dict[str, Any]) -> list[str]:
        return list(task.text_fields) if task.text_fields else ["tokens"]

    def normalize_inputs(self, row: dict[str, Any], fields: list[str], fail: FieldFail
                         ) -> dict[str, Any]:
        field = fields[0]
        value = row[field]
        if not isinstance(value, list):
            raise fail(field, f"expected a list of words, got {type(value).__name__} "
                       f"{short_repr(value)}", "Token tasks take pre-split words (JSONL, "
                       "Parquet or CoNLL; CSV cannot hold lists)")
        if not value:
            raise fail(field, "empty word list", "Remove the row or give it words")
        try:
            "".join(value)  # fast check that every word is a string
            return {field: value}
        except TypeError:
            pass
        for i, token in enumerate(value):
            if not isinstance(token, str):
                raise fail(field, f"word {i} is {type(token).__name__} {short_repr(token)}, "
                           "not a string", "Make every word a string")
        return {field: value}  # pragma: no cover - the join above failed for a reason

    def words(self, example: dict[str, Any], fields: list[str]) -> list[str] | None:
        return example[fields[0]]

    def example_shape(self, fields: list[str], head_fields: list[str]) -> str:
        tags = ", ".join(f'"{h}": [...]' for h in head_fields)
        return f'{{"{fields[0]}": [...], {tags}}}'

    def fields(self) -> list[pa.Field]:
        return [pa.field("num_words", pa.int32()), pa.field("num_words_kept", pa.int32())]

    def encode_chunk(
        self, backend: Any, chunk: list[dict[str, Any]], fields: list[str], max_length: int,
        stats: dict[str, int],
    ) -> tuple[dict[str, Any], ChunkAlignment | None]:
        word_lists = [example[fields[0]] for example in chunk]
        encodings = backend.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=True)
        columns, offsets = input_columns(encodings, pairs=False)
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
        alignment = ChunkAlignment(
            subword_offsets=offsets,
            word_offsets=word_offsets,
            positions=np.asarray(positions, dtype=np.int64),
            words=np.asarray(words, dtype=np.int64),
        )
        return columns, alignment

    def check_prediction_row(self, task: TaskSpec, row: dict[str, Any], number: int) -> None:
        _row_words(task, row, number)

    def example_row(self, task: TaskSpec) -> dict[str, Any]:
        field = task.text_fields[0] if task.text_fields else "tokens"
        return {field: ["Maria", "Lopez", "flew", "to", "Lima", "."]}

    def describe_inputs(self, task: TaskSpec) -> str:
        field = task.text_fields[0] if task.text_fields else "tokens"
        return f"{field} (a list of words), or text"

    def encode_rows(
        self, tokenizer: Any, task: TaskSpec, rows: list[dict[str, Any]], max_length: int,
        first_row: int = 0,
    ) -> tuple[Any, list[RowWords] | None]:
        given = [_row_words(task, row, first_row + i + 1) for i, row in enumerate(rows)]
        word_lists = [row_words for row_words, _ in given]
        encoding = tokenizer(word_lists, is_split_into_words=True, truncation=True,
                             max_length=max_length, padding=True, return_tensors="pt")
        words = [RowWords(first_subword_positions(encoding.word_ids(i)), len(row_words),
                          words=row_words, char_spans=char_spans)
                 for i, (row_words, char_spans) in enumerate(given)]
        return encoding, words


_WORD = re.compile(r"\S+")


def _row_words(task: TaskSpec, row: dict[str, Any], number: int
               ) -> tuple[list[str], list[tuple[int, int]] | None]:
    """The words of a prediction row and, when it was text, their character offsets."""
    field = task.text_fields[0] if task.text_fields else "tokens"
    shape = (f"Task {task.name!r} takes {field!r} (a list of words, e.g. [\"Maria\", "
             "\"flew\"]) or 'text' (a string, split on whitespace)")
    value = row.get(field)
    if value is not None:
        if not isinstance(value, list):
            raise RowError(number, field, f"expected a list of words (strings), got "
                           f"{type(value).__name__} {short_repr(value)}", shape)
        if not value:
            raise RowError(number, field, "empty word list", shape)
        for i, word in enumerate(value):
            if not isinstance(word, str) or not word:
                raise RowError(number, field, f"word {i} is {type(word).__name__} "
                               f"{short_repr(word)}, not a non-empty string", shape)
        return list(value), None
    text = row.get("text")
    if text is None:
        raise RowError(number, field, f"missing (the row has fields: {present_fields(row)})",
                       shape)
    if not isinstance(text, str):
        raise RowError(number, "text", f"expected a string, got {type(text).__name__} "
                       f"{short_repr(text)}", shape)
    matches = list(_WORD.finditer(text))
    if not matches:
        raise RowError(number, "text", "empty text", "Give it text")
    return [m.group() for m in matches], [m.span() for m in matches]


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
