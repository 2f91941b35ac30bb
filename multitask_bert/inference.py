"""Predict every head of a task with a saved model folder, and the output rows users get.

Two layers:

- :meth:`Predictor.predict` (one task, checked rows) returns ``{head: prediction}`` per row,
  each head type decoding its own logits (:meth:`HeadType.decode`), as evaluation does.
- :meth:`Predictor.output_rows` (rows of any tasks, unchecked) returns what ``predict`` on the
  command line, the MLflow pyfunc, ``mlflow models serve`` and batch scoring all return: one
  ``{"task", "predictions", ["tokens"]}`` per row, or ``{"task", "error"}`` for a malformed
  row when ``on_error="row"`` (``"fail"``, the default, raises for the first one instead).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from multitask_bert.errors import ConfigError, DataError, RowError, short_repr
from multitask_bert.heads import build_head_type
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import TaskSpec

if TYPE_CHECKING:
    from multitask_bert.data.alignment import RowWords

OnError = Literal["fail", "row"]
ON_ERROR_CHOICES: tuple[str, ...] = ("fail", "row")
RUNTIMES: tuple[str, ...] = ("torch", "onnx")


class Predictor:
    """Loads ``<run>/best`` (or any saved model folder) once and predicts rows.

    A row is a dict: ``{"text": ...}`` or ``{"text_a": ..., "text_b": ...}`` for sequence
    tasks; ``{"tokens": [...]}`` (or ``{"text": ...}``, split on whitespace) for token tasks.

    Args:
        model_dir: a saved model folder (``multitask_config.json``, weights, tokenizer).
        device: ``cpu`` or ``cuda`` (PyTorch runtime).
        batch_size: rows per forward pass.
        runtime: ``torch`` (the safetensors weights) or ``onnx`` (``model.onnx`` beside them,
            written by ``multitask-bert export --format onnx``, run with ONNX Runtime).
    """

    def __init__(self, model_dir: str | Path, device: str = "cpu", batch_size: int = 32,
                 runtime: str = "torch") -> None:
        from multitask_bert.models.multitask import (
            CONFIG_FILE,
            WEIGHTS_FILE,
            MultiTaskModel,
            load_tokenizer,
        )

        if runtime not in RUNTIMES:
            raise DataError(f"unknown runtime {runtime!r}; expected one of {list(RUNTIMES)}")
        model_dir = Path(model_dir)
        if not (model_dir / CONFIG_FILE).is_file():
            raise ConfigError(f"{model_dir}: not a multitask-bert model folder (no "
                              f"{CONFIG_FILE}); pass the folder written by training, e.g. "
                              "runs/<name>/best")
        self.tokenizer = load_tokenizer(model_dir)
        self.device = device
        self.batch_size = batch_size
        self.runtime = runtime
        if runtime == "onnx":
            from multitask_bert.onnx_export import OnnxModel

            self.model: Any = OnnxModel(model_dir)
            tasks, label_vocab = self.model.tasks, self.model.label_vocab
        else:
            if not (model_dir / WEIGHTS_FILE).is_file():
                raise ConfigError(f"{model_dir}: no {WEIGHTS_FILE}"
                                  + (" (an ONNX export only): use runtime onnx (--runtime onnx)"
                                     if (model_dir / "model.onnx").is_file() else ""))
            self.model = MultiTaskModel.load(model_dir, map_location=device).to(device)
            tasks, label_vocab = self.model.tasks, self.model.label_vocab
        self.tasks: dict[str, TaskSpec] = {t.name: t for t in tasks}
        self.label_vocab: dict[str, dict[str, list[str]]] = label_vocab
        self.heads = {
            t.name: [build_head_type(h, label_vocab.get(t.name, {}).get(h.name))
                     for h in t.heads]
            for t in tasks
        }

    # -- one task, checked rows ---------------------------------------------------------------
    def predict(self, task: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One dict per row: ``{head: prediction}`` for every head of ``task``."""
        return [prediction for prediction, _ in self._predict_task(task, rows)]

    def _predict_task(self, task: str, rows: list[dict[str, Any]], numbers: list[int] | None
                      = None) -> list[tuple[dict[str, Any], RowWords | None]]:
        if task not in self.tasks:
            raise DataError(f"unknown task {task!r}; this model has tasks {sorted(self.tasks)}")
        spec = self.tasks[task]
        numbers = numbers or list(range(1, len(rows) + 1))
        # similar lengths share a batch (less padding); the output keeps the input order
        order = sorted(range(len(rows)), key=lambda i: _approximate_length(rows[i]))
        out: list[Any] = [None] * len(rows)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            results = self._predict_batch(spec, [rows[i] for i in chunk],
                                          [numbers[i] for i in chunk])
            for index, result in zip(chunk, results, strict=True):
                out[index] = result
        return out

    def _predict_batch(self, spec: TaskSpec, rows: list[dict], numbers: list[int]
                       ) -> list[tuple[dict[str, Any], RowWords | None]]:
        task_type = task_type_of(spec)
        for row, number in zip(rows, numbers, strict=True):
            task_type.check_prediction_row(spec, row, number)
        encoding, words = task_type.encode_rows(
            self.tokenizer, spec, rows, spec.max_length or 512)
        input_ids = encoding["input_ids"]
        token_type_ids = encoding.get("token_type_ids", torch.zeros_like(input_ids))
        logits = self._logits(spec.name, input_ids, encoding["attention_mask"], token_type_ids,
                              encoding.get("word_shapes"))
        results: list[dict[str, Any]] = [{} for _ in rows]
        for head in self.heads[spec.name]:
            decoded = head.decode(logits[head.spec.name], words)
            for result, prediction in zip(results, decoded, strict=True):
                result[head.spec.name] = prediction
        return list(zip(results, words or [None] * len(rows), strict=True))

    def _logits(self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor, word_shapes: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        """Every head's logits of one task for one batch, as float CPU tensors."""
        if self.runtime == "onnx":
            return self.model.logits(task, input_ids, attention_mask, token_type_ids,
                                     word_shapes)
        with torch.inference_mode():
            output = self.model(input_ids.to(self.device), attention_mask.to(self.device),
                                task_id=task, token_type_ids=token_type_ids.to(self.device),
                                word_shapes=None if word_shapes is None
                                else word_shapes.to(self.device))
        return {name: value.float().cpu() for name, value in output.logits.items()}

    # -- rows of any tasks: what users get ----------------------------------------------------
    def output_rows(self, rows: list[Any], on_error: str = "fail") -> list[dict[str, Any]]:
        """Predicts rows of several tasks; one output row per input row, in order.

        An output row is ``{"task", "predictions": {head: prediction}}``, plus ``"tokens"``
        (the words) when a token task's row was given as ``text``. A malformed row (not a
        dict, no or unknown ``task``, a missing or mistyped input field) raises a
        :class:`~multitask_bert.errors.DataError` naming the row, the field, what was
        expected and the model's tasks (``on_error="fail"``), or becomes ``{"task",
        "error"}`` while the other rows are predicted (``on_error="row"``).
        """
        if on_error not in ON_ERROR_CHOICES:
            raise DataError(f"on_error must be one of {list(ON_ERROR_CHOICES)}, got "
                            f"{short_repr(on_error)}")
        outputs: list[dict[str, Any]] = [{} for _ in rows]
        errors: list[RowError] = []
        by_task: dict[str, list[int]] = {}
        for index, row in enumerate(rows):
            try:
                task = self.check_row(row, index + 1)
            except RowError as error:
                errors.append(error)
                task = row.get("task") if isinstance(row, dict) else None
                outputs[index] = {"task": task if isinstance(task, str) else None,
                                  "error": str(error)}
                continue
            by_task.setdefault(task, []).append(index)
        if errors and on_error == "fail":
            raise DataError(_first_error_message(errors, len(rows)))
        for task, indices in by_task.items():
            predicted = self._predict_task(task, [rows[i] for i in indices],
                                           [i + 1 for i in indices])
            for index, (prediction, words) in zip(indices, predicted, strict=True):
                output: dict[str, Any] = {"task": task, "predictions": prediction}
                if words is not None and words.char_spans is not None:
                    output["tokens"] = words.words  # the row was text: the words it made
                outputs[index] = output
        return outputs

    def check_row(self, row: Any, number: int) -> str:
        """The task of a row given for prediction; raises ``RowError`` when it is malformed."""
        tasks = sorted(self.tasks)
        if not isinstance(row, dict):
            raise RowError(number, None, f"expected an object of fields (task, text, ...), got "
                           f"{type(row).__name__} {short_repr(row)}")
        task = row.get("task")
        if task is None and len(tasks) == 1:
            task = tasks[0]
        if task is None:
            raise RowError(number, "task", f"missing; this model has tasks {tasks}",
                           "Give each row a 'task'")
        if not isinstance(task, str):
            raise RowError(number, "task", f"expected a string, got {type(task).__name__} "
                           f"{short_repr(task)}; this model has tasks {tasks}")
        if task not in self.tasks:
            raise RowError(number, "task", f"unknown task {task!r}; this model has tasks {tasks}")
        spec = self.tasks[task]
        task_type_of(spec).check_prediction_row(spec, row, number)
        return task


def _approximate_length(row: dict[str, Any]) -> int:
    """A cheap length of a row's inputs, to group similar lengths in a batch."""
    total = 0
    for value in row.values():
        if isinstance(value, str):
            total += len(value)
        elif isinstance(value, list):
            total += sum(len(v) + 1 for v in value if isinstance(v, str))
    return total


def _first_error_message(errors: list[RowError], total: int) -> str:
    first = str(errors[0])
    if len(errors) == 1:
        return first
    others = ", ".join(str(e.row) for e in errors[1:6]) + (", ..." if len(errors) > 6 else "")
    return (f"{first} ({len(errors) - 1} more of the {total} rows are malformed: rows "
            f"{others}; pass on_error='row' to get the good rows' predictions and an error "
            "per bad row)")

