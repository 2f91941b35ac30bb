"""Launch and supervise a training process: the flow's ``train`` step, without Prefect.

``run_training(run_dir)`` starts ``python -m multitask_bert train --run-dir <run_dir>`` on
the run folder's resolved ``config.yaml``, streams its log lines to a callback, and turns
its exit status into an outcome a retry policy can act on:

==========  =====================================================================
exit 0      the run folder's ``metrics.json`` (returned)
exit 2      :class:`UserInputError`: bad config or data; retrying cannot help
exit 3      :class:`TrainingOutOfMemory`: CUDA OOM; the run folder's config now has
            half the per-device batch and twice the accumulation (same effective batch),
            so a retry fits
other       :class:`TrainingCrashed`: killed, preempted, crashed; a retry resumes from the
            newest checkpoint
==========  =====================================================================
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from multitask_bert.config import RUN_CONFIG_FILE, ExperimentConfig
from multitask_bert.errors import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR, MultitaskBertError

PID_FILE = "train.pid"
"""The running training process's PID, in the run folder (removed when it ends)."""
OOM_FILE = "oom_retries"
"""How many times the per-device batch was halved after an out-of-memory exit."""
_TAIL = 30  # lines of the child's output kept for the error message


class UserInputError(MultitaskBertError):
    """The training process rejected the config or data (its message says what to fix)."""


class TrainingCrashed(RuntimeError):
    """The training process died (killed, preempted, crashed): retried, and it resumes."""


class TrainingOutOfMemory(RuntimeError):
    """CUDA ran out of memory: retried with half the per-device batch, twice the accumulation."""


def halve_batch(config: ExperimentConfig) -> ExperimentConfig:
    """The same effective batch with half the per-device batch (at least 1) and twice the
    gradient accumulation. It starts over (``resume: false``): another batch shape is another
    data plan, so the old checkpoints cannot continue it."""
    training = config.training
    return config.model_copy(update={"training": training.model_copy(update={
        "batch_size": max(1, training.batch_size // 2),
        "task_batch_size": {k: max(1, v // 2) for k, v in training.task_batch_size.items()},
        "gradient_accumulation_steps": training.gradient_accumulation_steps * 2,
        "resume": False,
    })})


def training_command(run_dir: Path) -> list[str]:
    """The command that trains the resolved config of ``run_dir``."""
    return [sys.executable, "-m", "multitask_bert", "train", "--run-dir", str(run_dir)]


def run_training(
    run_dir: str | Path,
    *,
    on_line: Callable[[str], None] = print,
    on_start: Callable[[list[str]], None] | None = None,
    cwd: str | Path | None = None,
) -> dict[str, Any]:
    """Train the run folder's config in a child process and supervise it.

    Args:
        run_dir: a run folder holding the resolved ``config.yaml``.
        on_line: receives the child's log lines (INFO and above; progress bars are left out).
        on_start: receives the command once the child started.
        cwd: the child's working directory (default: this process's).

    Returns:
        The run's ``metrics.json``.

    Raises:
        UserInputError, TrainingOutOfMemory, TrainingCrashed: see the module docstring.
    """
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG_FILE).is_file():
        raise UserInputError(f"{run_dir}: no {RUN_CONFIG_FILE}; resolve and write the config "
                             "first (pipeline.resolve(...).write())")
    config = ExperimentConfig.load_run(run_dir)
    command = training_command(run_dir)
    env = dict(os.environ)
    if config.logging.tracking_uri:  # the real URI: the run folder's copy is redacted
        env["MLFLOW_TRACKING_URI"] = config.logging.tracking_uri
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        (run_dir / PID_FILE).write_text(str(proc.pid))
        if on_start is not None:
            on_start(command)
        tail: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-_TAIL:], line]
            if " INFO " in line or " WARNING " in line or " ERROR " in line:
                on_line(line)
        code = proc.wait()
    (run_dir / PID_FILE).unlink(missing_ok=True)
    message = "\n".join(tail[-12:])
    if code == EXIT_USER_ERROR:
        raise UserInputError(message)
    if code == EXIT_OUT_OF_MEMORY:
        halvings = _read_int(run_dir / OOM_FILE) + 1
        halve_batch(config).write()
        (run_dir / OOM_FILE).write_text(str(halvings))
        raise TrainingOutOfMemory(f"CUDA out of memory; retrying with a per-device batch "
                                  f"halved {halvings} time(s)\n{message}")
    if code != 0:
        raise TrainingCrashed(f"the training process exited with {code}; a retry resumes "
                              f"from the newest checkpoint in {run_dir}\n{message}")
    return json.loads((run_dir / "metrics.json").read_text())


def _read_int(path: Path) -> int:
    return int(path.read_text()) if path.is_file() else 0
