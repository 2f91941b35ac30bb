"""One training per run folder: an exclusive lock on ``<run>/train.lock``.

Two runs of the same experiment find the same folder (the flow names it by the experiment
fingerprint), so two of them at once (a manual run beside the crash automation's rerun, two
workers with a training slot each, a CLI run beside a flow run) would write one folder's
checkpoints, ``metrics.json`` and ``best/`` at the same time. The training process takes
``fcntl.flock(LOCK_EX | LOCK_NB)`` on an open file descriptor of ``train.lock`` before it
writes anything and holds it until it exits. The kernel releases a ``flock`` when the last
descriptor of it closes, which includes the process dying by SIGKILL: a killed training
never leaves a stale lock, so the file itself may stay (it is never deleted: deleting it
while another process waits on it would let two processes hold locks on two different
files of the same name). It holds the holder's PID, host and start time, for the message the
second process gets.

``flock`` is reliable on local file systems; on NFS it is emulated with POSIX locks (Linux
>= 2.6.12), which the NFS server arbitrates.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from multitask_bert.errors import MultitaskBertError

LOCK_FILE = "train.lock"
"""The lock file in the run folder (stays after the training; only the flock matters)."""


class RunFolderBusy(MultitaskBertError):
    """Another process is training in this run folder (names it and what to do)."""


@contextmanager
def run_folder_lock(run_dir: str | Path) -> Iterator[Path]:
    """Hold the run folder's training lock for the ``with`` block.

    Raises:
        RunFolderBusy: another live process holds it (its PID, host and start time named).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderBusy(
                f"{run_dir} is being trained by another process ({describe_holder(path)}): "
                "two runs of the same experiment (same config and data) must not write one "
                "run folder. Wait for that run to end (a later run of this experiment resumes "
                "from its checkpoint, or finds it finished), stop it if it is stray (kill "
                "that PID), or train a separate copy with another output_dir") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock (so does the process's death)


def describe_holder(path: Path) -> str:
    """``PID 123 on host h since <time>`` from the lock file, or why it cannot say."""
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if not holder.get("pid"):
        return "holder unknown: it is starting"
    return f"PID {holder['pid']} on host {holder.get('host', '?')} since {holder.get('started')}"
