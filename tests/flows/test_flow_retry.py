"""A training process killed under a real flow run: Prefect retries the train task and the
new process resumes from the newest checkpoint instead of starting over."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import yaml

from multitask_bert.training.checkpoint import latest_checkpoint
from tests.conftest import tiny_config_dict

EVERY = 4


def _kill_training_once_checkpointed(root: Path, min_step: int, box: dict) -> None:
    deadline = time.time() + 240
    while time.time() < deadline and "done" not in box:
        for pid_file in root.glob("run/*/train.pid"):
            checkpoint = latest_checkpoint(pid_file.parent)
            if checkpoint and int(checkpoint.name.split("-")[1]) >= min_step:
                try:
                    pid = int(pid_file.read_text())
                except (OSError, ValueError):
                    continue
                box["checkpoint_at_kill"] = int(checkpoint.name.split("-")[1])
                os.kill(pid, signal.SIGKILL)
                return
        time.sleep(0.05)


def test_killed_training_is_retried_and_resumes(prefect_harness, task_dir, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.train_multitask import TrainParameters, train_multitask

    data = tiny_config_dict(task_dir, tmp_path, epochs=8, batch_size=4,
                            checkpoint_every_n_steps=EVERY)
    data["logging"] = {"backend": "none", "log_every_n_steps": 1,
                       "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    config = tmp_path / "retry.yaml"
    config.write_text(yaml.safe_dump(data))

    box: dict = {}
    killer = threading.Thread(target=_kill_training_once_checkpointed,
                              args=(tmp_path, 2 * EVERY, box), daemon=True)
    killer.start()
    state = train_multitask(TrainParameters(config_path=str(config), model_name="retry-test"),
                            return_state=True)
    box["done"] = True
    killer.join(timeout=10)
    assert "checkpoint_at_kill" in box, "the training finished before it could be killed"
    assert state.is_completed()
    result = state.result()
    [run_dir] = [p for p in (tmp_path / "run").iterdir() if p.is_dir()]
    import json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the retry resumed from the checkpoint that existed when the process was killed (or a
    # newer one written in the instant before the kill), not from step 0
    assert metrics["resumed_from_step"] >= box["checkpoint_at_kill"]
    assert metrics["global_step"] > metrics["resumed_from_step"]
    assert result["registration"]["version"] in (1, "1")

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    [train_run] = [r for r in runs if r.name.startswith("train")]
    assert train_run.run_count == 2 and train_run.state.name == "Completed"


def test_a_second_training_waits_for_the_training_slot(prefect_harness, task_dir, tmp_path):
    """Another training holds the slot (as a scheduled run would): this flow's training
    process does not start until the slot is released."""
    from prefect.concurrency.sync import concurrency

    from flows.train_multitask import TrainParameters, ensure_training_limit, train_multitask

    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=2)
    data["logging"] = {"backend": "none", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    config = tmp_path / "wait.yaml"
    config.write_text(yaml.safe_dump(data))
    name = ensure_training_limit()
    box: dict = {}

    def run() -> None:
        box["state"] = train_multitask(TrainParameters(config_path=str(config),
                                                       model_name="wait-test"),
                                       return_state=True)

    with concurrency(name, occupy=1):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        # tokenisation runs, but training must not start while the slot is held
        time.sleep(12)
        run_dirs = list((tmp_path / "run").glob("*/")) if (tmp_path / "run").exists() else []
        assert not any((d / "train.pid").exists() or (d / "metrics.json").exists()
                       for d in run_dirs)
        assert "state" not in box
    thread.join(timeout=240)
    assert box["state"].is_completed()
