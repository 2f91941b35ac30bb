"""Predict every head of a task with a saved model folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from multitask_bert.errors import DataError
from multitask_bert.models.multitask import MultiTaskModel, load_tokenizer
from multitask_bert.tasks import TaskSpec


class Predictor:
    """Loads ``<run>/best`` (or any saved model folder) once and predicts rows.

    A row is a dict: ``{"text": ...}`` or ``{"text_a": ..., "text_b": ...}`` for sequence
    tasks; ``{"tokens": [...]}`` (or ``{"text": ...}``, split on whitespace) for token tasks.
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 32) -> None:
        self.model = MultiTaskModel.load(model_dir, map_location=device).to(device)
        self.tokenizer = load_tokenizer(model_dir)
        self.device = device
        self.batch_size = batch_size
        self.tasks = {t.name: t for t in self.model.tasks}

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
        max_length = spec.max_length or 512
        words: list[list[str]] = []
        if spec.type == "token":
            words = [_tokens(row, offset + i) for i, row in enumerate(rows)]
            enc = self.tokenizer(words, is_split_into_words=True, truncation=True,
                                 max_length=max_length, padding=True, return_tensors="pt")
        else:
            fields = _text_fields(spec, rows[0])
            texts = [[_text(row, f, offset + i) for f in fields] for i, row in enumerate(rows)]
            columns = list(zip(*texts, strict=True))
            enc = self.tokenizer(*columns, truncation=True, max_length=max_length,
                                 padding=True, return_tensors="pt")
        with torch.inference_mode():
            output = self.model(
                enc["input_ids"].to(self.device),
                enc["attention_mask"].to(self.device),
                task_id=spec.name,
                token_type_ids=enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
                .to(self.device),
            )
        results: list[dict[str, Any]] = [{} for _ in rows]
        for head in spec.heads:
            logits = output.logits[head.name].float().cpu()
            labels = self.model.label_vocab.get(spec.name, {}).get(head.name, [])
            for i in range(len(rows)):
                if head.type == "classification":
                    probs = logits[i].softmax(-1)
                    best = int(probs.argmax())
                    results[i][head.name] = {"label": labels[best], "score": float(probs[best])}
                elif head.type == "multilabel":
                    probs = logits[i].sigmoid()
                    results[i][head.name] = {
                        "labels": [labels[j] for j in range(len(labels)) if probs[j] > 0.5],
                        "scores": {labels[j]: float(probs[j]) for j in range(len(labels))},
                    }
                elif head.type == "regression":
                    results[i][head.name] = {"value": float(logits[i])}
                else:
                    results[i][head.name] = {
                        "tags": _word_tags(enc.word_ids(i), logits[i], labels, len(words[i]),
                                           fill="O" if head.scheme else None)
                    }
        return results


def _word_tags(word_ids: list, logits: torch.Tensor, labels: list[str], n_words: int,
               fill: str | None) -> list[str | None]:
    tags: list[str | None] = [fill] * n_words  # words cut off by truncation
    seen = set()
    for position, word in enumerate(word_ids):
        if word is not None and word not in seen:
            seen.add(word)
            tags[word] = labels[int(logits[position].argmax())]
    return tags


def _tokens(row: dict, index: int) -> list[str]:
    if isinstance(row.get("tokens"), list) and row["tokens"]:
        return [str(t) for t in row["tokens"]]
    if isinstance(row.get("text"), str) and row["text"].strip():
        return row["text"].split()
    raise DataError(f"row {index + 1}: a token task needs 'tokens' (a list of words) or 'text'")


def _text_fields(spec: TaskSpec, row: dict) -> list[str]:
    if spec.text_fields:
        return spec.text_fields
    return ["text_a", "text_b"] if "text_a" in row else ["text"]


def _text(row: dict, field: str, index: int) -> str:
    value = row.get(field)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"row {index + 1}: field {field!r} must be a non-empty string, "
                        f"got {value!r}")
    return value
