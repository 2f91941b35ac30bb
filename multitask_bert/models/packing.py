"""The unpadded forward pass: the encoder over a packed batch, attention within each row.

A packed batch (:class:`~multitask_bert.data.dataset.PackedRows`) holds its rows one after
the other in one sequence, with no pad token: ``input_ids`` is ``(1, total)``. Two things make
every token see exactly what it sees in a padded batch:

* position ids restart at 0 in each row (the encoder takes ``position_ids``);
* attention stays within each row. transformers' BERT-family encoders send attention through
  its ``AttentionInterface`` and pass extra keyword arguments down to the attention function.
  This module registers one, :data:`ATTENTION_NAME`, and names it in the encoder's config for
  the packed call only (the padded path, evaluation and saved models keep the encoder's own
  attention). transformers has no mask function under that name, so it builds no mask at all
  (no ``total x total`` tensor, no host sync).

The attention function runs one of three kernels (:data:`BACKENDS`):

``varlen``  ``torch.nn.attention.varlen.varlen_attn`` (FlashAttention's variable-length
            kernels inside torch): CUDA, bf16/fp16; no attention dropout.
``nested``  ``scaled_dot_product_attention`` on jagged nested tensors (the flash and
            memory-efficient kernels, per row): CUDA; dropout supported.
``dense``   ``scaled_dot_product_attention`` with a block-diagonal boolean mask over all
            tokens: any device and dtype, ``O(total²)`` work; the reference the others are
            checked against.

:func:`attention_backends` checks the CUDA kernels once per device (forward and backward
against ``dense`` in fp32) and picks the fastest that passes: ``varlen``, else ``nested``,
else ``dense``; with attention dropout ``nested``, else ``dense``. The CPU runs ``dense``.
:func:`packing_problem` checks an encoder end to end (packed vs padded outputs) before
training uses the packed path.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from multitask_bert.data.dataset import PackedRows

log = logging.getLogger("multitask_bert.models")

ATTENTION_NAME = "multitask_bert_packed"
"""The attention function registered with transformers' ``AttentionInterface``."""
BACKEND_ENV = "MTB_PACKED_ATTENTION"
"""Environment variable that forces one kernel (``varlen``, ``nested`` or ``dense``) for
every packed attention call: for comparing kernels, or ruling one out."""
_TOLERANCE = 2e-2
"""Largest relative difference (norm of the difference over norm of the reference) a CUDA
kernel may show against the fp32 dense reference, on bf16 inputs (bf16 rounding: ~4e-3)."""


# -- the kernels: q, k, v (1, heads, total, head_dim) -> (1, total, heads, head_dim) ---------
def _dense(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packing: PackedRows,
           dropout: float, scaling: float | None) -> torch.Tensor:
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=packing.block_mask(),
                                         dropout_p=dropout,
                                         scale=scaling)
    return out.transpose(1, 2)


def _varlen(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packing: PackedRows,
            dropout: float, scaling: float | None) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    if dropout:
        raise ValueError("varlen_attn has no attention dropout")
    q, k, v = (x[0].transpose(0, 1) for x in (query, key, value))  # (total, heads, dim)
    extra = {}
    if scaling is not None and not math.isclose(scaling, q.shape[-1] ** -0.5):
        extra["scale"] = scaling
    cu, longest = packing.cu_seqlens, packing.max_length
    return varlen_attn(q, k, v, cu, cu, longest, longest, **extra).unsqueeze(0)


def _nested(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, packing: PackedRows,
            dropout: float, scaling: float | None) -> torch.Tensor:
    offsets = packing.cu_seqlens.long()

    def jagged(x: torch.Tensor) -> torch.Tensor:  # (1, heads, total, dim) -> (rows, heads, j, dim)
        return torch.nested.nested_tensor_from_jagged(
            x[0].transpose(0, 1).contiguous(), offsets, min_seqlen=packing.min_length,
            max_seqlen=packing.max_length).transpose(1, 2)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "nested tensors are a prototype"
        out = F.scaled_dot_product_attention(jagged(query), jagged(key), jagged(value),
                                             dropout_p=dropout, scale=scaling)
    return out.transpose(1, 2).values().unsqueeze(0)


Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, "PackedRows", float,
                   "float | None"], torch.Tensor]
BACKENDS: dict[str, Kernel] = {"varlen": _varlen, "nested": _nested, "dense": _dense}


