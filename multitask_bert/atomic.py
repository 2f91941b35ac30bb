"""Write a file whole or not at all: a temporary file next to it, then ``os.replace``.

A reader (the flow, a dashboard) or a crash mid-write never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` in one step (the temporary file is in the same folder,
    so the rename never crosses file systems)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """``data`` as indented JSON, keys in their order; values JSON does not know (numpy or
    tensor scalars) are written as floats."""
    write_text_atomic(path, json.dumps(data, indent=2, default=float))
