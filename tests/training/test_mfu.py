"""MFU arithmetic, checked against values computed by hand."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from multitask_bert.training.mfu import (
    flops_per_token,
    gpu_peak_flops,
    measure_cpu_peak_flops,
    mfu,
    model_flops_per_token,
    non_embedding_params,
    sequence_flops,
)

# The packaged MiniLM (all-MiniLM-L6-v2): 6 layers, hidden 384, intermediate 1536.
MINILM = SimpleNamespace(hidden_size=384, num_hidden_layers=6, intermediate_size=1536)
# per layer: attention 4·(384² + 384) = 591_360; feed-forward 384·1536 + 1536 + 1536·384 + 384
# = 1_181_568; two LayerNorms 4·384 = 1_536 -> 1_774_464; × 6 layers:
MINILM_N = 10_646_784


def test_flops_per_token_by_hand():
    # 6·1000 + 12·2·10·8 = 6000 + 1920
    assert flops_per_token(1000, 2, 10, 8) == 7920.0
    assert flops_per_token(0, 1, 1, 1) == 12.0


def test_non_embedding_params_minilm():
    assert non_embedding_params(MINILM) == MINILM_N


def test_non_embedding_params_match_a_real_bert():
    from transformers import BertConfig, BertModel

    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64)
    model = BertModel(config, add_pooling_layer=False)
    layers = sum(p.numel() for p in model.encoder.parameters())
    assert non_embedding_params(config) == layers


def test_model_flops_per_token_minilm_at_128():
    # 6·10_646_784 + 12·6·128·384 = 63_880_704 + 3_538_944
    assert model_flops_per_token(MINILM, 128) == 67_419_648.0


def test_sequence_flops_sums_rows():
    config = SimpleNamespace(hidden_size=8, num_hidden_layers=1, intermediate_size=16)
    n = non_embedding_params(config)  # 4·72 + (128 + 16 + 128 + 8) + 32 = 600
    assert n == 600
    # rows of 2 and 3 tokens: 2·(6·600 + 12·1·2·8) + 3·(6·600 + 12·1·3·8)
    assert sequence_flops(config, [2, 3]) == 2 * (3600 + 192) + 3 * (3600 + 288)


@pytest.mark.parametrize(("name", "peak"), [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100-PCIE-40GB", 312e12),
    ("Tesla T4", None),
])
def test_gpu_peak_flops(name, peak):
    assert gpu_peak_flops(name) == peak


def test_mfu():
    assert mfu(400e12, 989e12) == pytest.approx(0.40444, abs=1e-5)
    with pytest.raises(ValueError):
        mfu(1.0, 0.0)


def test_measure_cpu_peak_flops_is_positive_and_quick():
    peak = measure_cpu_peak_flops(seconds=0.1, size=128, dtype=torch.float32)
    assert 1e6 < peak < 1e15