@dataclass(frozen=True)
class AttentionBackends:
    """The kernels packed attention uses on one device, and why the others were not."""

    plain: str
    """Without attention dropout (evaluation, or ``attention_probs_dropout_prob: 0``)."""
    with_dropout: str
    """With attention dropout (training)."""
    checks: dict[str, str] = field(default_factory=dict)
    """Each kernel: ``ok``, or why it was not used."""

    def pick(self, dropout: float) -> str:
        return self.with_dropout if dropout else self.plain

    def describe(self) -> str:
        notes = "; ".join(f"{name}: {why}" for name, why in self.checks.items() if why != "ok")
        return (f"{self.plain} (with attention dropout: {self.with_dropout})"
                + (f"; not used: {notes}" if notes else ""))


_SELECTED: dict[str, AttentionBackends] = {}


def attention_backends(device: torch.device | str) -> AttentionBackends:
    """The kernels for ``device``: checked once per device and process (CUDA), or ``dense``
    (CPU). ``$MTB_PACKED_ATTENTION`` forces one."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    forced = os.environ.get(BACKEND_ENV)
    if forced:
        if forced not in BACKENDS:
            raise ValueError(f"${BACKEND_ENV}={forced!r}: choose one of {sorted(BACKENDS)}")
        return AttentionBackends(forced, forced, {forced: f"forced by ${BACKEND_ENV}"})
    key = str(device)
    if key not in _SELECTED:
        _SELECTED[key] = _choose(device)
    return _SELECTED[key]


def _choose(device: torch.device) -> AttentionBackends:
    if device.type != "cuda":
        return AttentionBackends("dense", "dense", {"varlen": "CUDA only",
                                                    "nested": "CUDA only", "dense": "ok"})
    checks = {"varlen": check_kernel("varlen", device),
              "nested": check_kernel("nested", device), "dense": "ok"}
    checks["nested (dropout)"] = (check_kernel("nested", device, dropout=0.1)
                                  if checks["nested"] == "ok" else "nested failed")
    plain = next(name for name in ("varlen", "nested", "dense") if checks[name] == "ok")
    with_dropout = "nested" if checks["nested (dropout)"] == "ok" else "dense"
    return AttentionBackends(plain, with_dropout, checks)


def check_kernel(name: str, device: torch.device | str, dropout: float = 0.0,
                 dtype: torch.dtype = torch.bfloat16) -> str:
    """``ok`` when kernel ``name`` computes packed attention on ``device`` like the fp32
    dense reference (outputs and input gradients, relative difference under 2e-2); else why
    not. With ``dropout``, only that it runs and gives finite outputs and gradients (the
    masks are random)."""
    from multitask_bert.data.dataset import PackedRows

    device = torch.device(device)
    generator = torch.Generator().manual_seed(0)  # never the global RNG (training's dropout)
    packing = PackedRows.from_lengths([17, 5, 40, 1, 9]).to(device)
    total = int(packing.lengths.sum())
    # (1, heads, total, dim) views of (1, total, heads, dim) tensors: the encoder's layout
    leaves = [torch.randn(1, total, 2, 64, generator=generator).to(device, dtype)
              .requires_grad_() for _ in range(3)]
    inputs = [x.transpose(1, 2) for x in leaves]
    upstream = torch.randn(1, total, 2, 64, generator=generator).to(device)
    try:
        with torch.enable_grad(), torch.autocast(device.type, enabled=False):
            out = BACKENDS[name](*inputs, packing, dropout, None)
            grads = torch.autograd.grad(out.float(), leaves, upstream)
            if dropout:
                finite = bool(torch.isfinite(out).all()) and all(
                    bool(torch.isfinite(g).all()) for g in grads)
                return "ok" if finite else "non-finite outputs or gradients"
            ref_leaves = [x.detach().float().requires_grad_() for x in leaves]
            ref = _dense(*(x.transpose(1, 2) for x in ref_leaves), packing, 0.0, None)
            ref_grads = torch.autograd.grad(ref, ref_leaves, upstream)
    except Exception as exc:  # any failure means: not this kernel, here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    worst = max(_relative(a, b) for a, b in zip((out, *grads), (ref, *ref_grads), strict=True))
    return "ok" if worst < _TOLERANCE else f"differs from the dense reference ({worst:.1e})"


def _relative(value: torch.Tensor, reference: torch.Tensor) -> float:
    value, reference = value.detach().float(), reference.detach().float()
    error = float(torch.linalg.vector_norm(value - reference))
    return error / max(float(torch.linalg.vector_norm(reference)), 1e-12)


# -- the attention function transformers calls ----------------------------------------------
def packed_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor,
                     value: torch.Tensor, attention_mask: torch.Tensor | None,
                     dropout: float = 0.0, scaling: float | None = None, **kwargs: Any
                     ) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature, for packed batches only."""
    packing = kwargs.get("mtb_packing")
    if packing is None:
        raise RuntimeError(f"attention {ATTENTION_NAME!r} runs packed batches only (no "
                           "mtb_packing given); padded batches use the encoder's own")
    name = kwargs.get("mtb_attention") or attention_backends(query.device).pick(dropout)
    _CALLS[0] += 1
    return BACKENDS[name](query, key, value, packing, dropout, scaling), None


