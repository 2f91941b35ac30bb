"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A reader sees the old file or the new one, never a torn one; a failed write leaves the old
file as it was and no temporary file behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Replace ``path`` with ``text`` atomically."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Replace ``path`` with ``data`` as indented JSON atomically (numpy floats as floats)."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=float))
