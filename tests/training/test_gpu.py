"""The CUDA fast path (bf16 autocast, fused AdamW, pinned memory). Skips without a GPU:
CI has none; run on a lent GPU machine with `python -m pytest tests/training/test_gpu.py`."""

import pytest
import torch

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
