"""The launcher under torchrun (2 gloo ranks on CPU): the one-process rules hold across ranks,
and two "nodes" on loopback meet through a c10d rendezvous (issue 11)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from multitask_bert import pipeline
from multitask_bert.config import ExperimentConfig
from multitask_bert.training import launcher
from multitask_bert.training.checkpoint import latest_checkpoint
from multitask_bert.training.launcher import (
    PID_FILE,
    TrainingCrashed,
    TrainingOutOfMemory,
    UserInputError,
    run_training,
)
from tests.conftest import REPO, free_port, tiny_config_dict

pytestmark = pytest.mark.slow


def started(task_dir: Path, tmp_path: Path, **training) -> ExperimentConfig:
    data = tiny_config_dict(task_dir, tmp_path, **{"epochs": 1, "batch_size": 4, **training})
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sentiment", "pairs")]
    config = ExperimentConfig.from_dict(data).resolve()
    pipeline.start(config)
    return config


def test_a_user_error_on_the_ranks_fails_with_its_message(task_dir, tmp_path):
    bad = task_dir / "sentiment" / "train.jsonl"
    bad.write_text(bad.read_text() + '{"text": "", "label": "pos"}\n')
    config = started(task_dir, tmp_path, nproc_per_node=2)
    with pytest.raises(UserInputError) as raised:
        run_training(config.run_dir, on_line=lambda line: None)
    message = str(raised.value)
    assert message.startswith("rank ")  # the first failed rank, named
    assert "line 25, field 'text': empty text" in message
    assert "Traceback" not in message  # what to fix, not torchrun's report


def test_out_of_memory_on_one_rank_halves_the_batch(task_dir, tmp_path, monkeypatch):
    config = started(task_dir, tmp_path, nproc_per_node=2, batch_size=8)
    monkeypatch.setattr(launcher, "training_command", lambda run_dir, plan: plan.command(
        ["tests.training.fake_oom_rank", "train", "--run-dir", str(run_dir)], run_dir))
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    with pytest.raises(TrainingOutOfMemory, match="CUDA out of memory"):
        run_training(config.run_dir, on_line=lambda line: None)
    written = yaml.safe_load((config.run_dir / "config.yaml").read_text())
    assert written["training"]["batch_size"] == 4
    assert written["training"]["gradient_accumulation_steps"] == 2


def rank_pids(torchrun_pid: int) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (read from /proc)."""
    ranks = {}
    for children in Path(f"/proc/{torchrun_pid}/task").glob("*/children"):
        for pid in map(int, children.read_text().split()):
            try:
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for item in environ:
                if item.startswith(b"RANK="):
                    ranks[int(item[5:])] = pid
    return ranks


def kill_rank_once_checkpointed(run_dir: Path, rank: int, min_step: int, box: dict) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and "done" not in box:
        checkpoint = latest_checkpoint(run_dir)
        if checkpoint and int(checkpoint.name.split("-")[1]) >= min_step:
            try:
                pid = rank_pids(int((run_dir / PID_FILE).read_text())).get(rank)
            except (OSError, ValueError):
                pid = None
            if pid:
                box["checkpoint_at_kill"] = int(checkpoint.name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.05)


def test_a_killed_rank_is_a_crash_and_the_retry_resumes(task_dir, tmp_path):
    config = started(task_dir, tmp_path, nproc_per_node=2, epochs=8,
                     checkpoint_every_n_steps=2)
    box: dict = {}
    killer = threading.Thread(target=kill_rank_once_checkpointed,
                              args=(config.run_dir, 1, 4, box), daemon=True)
    killer.start()
    with pytest.raises(TrainingCrashed, match="a retry resumes"):
        run_training(config.run_dir, on_line=lambda line: None)
    box["done"] = True
    killer.join(timeout=10)
    assert "checkpoint_at_kill" in box, "the training finished before a rank could be killed"

    metrics = run_training(config.run_dir, on_line=lambda line: None)  # the retry
    assert metrics["resumed_from_step"] >= box["checkpoint_at_kill"]
    assert metrics["global_step"] == 48  # 2 tasks x 3 global batches of 8 x 8 epochs
    assert metrics["world_size"] == 2
    first, second = metrics["rank_weight_checksums"]
    assert first == second


def test_two_nodes_on_loopback_train_one_model(task_dir, tmp_path):
    config = started(task_dir, tmp_path, nproc_per_node=1, epochs=2)
    endpoint = f"127.0.0.1:{free_port()}"
    nodes = []
    for rank in (0, 1):
        env = {**os.environ, "PYTHONPATH": str(REPO), "PET_NNODES": "2",
               "PET_NODE_RANK": str(rank), "PET_RDZV_ENDPOINT": endpoint}
        nodes.append(subprocess.Popen(
            [sys.executable, "-m", "multitask_bert", "launch", "--run-dir",
             str(config.run_dir)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    outputs = []
    for node in nodes:
        out, _ = node.communicate(timeout=300)
        outputs.append(out)
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    assert all("--nnodes=2" in out for out in outputs)
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert metrics["global_step"] == 12  # 2 tasks x 3 global batches of 8 x 2 epochs
    first, second = metrics["rank_weight_checksums"]
    assert first == second  # the two nodes' ranks hold the same weights
