"""The task types the pipeline knows, keyed by the ``type:`` of a task YAML."""

from __future__ import annotations

from typing import TYPE_CHECKING

from multitask_bert.task_types.base import TaskType

if TYPE_CHECKING:
    from multitask_bert.tasks import TaskSpec

TASK_TYPES: dict[str, TaskType] = {}
"""Registered task types by name (one instance each: task types hold no state)."""


def register_task_type(cls: type[TaskType]) -> type[TaskType]:
    """Class decorator: make a :class:`TaskType` subclass available as ``type: <cls.name>``."""
    TASK_TYPES[cls.name] = cls()
    return cls


def task_type_of(task: TaskSpec | str) -> TaskType:
    """The task type of a task spec (or of a type name)."""
    name = task if isinstance(task, str) else task.type
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise ValueError(f"unknown task type {name!r}; known: {sorted(TASK_TYPES)}") from None
