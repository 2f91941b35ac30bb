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


class DiskFullError(MultitaskBertError):
    """A write ran out of space (``ENOSPC``, or ``EDQUOT``: a quota). Names the path, about
    how much it needs and how much is free where. Nothing half-written is left behind (see
    :mod:`multitask_bert.atomic`): the previous checkpoint, cache entry, model and JSON files
    stay as they were. Not retried by the flow (a retry seconds later finds the same full
    disk); after freeing space, running the same experiment again resumes from the newest
    checkpoint and reuses the cache."""

    def __init__(self, path: str, needed_bytes: int, free_bytes: int, mount: str,
                 setting: str = "output_dir") -> None:
        self.path, self.needed_bytes, self.free_bytes, self.mount = (
            path, needed_bytes, free_bytes, mount)
        super().__init__(
            f"disk full writing {path}: needs about {_megabytes(needed_bytes)} MB, "
            f"{_megabytes(free_bytes, up=False)} MB free on {mount}; free space or set "
            f"{setting} elsewhere")


def _megabytes(size: int, up: bool = True) -> int:
    """``size`` in MB (10^6 bytes), rounded up (a need) or down (what is free)."""
    return -(-size // 1_000_000) if up else size // 1_000_000


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
