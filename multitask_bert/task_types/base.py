"""The task-type unit: what one kind of example (its inputs) means for reading, tokenising and
predicting. Heads say what a label means (:mod:`multitask_bert.heads`); a task type says what
the *inputs* are: one text or a pair (``sequence``), or pre-split words (``token``).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa

from multitask_bert.data.alignment import list_array
from multitask_bert.errors import DataError

if TYPE_CHECKING:
    from multitask_bert.data.alignment import ChunkAlignment, RowWords
    from multitask_bert.tasks import TaskSpec

FieldFail = Callable[[str, str, str], DataError]
"""``fail(field, problem, fix)``: the error naming the file, the line and the field."""


class TaskType:
    """One task type. Subclass, set :attr:`name`, register with
    :func:`multitask_bert.task_types.register_task_type`."""

    name: ClassVar[str]
    max_text_fields: ClassVar[int] = 1
    """How many input fields ``text_fields`` may name."""
    column_files: ClassVar[bool] = False
    """Whether CoNLL column files can hold this type's examples."""

    def check_task(self, task: TaskSpec) -> None:
        """Raise ``ValueError`` for a task option this type does not take."""
        for option in ("document_context", "word_shape"):
            if getattr(task, option):
                raise ValueError(f"task {task.name!r}: `{option}` applies to token tasks only")

    def input_fields(self, task: TaskSpec, first_row: dict[str, Any]) -> list[str]:
        """Names of the input fields of a task's examples (raw rows and normalized examples
        give the same answer)."""
        raise NotImplementedError

    def normalize_inputs(self, row: dict[str, Any], fields: list[str], fail: FieldFail
                         ) -> dict[str, Any]:
        """The checked input fields of one raw row."""
        raise NotImplementedError

    def words(self, example: dict[str, Any], fields: list[str]) -> list[str] | None:
        """The words of a normalized example, for heads with one label per word."""
        return None

    def example_shape(self, fields: list[str], head_fields: list[str]) -> str:
        """What one example looks like, for messages."""
        raise NotImplementedError

    def row_extras(self, task: TaskSpec, row: dict[str, Any], fail: FieldFail) -> dict[str, Any]:
        """Further values a normalized example keeps from its raw row (e.g. its document)."""
        return {}

    def fields(self, task: TaskSpec) -> list[pa.Field]:
        """Columns this type adds to a task's cache table (after the inputs and labels)."""
        return []

    def prepare_split(
        self, task: TaskSpec, tokenizer: Any, backend: Any, examples: list[dict[str, Any]],
        fields: list[str], max_length: int,
    ) -> Any:
        """What encoding a split needs beyond one chunk (e.g. each sentence's document
        neighbours); passed to every :meth:`encode_chunk` call of the split."""
        return None

    def encode_chunk(
        self, backend: Any, chunk: list[dict[str, Any]], fields: list[str], max_length: int,
        stats: dict[str, int], split_state: Any = None, start: int = 0,
    ) -> tuple[dict[str, Any], ChunkAlignment | None]:
        """Tokenise the inputs of a chunk of examples with the Rust tokenizer ``backend``
        (truncating at ``max_length``, no padding): the input columns of the cache table,
        this type's own columns, and the word alignment (token tasks). Adds to ``stats``.
        ``split_state`` is :meth:`prepare_split`'s; ``start`` the chunk's first example."""
        raise NotImplementedError

    def check_prediction_row(self, task: TaskSpec, row: dict[str, Any], number: int) -> None:
        """Raise :class:`~multitask_bert.errors.RowError` (row ``number``, the field, what
        was expected) when a row given for prediction lacks this type's inputs."""
        raise NotImplementedError

    def example_row(self, task: TaskSpec) -> dict[str, Any]:
        """A made-up input row of the right shape (when no data row is at hand)."""
        raise NotImplementedError

    def describe_inputs(self, task: TaskSpec) -> str:
        """The input fields a prediction row needs, for docs."""
        raise NotImplementedError

    def encode_rows(
        self, tokenizer: Any, task: TaskSpec, rows: list[dict[str, Any]], max_length: int,
        first_row: int = 0,
    ) -> tuple[Any, list[RowWords] | None]:
        """Tokenise rows given for prediction (padded tensors), and the words of each row
        (token tasks: the words, and their character offsets when the row was text).
        ``first_row`` numbers the rows in messages; a malformed row raises ``RowError``."""
        raise NotImplementedError


def present_fields(row: dict[str, Any]) -> str:
    """The fields a row has, for messages."""
    return ", ".join(sorted(row)) or "none"


def input_columns(encodings: list[Any], pairs: bool) -> tuple[dict[str, Any], np.ndarray]:
    """The input columns of a chunk (built from flat arrays, no padding) and the row offsets
    into the flat sub-word arrays."""
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
        "input_ids": list_array(offsets, flat_ids),
        "attention_mask": list_array(offsets, np.ones(total, dtype=np.int8)),  # no padding here
        "token_type_ids": list_array(offsets, flat_types),
        "length": pa.array(lengths),
    }
    return columns, offsets
