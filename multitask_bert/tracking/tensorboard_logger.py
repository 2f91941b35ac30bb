"""TensorBoard backend: scalars, params and tags as event files under one log folder.

`torch.utils.tensorboard` is imported when the first logger is built (it imports torch).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from multitask_bert.atomic import write_text_atomic
from multitask_bert.tracking.base import check_status, flatten_params, serialize_dict

logger = logging.getLogger(__name__)


def markdown_table(rows: Mapping[str, str]) -> str:
    """Renders key/value pairs as a two-column markdown table (TensorBoard's text tab)."""

    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    lines = ["| key | value |", "|---|---|"]
    lines += [f"| {cell(key)} | {cell(value)} |" for key, value in sorted(rows.items())]
    return "\n".join(lines)


class TensorBoardLogger:
    """Writes TensorBoard event files with `SummaryWriter`.

    Args:
        log_dir: folder for the event files (`<run dir>/tensorboard`); created if missing.
        purge_step: when resuming from a checkpoint at this step, TensorBoard hides the
            events a crashed earlier attempt wrote at this step and later.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=purge_step)
        self._params: dict[str, str] = {}
        self._tags: dict[str, str] = {}
        self._text_writes = 0
        self._closed = False

    @property
    def run_id(self) -> None:
        """TensorBoard has no run ids."""
        return None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"TensorBoardLogger for {self.log_dir} is closed")

    def _write_text(self, tag: str, rows: Mapping[str, str]) -> None:
        # Each write shows every key so far, at its own step, so the latest table is complete.
        self._writer.add_text(tag, markdown_table(rows), global_step=self._text_writes)
        self._text_writes += 1

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Writes the params (flattened) as a markdown table under the text tag `params`."""
        self._check_open()
        self._params.update(flatten_params(params))
        self._write_text("params", self._params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Writes one scalar per key at `step`."""
        self._check_open()
        for key, value in metrics.items():
            self._writer.add_scalar(key, float(value), global_step=int(step))

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Writes `obj` as JSON or YAML to `<log_dir>/<artifact_file>`."""
        self._check_open()
        target = (self.log_dir / artifact_file).resolve()
        if not target.is_relative_to(self.log_dir.resolve()):
            raise ValueError(f"log_dict: {artifact_file!r} points outside {self.log_dir}")
        text = serialize_dict(obj, artifact_file)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, text)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Does nothing: TensorBoard has no artifact store, and the file stays where it is."""
        self._check_open()
        logger.debug("TensorBoardLogger: not copying artifact %s", path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Writes the tags as a markdown table under the text tag `tags`."""
        self._check_open()
        self._tags.update({key: str(value) for key, value in tags.items()})
        self._write_text("tags", self._tags)

    def close(self, status: str = "FINISHED") -> None:
        """Flushes and closes the event file; later calls do nothing."""
        check_status(status)
        if self._closed:
            return
        self._writer.flush()
        self._writer.close()
        self._closed = True

    def __repr__(self) -> str:
        return f"TensorBoardLogger(log_dir={str(self.log_dir)!r})"
