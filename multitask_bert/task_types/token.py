"""``token``: pre-split words per example; heads label every word (``tagging``).

Two task options change how a sentence is encoded (both off by default):

* ``document_context``: the sentence sits between sub-words of its neighbouring sentences of
  the same document, ``[CLS] left context + sentence + right context [SEP]``, up to
  ``max_length`` (the sentence first; the room left is shared between the two sides, half
  each, the unused half of one side going to the other). Labels, predictions and scores stay
  on the sentence's own words: context positions carry no label and no word.
* ``word_shape``: a ``word_shape`` column holds each word's shape id
  (:mod:`multitask_bert.data.word_shape`) on its first sub-word, 0 elsewhere; the model adds
  a learned shape embedding there before the tagging heads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from multitask_bert.data.alignment import ChunkAlignment, RowWords, first_subword_positions
from multitask_bert.data.word_shape import NO_SHAPE, word_shape
from multitask_bert.errors import DataError, RowError, short_repr
from multitask_bert.task_types.base import FieldFail, TaskType, input_columns, present_fields
from multitask_bert.task_types.registry import register_task_type

if TYPE_CHECKING:
    from multitask_bert.tasks import TaskSpec

DOCUMENT_KEY = "_document"
"""Key of a normalized example that holds its document id (``document_context`` tasks)."""
WORD_SHAPE_COLUMN = "word_shape"
LEFT_CONTEXT, RIGHT_CONTEXT = "left_context", "right_context"
"""Optional fields of a row given for prediction: the words before and after the sentence in
its document (a list of words, or a string split on whitespace)."""


@dataclass
class TokenSplit:
    """What encoding one split of a token task needs beyond a chunk."""

    word_shape: bool
    document_context: bool
    cls_id: int = 0
    sep_id: int = 0
    sentences: list[Any] | None = None
    """Every example's own sub-words (no special tokens), for its neighbours' context."""
    documents: list[str] | None = None


@register_task_type
class TokenTask(TaskType):
    """Input ``tokens`` (a list of words). Cache columns ``num_words``, ``num_words_kept``
    (words that have a label position) and ``num_words_truncated`` (words cut off by
    ``max_length``; the rest of the words without a position are empty ones, which the
    tokenizer turns into no sub-word) beside the heads' columns."""

    name = "token"
    column_files = True

    def check_task(self, task: TaskSpec) -> None:
        return None  # document_context and word_shape are this type's options

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

    def row_extras(self, task: TaskSpec, row: dict[str, Any], fail: FieldFail) -> dict[str, Any]:
        if not task.document_context:
            return {}
        document = row.get(task.document_field)
        if isinstance(document, bool) or not isinstance(document, (str, int)):
            raise fail(task.document_field, f"no document id (got {short_repr(document)})",
                       "`document_context: true` needs each row's document: -DOCSTART- lines "
                       "of a CoNLL file, or a document id in this field (`document_field:`)")
        return {DOCUMENT_KEY: str(document)}

    def words(self, example: dict[str, Any], fields: list[str]) -> list[str] | None:
        return example[fields[0]]

    def example_shape(self, fields: list[str], head_fields: list[str]) -> str:
        tags = ", ".join(f'"{h}": [...]' for h in head_fields)
        return f'{{"{fields[0]}": [...], {tags}}}'

    def fields(self, task: TaskSpec) -> list[pa.Field]:
        fields = [pa.field("num_words", pa.int32()), pa.field("num_words_kept", pa.int32()),
                  pa.field("num_words_truncated", pa.int32())]
        if task.word_shape:
            fields.append(pa.field(WORD_SHAPE_COLUMN, pa.list_(pa.int8())))
        return fields

    def prepare_split(
        self, task: TaskSpec, tokenizer: Any, backend: Any, examples: list[dict[str, Any]],
        fields: list[str], max_length: int,
    ) -> TokenSplit:
        state = TokenSplit(word_shape=task.word_shape, document_context=task.document_context)
        if task.document_context:
            words = [example[fields[0]] for example in examples]
            state.sentences = backend.encode_batch(words, is_pretokenized=True,
                                                   add_special_tokens=False)
            state.documents = [example[DOCUMENT_KEY] for example in examples]
            state.cls_id, state.sep_id = _special_ids(tokenizer)
        return state

    def encode_chunk(
        self, backend: Any, chunk: list[dict[str, Any]], fields: list[str], max_length: int,
        stats: dict[str, int], split_state: Any = None, start: int = 0,
    ) -> tuple[dict[str, Any], ChunkAlignment | None]:
        state: TokenSplit = split_state or TokenSplit(word_shape=False, document_context=False)
        word_lists = [example[fields[0]] for example in chunk]
        if state.document_context:
            rows, row_firsts, truncated = _with_context(state, start, word_lists, max_length,
                                                        stats)
        else:
            rows = backend.encode_batch(word_lists, is_pretokenized=True, add_special_tokens=True)
            row_firsts, truncated = [], []
            for words, encoding in zip(word_lists, rows, strict=True):
                firsts = first_subword_positions(encoding.word_ids)
                cut = 0
                if len(firsts) < len(words):
                    cut = _count_missing_words(encoding.word_ids, encoding.overflowing, firsts,
                                               len(words), 0, stats)
                row_firsts.append(firsts)
                truncated.append(cut)
        columns, offsets = input_columns(rows, pairs=False)
        num_words = np.fromiter(map(len, word_lists), dtype=np.int32, count=len(chunk))
        word_offsets = np.zeros(len(chunk) + 1, dtype=np.int32)
        np.cumsum(num_words, out=word_offsets[1:])

        # Alignment: flat (sub-word position, word) of the first sub-word of every kept word.
        positions: list[int] = []
        words: list[int] = []
        for i, firsts in enumerate(row_firsts):
            base, word_base = int(offsets[i]), int(word_offsets[i])
            positions.extend(base + position for position, _ in firsts)
            words.extend(word_base + word for _, word in firsts)
        columns["num_words"] = pa.array(num_words)
        columns["num_words_kept"] = pa.array(np.fromiter(map(len, row_firsts), dtype=np.int32,
                                                          count=len(chunk)))
        columns["num_words_truncated"] = pa.array(np.asarray(truncated, dtype=np.int32))
        alignment = ChunkAlignment(
            subword_offsets=offsets,
            word_offsets=word_offsets,
            positions=np.asarray(positions, dtype=np.int64),
            words=np.asarray(words, dtype=np.int64),
        )
        if state.word_shape:
            shapes = np.fromiter((word_shape(w) for ws in word_lists for w in ws), dtype=np.int8,
                                 count=int(word_offsets[-1]))
            column = np.full(int(offsets[-1]), NO_SHAPE, dtype=np.int8)
            column[alignment.positions] = shapes[alignment.words]
            columns[WORD_SHAPE_COLUMN] = pa.ListArray.from_arrays(
                pa.array(offsets, pa.int32()), pa.array(column))
        return columns, alignment

    def check_prediction_row(self, task: TaskSpec, row: dict[str, Any], number: int) -> None:
        _row_words(task, row, number)

    def example_row(self, task: TaskSpec) -> dict[str, Any]:
        field = task.text_fields[0] if task.text_fields else "tokens"
        return {field: ["Maria", "Lopez", "flew", "to", "Lima", "."]}

    def describe_inputs(self, task: TaskSpec) -> str:
        field = task.text_fields[0] if task.text_fields else "tokens"
        context = (f"; optional {LEFT_CONTEXT} / {RIGHT_CONTEXT} (the words around it in its "
                   "document)" if task.document_context else "")
        return f"{field} (a list of words), or text{context}"

    def encode_rows(
        self, tokenizer: Any, task: TaskSpec, rows: list[dict[str, Any]], max_length: int,
        first_row: int = 0,
    ) -> tuple[Any, list[RowWords] | None]:
        given = [_row_words(task, row, first_row + i + 1) for i, row in enumerate(rows)]
        word_lists = [row_words for row_words, _ in given]
        if task.document_context:
            encoding, firsts = _rows_with_context(tokenizer, rows, word_lists, max_length,
                                                  first_row)
        else:
            encoding = tokenizer(word_lists, is_split_into_words=True, truncation=True,
                                 max_length=max_length, padding=True, return_tensors="pt")
            firsts = [first_subword_positions(encoding.word_ids(i)) for i in range(len(rows))]
        if task.word_shape:
            shapes = torch.zeros_like(encoding["input_ids"])
            for row, (row_firsts, row_words) in enumerate(zip(firsts, word_lists, strict=True)):
                for position, word in row_firsts:
                    shapes[row, position] = word_shape(row_words[word])
            encoding["word_shapes"] = shapes
        words = [RowWords(row_firsts, len(row_words), words=row_words, char_spans=char_spans)
                 for row_firsts, (row_words, char_spans) in zip(firsts, given, strict=True)]
        return encoding, words


