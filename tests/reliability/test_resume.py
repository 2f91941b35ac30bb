"""Exact resume: a training process killed with SIGKILL at a random step and started again
on the same output folder ends bitwise-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from multitask_bert.training.checkpoint import STATE_FILE, latest_checkpoint, list_checkpoints
from tests.conftest import REPO, tiny_config_dict

EVERY = 4  # checkpoint interval (optimizer steps)


def write_config(task_dir: Path, root: Path, name: str, balancing: str = "static") -> Path:
    config = tiny_config_dict(task_dir, root / name, epochs=4, batch_size=4,
                              checkpoint_every_n_steps=EVERY, keep_checkpoints=2,
                              eval_strategy="steps", eval_steps=10, loss_balancing=balancing)
    if balancing == "uncertainty":  # the learnt log-variances and word shapes resume too
        config["tasks"][0]["word_shape"] = True
    config["logging"] = {"backend": "none", "log_every_n_steps": 1}
    config["cache_dir"] = str(root / "cache")
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def train_cmd(config: Path) -> list[str]:
    return [sys.executable, "-m", "multitask_bert", "train", "--config", str(config)]


ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def run_to_end(config: Path) -> None:
    proc = subprocess.run(train_cmd(config), capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def run_and_kill_at(config: Path, kill_step: int) -> int:
    """Start training, SIGKILL it once it logs `kill_step`; return the last step it logged."""
    proc = subprocess.Popen(train_cmd(config), stderr=subprocess.PIPE, text=True, env=ENV)
    last = 0
    try:
        for line in proc.stderr:
            if " step " in line and "/" in line:
                last = int(line.split(" step ")[1].split("/")[0])
                if last >= kill_step:
                    proc.send_signal(signal.SIGKILL)
                    break
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    return last


def weights(run: Path) -> dict:
    return load_file(str(latest_checkpoint(run) / "model.safetensors"))


@pytest.mark.parametrize("balancing", ["static", "uncertainty"])
def test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(task_dir, tmp_path,
                                                                    balancing):
    straight = write_config(task_dir, tmp_path, "straight", balancing)
    killed = write_config(task_dir, tmp_path, "killed", balancing)
    run_to_end(straight)
    straight_run = tmp_path / "straight" / "run"
    total = json.loads((straight_run / "metrics.json").read_text())["global_step"]

    kill_step = random.Random().randint(EVERY + 1, total - 10)
    logged = run_and_kill_at(killed, kill_step)
    killed_run = tmp_path / "killed" / "run"
    checkpoint = latest_checkpoint(killed_run)
    assert checkpoint is not None
    resumed_from = int(checkpoint.name.split("-")[1])
    assert logged - resumed_from <= EVERY  # at most one interval is redone
    # the killed process's training time up to that checkpoint is kept in it...
    before = json.loads((checkpoint / STATE_FILE).read_text())["result"]["train_seconds"]
    assert before > 0

    run_to_end(killed)  # the same command again: resumes from the newest checkpoint
    result = json.loads((killed_run / "metrics.json").read_text())
    assert result["resumed_from_step"] == resumed_from
    assert result["train_seconds"] > before  # ...and the resumed process's time adds to it
    expected = json.loads((straight_run / "metrics.json").read_text())
    for key in ("best", "last", "best_step", "best_score", "global_step"):
        assert result[key] == expected[key], key

    a, b = weights(straight_run), weights(killed_run)
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].equal(b[name]), f"{name} differs (kill at {kill_step})"
    assert load_file(str(straight_run / "best/model.safetensors")).keys() == a.keys()
    assert len(list_checkpoints(killed_run)) <= 2  # keep_checkpoints


def test_resume_refuses_checkpoints_of_another_experiment(task_dir, tmp_path):
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.errors import ConfigError
    from multitask_bert.pipeline import train_experiment

    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=3)
    train_experiment(ExperimentConfig.from_dict(data))
    data["training"]["learning_rate"] = 0.5
    with pytest.raises(ConfigError, match="checkpoints of a different experiment"):
        train_experiment(ExperimentConfig.from_dict(data))
    data["training"]["resume"] = False  # starting over is allowed when asked for
    assert train_experiment(ExperimentConfig.from_dict(data)).resumed_from_step is None
