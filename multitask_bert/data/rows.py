"""Checking raw rows against a task and turning them into *normalized examples*.

* token tasks: ``{"tokens": [str, ...], "<head.field>": [str, ...], ...}``;
* sequence tasks: ``{"text": str}`` or ``{"text_a": str, "text_b": str}`` plus, per head,
  ``str`` (classification), ``list[str]`` (multilabel) or ``float`` (regression).

The task type checks the inputs (:meth:`TaskType.normalize_inputs`), each head type its
label (:meth:`HeadType.normalize`); this module does what is common to all rows. Input fields
keep their original names. Each example also carries its location under
:data:`LOCATION_KEY`, so later stages (the label vocabulary check) can name the line of a
bad label. Every problem is a :class:`DataError` naming the file, the line (or row), the
field and what to do.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from multitask_bert.errors import DataError, short_repr
from multitask_bert.heads import RawLabel, build_head_type
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import TaskSpec

LOCATION_KEY = "_location"
"""Key of a normalized example that holds where it came from (``"line 12"``, ``"row index 3"``)."""

_FEW = 12  # how many field names an error message lists


class RowValidator:
    """Checks raw rows of one source against a task: ``validate(where, row) -> example``."""

    def __init__(self, task: TaskSpec, fields: list[str], path: str) -> None:
        self.task, self.fields, self.path = task, fields, path
        self.task_type = task_type_of(task)
        self.heads = [build_head_type(head) for head in task.heads]

    def fail(self, where: str, field: str | None, problem: str, fix: str) -> DataError:
        about = f", field {field!r}" if field else ""
        return DataError(f"{self.path}, {where}{about}: {problem}. {fix}")

    def __call__(self, where: str, row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            shape = self.task_type.example_shape(self.fields, [h.spec.field for h in self.heads])
            raise self.fail(
                where,
                None,
                f"expected a JSON object, got {type(row).__name__} {short_repr(row)}",
                "Each example must be an object like " + shape,
            )
        for field in [*self.fields, *(h.spec.field for h in self.heads)]:
            if field not in row:
                have = ", ".join(map(str, list(row)[:_FEW])) or "none"
                raise self.fail(
                    where,
                    field,
                    f"missing (the row has fields: {have})",
                    "Add the field, or name the right one with `column:` (heads) or "
                    "`text_fields:` (inputs) in the task YAML",
                )
        example = self.task_type.normalize_inputs(row, self.fields, partial(self.fail, where))
        example.update(self.task_type.row_extras(self.task, row, partial(self.fail, where)))
        words = self.task_type.words(example, self.fields)
        for head in self.heads:
            field = head.spec.field
            raw = RawLabel(row[field], partial(self.fail, where, field), words, self.fields[0])
            example[field] = head.normalize(raw)
        example[LOCATION_KEY] = where
        return example
