"""Errors a user can fix. The CLI prints them without a traceback and exits non-zero."""

from __future__ import annotations


class MultitaskBertError(Exception):
    """Base class: a mistake in the user's input, with a message that says what to do."""


class ConfigError(MultitaskBertError):
    """An experiment or task config is invalid (names the file and the key)."""


class DataError(MultitaskBertError):
    """A data file is missing or malformed (names the file, the line and the field)."""


def short_repr(value: object, limit: int = 60) -> str:
    """``value`` for an error message: JSON (strings as ``repr``), cut to ``limit`` chars."""
    import json

    text = (
        json.dumps(value, ensure_ascii=False, default=str)
        if not isinstance(value, str)
        else repr(value)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."


EXIT_USER_ERROR = 2
"""Exit status of a process stopped by a :class:`MultitaskBertError`: retrying cannot help."""
EXIT_OUT_OF_MEMORY = 3
"""Exit status of a process that ran out of CUDA memory: a smaller per-device batch can help."""


class RowError(DataError):
    """One row given for prediction is malformed: names the row (1-based, in the input),
    the field, what was expected, and the fix."""

    def __init__(self, row: int, field: str | None, problem: str, fix: str = "") -> None:
        self.row = row
        self.field = field
        self.problem = problem
        where = f"row {row}" + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {problem}" + (f". {fix}" if fix else ""))
