"""One training per run folder: a second training of the same folder stops with a message
naming the folder and the holder; the lock of a SIGKILLed holder is gone at once; and the
training child of a killed supervisor (the flow-run process) dies with it instead of writing
on as an orphan."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from multitask_bert.training.run_lock import LOCK_FILE, RunFolderBusy, run_folder_lock
from tests.conftest import REPO, tiny_config_dict

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}

HOLD = """
import sys, time
from multitask_bert.training.run_lock import run_folder_lock
with run_folder_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(300)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """Another process holding the run folder's lock (as a running training does)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (killed, not yet reaped by its parent) is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_second_holder_is_refused_naming_folder_and_pid_and_a_killed_holder_frees_it(tmp_path):
    run_dir = tmp_path / "runs" / "exp" / "abc123"
    holder = hold_lock(run_dir)
    try:
        with pytest.raises(RunFolderBusy) as refused, run_folder_lock(run_dir):
            pass
        message = str(refused.value)
        assert str(run_dir) in message and f"PID {holder.pid} on host" in message
        assert "output_dir" in message and "kill" in message
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up runs: only the kernel frees the lock
        holder.wait(timeout=10)
    assert (run_dir / LOCK_FILE).exists()  # the file stays; its flock went with the process
    with run_folder_lock(run_dir):
        holder_info = json.loads((run_dir / LOCK_FILE).read_text())
        assert holder_info["pid"] == os.getpid()


def test_a_training_into_a_locked_folder_exits_2_with_the_message(task_dir, tmp_path):
    config = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=2)
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    holder = hold_lock(tmp_path / "run")
    try:
        done = subprocess.run([sys.executable, "-m", "multitask_bert", "train", "--config",
                               str(path)], capture_output=True, text=True, env=ENV, timeout=120)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"is being trained by another process (PID {holder.pid}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "run" / "metrics.json").exists()  # it wrote nothing


SUPERVISE = """
import sys
from multitask_bert import pipeline
pipeline.train(pipeline.start(pipeline.resolve(sys.argv[1])), on_line=lambda line: None)
"""


def test_the_training_child_dies_with_its_killed_supervisor(task_dir, tmp_path):
    """The flow's train step supervises a child process; when the step's process is
    SIGKILLed (the flow run crashes), the child must not go on writing the run folder."""
    config = tiny_config_dict(task_dir, tmp_path, epochs=200, batch_size=2)
    path = tmp_path / "long.yaml"
    path.write_text(yaml.safe_dump(config))
    supervisor = subprocess.Popen([sys.executable, "-c", SUPERVISE, str(path)], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid_file = tmp_path / "run" / "train.pid"
    deadline = time.monotonic() + 120
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert time.monotonic() < deadline and supervisor.poll() is None, "no training started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    assert alive(child)
    supervisor.send_signal(signal.SIGKILL)
    supervisor.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    if alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the training child outlived its killed supervisor")
    with run_folder_lock(tmp_path / "run"):  # and its lock went with it
        pass
