"""Predict every head of a task with a saved model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from multitask_bert.errors import DataError
from multitask_bert.heads import build_head_type
from multitask_bert.models.multitask import MultiTaskModel, load_tokenizer
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import TaskSpec


class Predictor:
    """Loads ``<run>/best`` (or any saved model folder) once and predicts rows.

    A row is a dict: ``{"text": ...}`` or ``{"text_a": ..., "text_b": ...}`` for sequence
    tasks; ``{"tokens": [...]}`` (or ``{"text": ...}``, split on whitespace) for token tasks.
    Each head's type decodes its logits (:meth:`HeadType.decode`), as evaluation does.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        self.model = MultiTaskModel.load(model_dir, map_location=device).to(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.device = device
        self.batch_size = batch_size
        self.tasks = {t.name: t for t in self.model.tasks}
        self.heads = {
            t.name: [build_head_type(h, self.model.label_vocab.get(t.name, {}).get(h.name))
                     for h in t.heads]
            for t in self.model.tasks
        }

    def predict(self, task: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One dict per row: ``{head: prediction}`` for every head of ``task``."""
        if task not in self.tasks:
            raise DataError(f"unknown task {task!r}; this model has tasks {sorted(self.tasks)}")
        spec = self.tasks[task]
        out: list[dict[str, Any]] = []
        for start in range(0, len(rows), self.batch_size):
            out += self._predict_batch(spec, rows[start : start + self.batch_size], start)
        return out

    def _predict_batch(self, spec: TaskSpec, rows: list[dict], offset: int) -> list[dict]:
        encoding, words = task_type_of(spec).encode_rows(
            self.tokenizer, spec, rows, spec.max_length or 512, first_row=offset)
        input_ids = encoding["input_ids"]
        token_type_ids = encoding.get("token_type_ids", torch.zeros_like(input_ids))
        word_shapes = encoding.get("word_shapes")
        with torch.inference_mode():
            output = self.model(
                input_ids.to(self.device),
                encoding["attention_mask"].to(self.device),
                task_id=spec.name,
                token_type_ids=token_type_ids.to(self.device),
                word_shapes=None if word_shapes is None else word_shapes.to(self.device),
            )
        results: list[dict[str, Any]] = [{} for _ in rows]
        for head in self.heads[spec.name]:
            decoded = head.decode(output.logits[head.spec.name].float().cpu(), words)
            for result, prediction in zip(results, decoded, strict=True):
                result[head.spec.name] = prediction
        return results
