"""The CUDA fast path (bf16 autocast, fused AdamW, pinned memory, unpadded batches). Skips
without a GPU: CI has none; run on a lent GPU machine with
`python -m pytest tests/training/test_gpu.py` (benchmarks/gpu_check.sh runs it)."""

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from multitask_bert.models.packing import attention_backends, check_kernel
from tests.training.test_trainer import make_trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_training_uses_bf16_autocast_and_fused_adamw(tiny_config):
    trainer = make_trainer(tiny_config(epochs=1, device="cuda"))
    assert trainer.device.type == "cuda"
    assert trainer.optimizer.defaults.get("fused") is True
    assert isinstance(trainer.autocast, torch.autocast)
    result = trainer.train()
    trainer.close()
    assert result.global_step == trainer.total_steps
    assert all(p.device.type == "cuda" for p in trainer.model.parameters())
    assert result.best and "tagging" in result.best


def test_cuda_and_cpu_runs_agree_roughly(tiny_config):
    gpu = make_trainer(tiny_config(epochs=1, device="cuda", seed=3))
    cpu = make_trainer(tiny_config(epochs=1, device="cpu", seed=3))
    gpu_metrics, cpu_metrics = gpu.evaluate(), cpu.evaluate()  # same init, before training
    assert gpu_metrics["sentiment"]["label"]["accuracy"] == pytest.approx(
        cpu_metrics["sentiment"]["label"]["accuracy"], abs=0.2)
    gpu.close()
    cpu.close()


def test_a_fast_packed_attention_kernel_works_on_this_gpu():
    checks = {name: check_kernel(name, "cuda") for name in ("varlen", "nested")}
    backends = attention_backends("cuda")
    assert backends.plain in ("varlen", "nested"), checks
    assert checks[backends.plain] == "ok", checks
    assert check_kernel("nested", "cuda", dropout=0.1) == "ok"
    assert backends.with_dropout == "nested", backends.describe()


def test_cuda_trains_unpadded_by_default_and_matches_padded_in_bf16(tiny_config):
    trainer = make_trainer(tiny_config(epochs=1, device="cuda"))
    assert trainer.args.unpadded == "auto" and trainer.unpadded is True
    model = trainer.model.eval()
    for task, dataset in trainer.train_datasets.items():
        indices = list(range(min(8, len(dataset))))
        padded = dataset.collate(indices).to("cuda")
        packed = dataset.collate(indices, packed=True).to("cuda")
        with torch.no_grad(), trainer.autocast:
            a = model(padded.input_ids, padded.attention_mask, padded.labels, task_id=task,
                      token_type_ids=padded.token_type_ids)
            b = model(packed.input_ids, packed.attention_mask, packed.labels, task_id=task,
                      token_type_ids=packed.token_type_ids, packing=packed.packing)
        assert b.loss.item() == pytest.approx(a.loss.item(), rel=3e-2, abs=1e-3), task
    model.train()
    result = trainer.train()
    trainer.close()
    assert result.global_step == trainer.total_steps and result.best


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_nccl_ranks_train_to_identical_weights(task_dir, tmp_path):
    from tests.conftest import REPO, free_port
    from tests.training.test_distributed import config_file

    config = config_file(task_dir, tmp_path, "ddp", batch_size=4)
    data = yaml.safe_load(config.read_text())
    data["training"]["device"] = "cuda"
    config.write_text(yaml.safe_dump(data))
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}",
         "-m", "multitask_bert", "train", "--config", str(config)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path}, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp/run/metrics.json").read_text())
    assert metrics["world_size"] == 2
    sums = metrics["rank_weight_checksums"]
    assert len(sums) == 2 and sums[0] == sums[1]
