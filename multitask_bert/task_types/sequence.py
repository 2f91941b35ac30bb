"""``sequence``: one text, or a pair of texts, per example; heads label the whole example."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multitask_bert.errors import RowError, short_repr
from multitask_bert.task_types.base import FieldFail, TaskType, input_columns, present_fields
from multitask_bert.task_types.registry import register_task_type

if TYPE_CHECKING:
    from multitask_bert.data.alignment import ChunkAlignment, RowWords
    from multitask_bert.tasks import TaskSpec


@register_task_type
class SequenceTask(TaskType):
    """Inputs ``text`` or ``text_a`` + ``text_b`` (or the fields ``text_fields`` names)."""

    name = "sequence"
    max_text_fields = 2

    def input_fields(self, task: TaskSpec, first_row: dict[str, Any]) -> list[str]:
        if task.text_fields:
            return list(task.text_fields)
        return ["text_a", "text_b"] if "text_a" in first_row else ["text"]

    def normalize_inputs(self, row: dict[str, Any], fields: list[str], fail: FieldFail
                         ) -> dict[str, Any]:
        example = {}
        for field in fields:
            value = row[field]
            if not isinstance(value, str):
                raise fail(field, f"expected a string, got {type(value).__name__} "
                           f"{short_repr(value)}", "Input text must be a string")
            if not value.strip():
                raise fail(field, "empty text", "Remove the row or give it text")
            example[field] = value
        return example

    def example_shape(self, fields: list[str], head_fields: list[str]) -> str:
        texts = ", ".join(f'"{f}": "..."' for f in fields)
        return f"{{{texts}, " + ", ".join(f'"{h}": ...' for h in head_fields) + "}"

    def encode_chunk(
        self, backend: Any, chunk: list[dict[str, Any]], fields: list[str], max_length: int,
        stats: dict[str, int], split_state: Any = None, start: int = 0,
    ) -> tuple[dict[str, Any], ChunkAlignment | None]:
        if len(fields) > 1:
            first, second = fields
            inputs = [(example[first], example[second]) for example in chunk]
        else:
            inputs = [example[fields[0]] for example in chunk]
        encodings = backend.encode_batch(inputs, add_special_tokens=True)
        columns, _ = input_columns(encodings, pairs=len(fields) > 1)
        # only a full-length row can have been cut; its overflow then holds the cut sub-words
        stats["truncated_examples"] += sum(
            1 for encoding in encodings if len(encoding) >= max_length and encoding.overflowing
        )
        return columns, None

    def check_prediction_row(self, task: TaskSpec, row: dict[str, Any], number: int) -> None:
        fields = self.input_fields(task, row)
        shape = " + ".join(f"{f!r} (a string)" for f in fields)
        for field in fields:
            value = row.get(field)
            if value is None:
                raise RowError(number, field, f"missing (the row has fields: "
                               f"{present_fields(row)})", f"Task {task.name!r} takes {shape}")
            if not isinstance(value, str):
                raise RowError(number, field, f"expected a string, got {type(value).__name__} "
                               f"{short_repr(value)}", f"Task {task.name!r} takes {shape}")
            if not value.strip():
                raise RowError(number, field, "empty text", "Give it text")

    def example_row(self, task: TaskSpec) -> dict[str, Any]:
        fields = list(task.text_fields or ["text"])
        texts = (["A man is playing a guitar.", "Someone plays an instrument."]
                 if len(fields) == 2 else ["The service was quick and friendly."])
        return dict(zip(fields, texts, strict=True))

    def describe_inputs(self, task: TaskSpec) -> str:
        if task.text_fields:
            return " + ".join(task.text_fields)
        return "text, or text_a + text_b"

    def encode_rows(
        self, tokenizer: Any, task: TaskSpec, rows: list[dict[str, Any]], max_length: int,
        first_row: int = 0,
    ) -> tuple[Any, list[RowWords] | None]:
        for i, row in enumerate(rows):
            self.check_prediction_row(task, row, first_row + i + 1)
        fields = self.input_fields(task, rows[0])
        columns = [[row[field] for row in rows] for field in fields]
        encoding = tokenizer(*columns, truncation=True, max_length=max_length, padding=True,
                             return_tensors="pt")
        return encoding, None
