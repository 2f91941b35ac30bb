"""The same Trainer under torchrun: 2 CPU processes (gloo) end with identical weights, equal
to a single-process run with the same global batch (within float tolerance)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from multitask_bert.training.checkpoint import latest_checkpoint
from multitask_bert.training.distributed import DistInfo, shard
from tests.conftest import REPO, free_port, tiny_config_dict

ENV = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def test_shard_splits_a_global_batch_into_contiguous_parts():
    batch = list(range(7))
    parts = [shard(batch, DistInfo(rank, 3, rank)) for rank in range(3)]
    assert parts == [[0, 1, 2], [3, 4], [5, 6]]
    assert shard(batch, DistInfo()) == batch


def config_file(task_dir: Path, root: Path, name: str, batch_size: int,
                balancing: str = "static") -> Path:
    data = tiny_config_dict(task_dir, root / name, epochs=2, batch_size=batch_size,
                            eval_strategy="epoch", max_grad_norm=1.0, loss_balancing=balancing)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sentiment", "pairs")]
    for task in data["tasks"]:
        for head in task["heads"]:
            head["dropout"] = 0.0  # dropout masks would differ between 1 and 2 processes
    data["cache_dir"] = str(root / "cache")
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path




@pytest.mark.slow
@pytest.mark.parametrize("balancing", ["static", "uncertainty"])
def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(task_dir, tmp_path,
                                                                      balancing):
    single = config_file(task_dir, tmp_path, "single", batch_size=8, balancing=balancing)
    ddp = config_file(task_dir, tmp_path, "ddp", batch_size=4, balancing=balancing)
    run = subprocess.run([sys.executable, "-m", "multitask_bert", "train", "--config",
                          str(single)], capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}",
         "-m", "multitask_bert", "train", "--config", str(ddp)],
        capture_output=True, text=True, env=ENV, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]

    one = json.loads((tmp_path / "single/run/metrics.json").read_text())
    two = json.loads((tmp_path / "ddp/run/metrics.json").read_text())
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["global_step"] == one["global_step"] == 12  # 2 tasks x 3 batches of 8 x 2 epochs
    sums = two["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]  # the ranks hold identical weights

    a = load_file(str(latest_checkpoint(tmp_path / "single/run") / "model.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "ddp/run") / "model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=2e-5, rtol=1e-4), name
    # evaluation gathered from both ranks scores the whole validation split
    assert two["last"]["sentiment"]["label"]["accuracy"] == pytest.approx(
        one["last"]["sentiment"]["label"]["accuracy"])
    assert two["last"]["pairs"]["score"]["pearson"] == pytest.approx(
        one["last"]["pairs"]["score"]["pearson"], abs=1e-3)