_CALLS = [0]
"""Calls of :func:`packed_attention` in this process (:func:`packing_problem` checks that the
encoder's layers call it)."""


def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, packed_attention)


_register()


@contextlib.contextmanager
def _attention_implementation(config: Any, name: str) -> Iterator[None]:
    saved = config._attn_implementation
    config._attn_implementation = name
    try:
        yield
    finally:
        config._attn_implementation = saved


def packed_encoder_forward(encoder: nn.Module, input_ids: torch.Tensor,
                           token_type_ids: torch.Tensor | None, packing: PackedRows,
                           kernel: str | None = None) -> torch.Tensor:
    """The encoder's ``last_hidden_state`` ``(1, total, hidden)`` of a packed batch.

    Args:
        encoder: a transformers encoder that takes ``position_ids`` and routes attention
            through ``AttentionInterface`` (check with :func:`packing_problem`).
        input_ids: ``(1, total)``.
        token_type_ids: ``(1, total)``, or None.
        packing: where the rows lie.
        kernel: force one of :data:`BACKENDS` (default: :func:`attention_backends`).
    """
    kwargs: dict[str, Any] = {
        "input_ids": input_ids, "attention_mask": None,
        "position_ids": packing.position_ids,
        # FlashAttention-style names, for encoders that read them; ours reads mtb_packing
        "cu_seq_lens_q": packing.cu_seqlens, "cu_seq_lens_k": packing.cu_seqlens,
        "max_length_q": packing.max_length, "max_length_k": packing.max_length,
        "mtb_packing": packing,
    }
    if kernel is not None:
        kwargs["mtb_attention"] = kernel
    if token_type_ids is not None:
        kwargs["token_type_ids"] = token_type_ids
    with _attention_implementation(encoder.config, ATTENTION_NAME):
        return encoder(**kwargs).last_hidden_state


def packing_problem(encoder: nn.Module) -> str | None:
    """Why ``encoder`` cannot run packed batches, or None when it can: its packed outputs
    must equal its padded ones (two rows of random ids, evaluation mode, fp32, the dense
    kernel; relative difference under 1e-3), and its layers must call the packed attention
    function. Leaves the global RNG untouched."""
    name = type(encoder).__name__
    if "position_ids" not in inspect.signature(encoder.forward).parameters:
        return f"the encoder ({name}) takes no position_ids"
    from multitask_bert.data.dataset import PackedRows

    device = next(encoder.parameters()).device
    lengths = [4, 7]
    vocab = int(getattr(encoder.config, "vocab_size", 1000) or 1000)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(min(5, vocab - 1), vocab, (2, max(lengths)), generator=generator)
    mask = (torch.arange(max(lengths)) < torch.tensor(lengths).unsqueeze(1)).long()
    ids = ids * mask
    was_training, calls = encoder.training, _CALLS[0]
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # TF32 rounding would blur the comparison
    encoder.eval()
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            padded = encoder(input_ids=ids.to(device), attention_mask=mask.to(device))
            reference = padded.last_hidden_state[mask.to(device).bool()]
            packing = PackedRows.from_lengths(lengths).to(device)
            packed = packed_encoder_forward(encoder, ids[mask.bool()].unsqueeze(0).to(device),
                                            None, packing, kernel="dense")[0]
    except Exception as exc:  # any failure means: not this encoder
        return f"its packed forward failed ({type(exc).__name__}: {exc})"
    finally:
        encoder.train(was_training)
        torch.set_float32_matmul_precision(precision)
    if _CALLS[0] == calls:
        return (f"its attention does not run through transformers' AttentionInterface "
                f"(attn_implementation {encoder.config._attn_implementation!r})")
    if packed.shape != reference.shape:
        return f"its packed output has shape {tuple(packed.shape)}, not {tuple(reference.shape)}"
    difference = _relative(packed, reference)
    if not difference < 1e-3:
        return (f"its packed outputs differ from its padded ones (relative difference "
                f"{difference:.2g}): it numbers positions differently (RoBERTa-style "
                "offsets, relative positions) or mixes rows elsewhere")
    return None
