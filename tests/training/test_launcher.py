"""The training launcher: a real child process per run, its exit status turned into an
outcome the flow's retry policy acts on."""

from __future__ import annotations

import sys

import pytest
import yaml

from multitask_bert import pipeline
from multitask_bert.config import ExperimentConfig
from multitask_bert.training import launcher
from multitask_bert.training.launcher import (
    OOM_FILE,
    PID_FILE,
    TrainingCrashed,
    TrainingOutOfMemory,
    UserInputError,
    halve_batch,
    run_training,
)
from tests.conftest import tiny_config_dict


def started(task_dir, tmp_path, **training) -> ExperimentConfig:
    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=3, **training)
    config = ExperimentConfig.from_dict(data).resolve()
    pipeline.start(config)
    return config


def test_halving_keeps_the_effective_batch_and_starts_over(tiny_config):
    config = tiny_config(batch_size=16, task_batch_size={"sentiment": 5},
                         gradient_accumulation_steps=3)
    halved = halve_batch(config)
    assert halved.training.batch_size == 8
    assert halved.training.task_batch_size == {"sentiment": 2}
    assert halved.training.gradient_accumulation_steps == 6
    assert halved.training.resume is False
    ones = halve_batch(tiny_config(batch_size=1))
    assert ones.training.batch_size == 1 and ones.training.gradient_accumulation_steps == 2


def test_a_run_trains_in_a_child_and_returns_its_metrics(task_dir, tmp_path):
    config = started(task_dir, tmp_path)
    lines, commands = [], []
    metrics = run_training(config.run_dir, on_line=lines.append, on_start=commands.append)
    assert metrics["global_step"] == 3
    assert commands == [launcher.training_command(config.run_dir)]
    assert any("training tiny" in line for line in lines)
    assert not (config.run_dir / PID_FILE).exists()
    assert (config.run_dir / "best" / "model.safetensors").is_file()


def test_bad_data_is_a_user_error_with_the_childs_message(task_dir, tmp_path):
    bad = task_dir / "sentiment" / "train.jsonl"
    bad.write_text(bad.read_text() + '{"text": "", "label": "pos"}\n')
    config = started(task_dir, tmp_path)
    with pytest.raises(UserInputError, match=r"line 25, field 'text': empty text"):
        run_training(config.run_dir, on_line=lambda line: None)


def test_no_config_in_the_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match=r"no config\.yaml"):
        run_training(tmp_path)


def fake_child(monkeypatch, code: str) -> None:
    """A stand-in for the training process. FAKE, on purpose: a CUDA out-of-memory error
    cannot be caused on a CPU-only machine; the child exits the way the CLI does on one."""
    monkeypatch.setattr(launcher, "training_command",
                        lambda run_dir, plan=None: [sys.executable, "-c", code])


def test_out_of_memory_halves_the_batch_in_the_run_config(task_dir, tmp_path, monkeypatch):
    config = started(task_dir, tmp_path, batch_size=8)
    fake_child(monkeypatch, "import sys; print('error: out of memory: CUDA out of memory'); "
                            "sys.exit(3)")
    for expected_batch, expected_accumulation in ((4, 2), (2, 4)):
        with pytest.raises(TrainingOutOfMemory, match="CUDA out of memory"):
            run_training(config.run_dir, on_line=lambda line: None)
        written = yaml.safe_load((config.run_dir / "config.yaml").read_text())
        assert written["training"]["batch_size"] == expected_batch
        assert written["training"]["gradient_accumulation_steps"] == expected_accumulation
        assert written["training"]["resume"] is False
    assert (config.run_dir / OOM_FILE).read_text() == "2"


def test_a_killed_child_is_a_crash_to_retry(task_dir, tmp_path, monkeypatch):
    config = started(task_dir, tmp_path)
    fake_child(monkeypatch, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    with pytest.raises(TrainingCrashed, match="exited with -9; a retry resumes"):
        run_training(config.run_dir, on_line=lambda line: None)
    assert not (config.run_dir / PID_FILE).exists()
