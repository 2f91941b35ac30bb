"""The train-multitask flow with ``training.nproc_per_node=2``: its train step runs two gloo
ranks under torchrun on CPU, and the model equals a one-process run with the same global
batch (issue 11)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from multitask_bert import pipeline
from multitask_bert.config import ExperimentConfig
from multitask_bert.training.checkpoint import latest_checkpoint
from tests.conftest import tiny_config_dict

pytestmark = pytest.mark.slow


def two_task_config(task_dir, root, name: str, **training) -> dict:
    data = tiny_config_dict(task_dir, root / name, epochs=2, eval_strategy="epoch", **training)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sentiment", "pairs")]
    for task in data["tasks"]:
        for head in task["heads"]:
            head["dropout"] = 0.0  # dropout masks would differ between 1 and 2 processes
    data["cache_dir"] = str(root / "cache")
    return data


def test_the_flow_trains_on_two_ranks_like_one_process_with_the_same_global_batch(
        prefect_harness, task_dir, tmp_path):
    from flows.train_multitask import TrainParameters, train_multitask

    data = two_task_config(task_dir, tmp_path, "ddp", batch_size=4, nproc_per_node=2)
    data["logging"] = {"backend": "mlflow", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "ddp.yaml").write_text(yaml.safe_dump(data))
    state = train_multitask(TrainParameters(config_path=str(tmp_path / "ddp.yaml"),
                                            model_name="ddp-test"), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert str(result["registration"]["version"]) == "1"
    two = json.loads((Path(result["run_dir"]) / "metrics.json").read_text())
    assert two["world_size"] == 2
    first, second = two["rank_weight_checksums"]
    assert first == second  # both ranks hold the same weights

    # one process, the same global batch (2 ranks x 4 = 8), through the same launcher
    single = ExperimentConfig.from_dict(two_task_config(task_dir, tmp_path, "single",
                                                        batch_size=8, nproc_per_node=1))
    one = pipeline.train(pipeline.start(single.resolve()), on_line=lambda line: None)
    assert one["world_size"] == 1 and one["global_step"] == two["global_step"] == 12
    a = load_file(str(latest_checkpoint(single.run_dir) / "model.safetensors"))
    b = load_file(str(latest_checkpoint(Path(result["run_dir"])) / "model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), name
