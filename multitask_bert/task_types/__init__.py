"""Task types (``sequence``, ``token``): one module each, a :class:`TaskType` unit."""

from multitask_bert.task_types import sequence, token
from multitask_bert.task_types.base import TaskType
from multitask_bert.task_types.registry import TASK_TYPES, register_task_type, task_type_of

__all__ = ["TASK_TYPES", "TaskType", "register_task_type", "sequence", "task_type_of", "token"]
