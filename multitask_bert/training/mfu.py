"""Model FLOPs utilisation (MFU): achieved model FLOP/s over the machine's peak.

As nanoGPT's ``estimate_mfu`` (after the PaLM paper, appendix B): one training step of a
transformer costs about ``6·N + 12·L·T·d`` FLOPs per token, where

- ``N`` is the number of **non-embedding** parameters (Kaplan et al. 2020): the encoder
  layers only. Embedding lookups cost no matmul FLOPs, so word, position and token-type
  embeddings (and the embedding LayerNorm) are left out; so are the task heads (tiny).
  ``6 = 2`` (forward multiply-add) ``+ 4`` (backward: gradients of inputs and of weights);
- ``12·L·T·d`` is attention: per layer and token, ``Q·Kᵀ`` and ``A·V`` each take
  ``2·T·d`` FLOPs forward, times 3 for forward + backward (``T`` = the sequence length the
  token attends over, ``d`` = hidden size).

The peak: on GPU the datasheet's dense bf16 tensor-core figure; on CPU a float32 matmul
timed in the same process (:func:`measure_cpu_peak_flops`), since CPU datasheets rarely
match what a shared, throttled core delivers.
"""

from __future__ import annotations

import time
from typing import Any

import torch

# Datasheet dense (no sparsity) bf16 tensor-core FLOP/s. Order matters: the first
# substring found in the device name wins (``H100 PCIe`` before ``H100``).
_GPU_PEAK_BF16: tuple[tuple[str, float], ...] = (
    ("H200", 989e12),
    ("H100 PCIE", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM5 / HBM3
    ("A100", 312e12),  # SXM4 and PCIe alike
)


def flops_per_token(num_params_non_embedding: int, num_layers: int, seq_len: int,
                    hidden: int) -> float:
    """Training FLOPs per token: ``6·N + 12·L·T·d``.

    Args:
        num_params_non_embedding: ``N``, parameters of the encoder layers (no embeddings).
        num_layers: ``L``, transformer layers.
        seq_len: ``T``, the length a token attends over.
        hidden: ``d``, hidden size (heads × head size).
    """
    return 6.0 * num_params_non_embedding + 12.0 * num_layers * seq_len * hidden


def non_embedding_params(encoder_config: Any) -> int:
    """Parameters of a BERT-style encoder's layers, from its config (no embeddings, no
    pooler): per layer Q, K, V, O projections, the feed-forward pair and two LayerNorms."""
    d = int(encoder_config.hidden_size)
    inner = int(getattr(encoder_config, "intermediate_size", 4 * d))
    attention = 4 * (d * d + d)
    feed_forward = d * inner + inner + inner * d + d
    layer_norms = 2 * 2 * d
    return int(encoder_config.num_hidden_layers) * (attention + feed_forward + layer_norms)


def model_flops_per_token(encoder_config: Any, seq_len: int) -> float:
    """:func:`flops_per_token` of a Hugging Face BERT-style encoder config."""
    return flops_per_token(non_embedding_params(encoder_config),
                           int(encoder_config.num_hidden_layers), seq_len,
                           int(encoder_config.hidden_size))


def sequence_flops(encoder_config: Any, lengths: list[int] | tuple[int, ...]) -> float:
    """Training FLOPs of a batch whose rows hold ``lengths`` tokens each: every token of a
    row attends over that row (``Σ len·(6N + 12·L·len·d)``). Pass the real lengths for
    model FLOPs (MFU), or the padded width per row for the FLOPs the hardware computed."""
    n = non_embedding_params(encoder_config)
    layers, d = int(encoder_config.num_hidden_layers), int(encoder_config.hidden_size)
    return float(sum(t * flops_per_token(n, layers, t, d) for t in lengths))


def measure_cpu_peak_flops(seconds: float = 1.0, size: int = 1024,
                           dtype: torch.dtype = torch.float32) -> float:
    """FLOP/s of a square matmul on this CPU, in this process, with torch's current thread
    count (``torch.get_num_threads()``): the best of several short timed chunks over about
    ``seconds``. ``2·size³`` FLOPs per matmul."""
    # a private generator: drawing from the global RNG would change training's dropout
    # masks (and break bitwise-exact resume)
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, dtype=dtype, generator=generator)
    b = torch.randn(size, size, dtype=dtype, generator=generator)
    out = torch.empty(size, size, dtype=dtype)
    torch.mm(a, b, out=out)  # warm-up: thread pool, page faults
    flops = 2.0 * size**3
    best, deadline = 0.0, time.perf_counter() + seconds
    while True:
        start = time.perf_counter()
        reps = 0
        while reps < 2 or time.perf_counter() - start < 0.05:
            torch.mm(a, b, out=out)
            reps += 1
        elapsed = time.perf_counter() - start
        best = max(best, reps * flops / elapsed)
        if time.perf_counter() >= deadline:
            return best


def gpu_peak_flops(device_name: str) -> float | None:
    """Datasheet dense bf16 FLOP/s of a GPU by its name (``torch.cuda.get_device_name``);
    None when the GPU is not in the table."""
    name = device_name.upper().replace("-", " ")
    for key, peak in _GPU_PEAK_BF16:
        if key in name:
            return peak
    return None


def mfu(achieved_flops_per_s: float, peak: float) -> float:
    """Achieved FLOP/s as a fraction of ``peak`` (0.4 = 40 %)."""
    if peak <= 0:
        raise ValueError(f"peak FLOP/s must be positive, got {peak}")
    return achieved_flops_per_s / peak