def _special_ids(tokenizer: Any) -> tuple[int, int]:
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    cls_id = tokenizer.bos_token_id if cls_id is None else cls_id
    sep_id = tokenizer.eos_token_id if sep_id is None else sep_id
    if cls_id is None or sep_id is None:
        raise DataError(f"document_context needs a tokenizer with [CLS]/[SEP] (or <s>/</s>) "
                        f"tokens; {type(tokenizer).__name__} has none")
    return int(cls_id), int(sep_id)


def fit_context(sentence: int, left: int, right: int, budget: int) -> tuple[int, int, int]:
    """How many sub-words of the sentence, the left and the right context fit in ``budget``:
    the sentence first, then the room shared, half each, one side's unused half going to
    the other. Returns ``(sentence, left, right)``."""
    kept = min(sentence, budget)
    room = budget - kept
    left_n = min(left, max(room // 2, room - right))
    return kept, left_n, min(right, room - left_n)


class _Row:
    """A row's sub-word ids (what :func:`input_columns` reads of an encoding)."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids


def _neighbours(state: TokenSplit, index: int, step: int, need: int) -> list[int]:
    """Up to ``need`` sub-words of the sentences before (``step=-1``) or after (``+1``)
    ``index`` in its document, nearest last (before) or first (after)."""
    assert state.sentences is not None and state.documents is not None
    document, pieces, total, j = state.documents[index], [], 0, index + step
    while total < need and 0 <= j < len(state.sentences) and state.documents[j] == document:
        pieces.append(state.sentences[j].ids)
        total += len(state.sentences[j].ids)
        j += step
    if step < 0:
        flat = [i for piece in reversed(pieces) for i in piece]
        return flat[max(0, len(flat) - need):]
    return [i for piece in pieces for i in piece][:need]


def _with_context(state: TokenSplit, start: int, word_lists: list[list[str]], max_length: int,
                  stats: dict[str, int]
                  ) -> tuple[list[_Row], list[list[tuple[int, int]]], list[int]]:
    """The chunk's rows, each sentence between its document neighbours' sub-words, the
    first sub-word positions of each and its number of truncated words."""
    assert state.sentences is not None
    budget = max_length - 2
    rows, row_firsts, truncated = [], [], []
    for index, words in enumerate(word_lists, start=start):
        sentence = state.sentences[index]
        kept, _, _ = fit_context(len(sentence.ids), 0, 0, budget)
        room = budget - kept
        left = _neighbours(state, index, -1, room)
        right = _neighbours(state, index, +1, room)
        kept, left_n, right_n = fit_context(len(sentence.ids), len(left), len(right), budget)
        ids = [state.cls_id, *left[len(left) - left_n:], *sentence.ids[:kept],
               *right[:right_n], state.sep_id]
        firsts = [(1 + left_n + position, word)
                  for position, word in first_subword_positions(sentence.word_ids[:kept])]
        rows.append(_Row(ids))
        row_firsts.append(firsts)
        cut = 0
        if len(firsts) < len(words):
            cut = _count_missing_words(sentence.word_ids, sentence.overflowing, firsts,
                                       len(words), kept, stats)
        truncated.append(cut)
    return rows, row_firsts, truncated


def _rows_with_context(tokenizer: Any, rows: list[dict[str, Any]], word_lists: list[list[str]],
                       max_length: int, first_row: int = 0
                       ) -> tuple[Any, list[list[tuple[int, int]]]]:
    """Prediction rows with their optional ``left_context`` / ``right_context`` words."""
    cls_id, sep_id = _special_ids(tokenizer)
    budget = max_length - 2
    sequences, firsts = [], []
    for number, (row, words) in enumerate(zip(rows, word_lists, strict=True), first_row + 1):
        sentence = tokenizer(words, is_split_into_words=True, add_special_tokens=False)
        sides = []
        for key in (LEFT_CONTEXT, RIGHT_CONTEXT):
            context = _context_words(row, key, number)
            sides.append(tokenizer(context, is_split_into_words=True,
                                   add_special_tokens=False)["input_ids"] if context else [])
        left, right = sides
        kept, left_n, right_n = fit_context(len(sentence["input_ids"]), len(left), len(right),
                                            budget)
        sequences.append([cls_id, *left[len(left) - left_n:], *sentence["input_ids"][:kept],
                          *right[:right_n], sep_id])
        firsts.append([(1 + left_n + position, word) for position, word in
                       first_subword_positions(sentence.word_ids()[:kept])])
    width = max(map(len, sequences))
    pad = tokenizer.pad_token_id or 0
    input_ids = torch.full((len(sequences), width), pad, dtype=torch.long)
    attention = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, ids in enumerate(sequences):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
    encoding = {"input_ids": input_ids, "attention_mask": attention,
                "token_type_ids": torch.zeros_like(input_ids)}
    return encoding, firsts


def _context_words(row: dict[str, Any], key: str, number: int) -> list[str]:
    """A prediction row's optional context words: a list of strings, or a string."""
    value = row.get(key)
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list) and all(isinstance(w, str) for w in value):
        return list(value)
    raise RowError(number, key, f"expected the neighbouring words (a list of strings, or a "
                   f"string), got {type(value).__name__} {short_repr(value)}",
                   "Give the words of the sentences around this one in its document")


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


def _count_missing_words(word_ids: list[int | None], overflowing: list[Any],
                         firsts: list[tuple[int, int]], n_words: int, kept: int,
                         stats: dict[str, int]) -> int:
    """Split words without a label position into truncated ones and empty ones, add both to
    ``stats`` and return the number of truncated ones.

    ``word_ids`` are the sentence's sub-words; with ``kept`` > 0, ``word_ids[kept:]`` were cut
    here (document context), besides what the tokenizer cut (``overflowing``)."""
    kept_words = {word for _, word in firsts}
    cut: set[int] = {word for word in word_ids[kept:] if word is not None} if kept else set()
    for overflow in overflowing:
        cut.update(word for word in overflow.word_ids if word is not None)
    cut -= kept_words  # a word split at the boundary keeps its first sub-word, so its label
    if cut:
        stats["truncated_examples"] += 1
        stats["truncated_words"] += len(cut)
    stats["empty_words"] += n_words - len(kept_words) - len(cut)
    return len(cut)
