"""The model MLflow serves: a pyfunc ``PythonModel`` around a saved model folder.

:func:`~multitask_bert.registry.packaging.log_model` pickles a :class:`MultitaskPyfunc`
instance into each logged model, and ``mlflow.pyfunc.load_model`` / ``mlflow models serve``
unpickle it *by its module path*: moving the class changes that path.

- Models logged since the registry became a package reference
  ``multitask_bert.registry.pyfunc.MultitaskPyfunc``.
- Models logged before reference ``multitask_bert.registry.MultitaskPyfunc``; the package
  ``__init__`` re-exports the class under that name so that they still load in a process
  where this version of ``multitask_bert`` is already imported (MLflow 3.17 puts a model's
  ``code/`` at the front of ``sys.path`` but does not re-import modules already loaded).
  Keep that re-export while such models may be served.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

from multitask_bert.errors import DataError

if TYPE_CHECKING:
    from multitask_bert.inference import Predictor


class MultitaskPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts every head of each row's task with a saved multitask-bert model folder.

    Input: a pandas DataFrame (or a list of dicts) with a ``task`` column and, per row,
    ``text`` or ``text_a`` + ``text_b`` (sequence tasks) or ``tokens`` (token tasks, a list
    of words). Rows of different tasks may share one call; values a row's task does not use
    (the NaN/None of a mixed frame) are ignored. ``task`` may be left out when the model has
    one task. Output: one ``{head: prediction}`` dict per row, in input order.

    Load-time option (``mlflow.pyfunc.load_model(uri, model_config={...})``): ``device``
    (default ``cuda`` when available, else ``cpu``) and ``batch_size`` (default 32).

    Logged models unpickle this class by its module path (see the module docstring): models
    logged before the split of ``multitask_bert/registry.py`` name it
    ``multitask_bert.registry.MultitaskPyfunc``, which the package still re-exports.
    """

    def __init__(self) -> None:
        self._predictor: Predictor | None = None

    def load_context(self, context: Any) -> None:
        import torch

        from multitask_bert.inference import Predictor

        options = dict(getattr(context, "model_config", None) or {})
        device = options.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
        self._predictor = Predictor(
            context.artifacts["model"], device=device, batch_size=int(options.get("batch_size", 32))
        )

    # `pd.DataFrame` is the one hint from which MLflow infers no schema: the frame arrives
    # as given (list-valued `tokens` cells, NaN in a mixed frame's unused columns) and a list
    # of dicts passes too. No hint at all draws a warning; a list hint, a schema.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One ``{head: prediction}`` dict per input row (see the class docstring)."""
        if self._predictor is None:
            raise RuntimeError("MultitaskPyfunc.predict before load_context")
        return predict_rows(self._predictor, input_rows(model_input))


def input_rows(model_input: Any) -> list[dict[str, Any]]:
    """Rows as plain dicts: a DataFrame's records, a list of dicts, or one dict.

    Missing values (None, NaN, ``pd.NA``) are dropped, so a mixed frame's unused columns do
    not reach the tokenizer; array-valued cells (``tokens`` read back from Parquet or JSON)
    become lists.
    """
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        records = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        records = [dict(model_input)]
    elif isinstance(model_input, (list, tuple)):
        records = list(model_input)
    else:
        raise DataError(
            f"model input must be a pandas DataFrame or a list of dicts, got "
            f"{type(model_input).__name__}"
        )
    rows = []
    for index, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise DataError(f"row {index + 1}: expected a dict of columns, got "
                            f"{type(record).__name__}")
        rows.append({str(key): _plain(value) for key, value in record.items()
                     if not _is_missing(value)})
    return rows


def predict_rows(predictor: Predictor, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicts rows of several tasks: grouped by task, returned in input order."""
    only_task = next(iter(predictor.tasks)) if len(predictor.tasks) == 1 else None
    by_task: dict[str, list[int]] = {}
    for index, row in enumerate(rows):
        task = row.get("task", only_task)
        if not isinstance(task, str) or not task:
            raise DataError(f"row {index + 1}: needs a 'task' column naming one of "
                            f"{sorted(predictor.tasks)}")
        by_task.setdefault(task, []).append(index)
    results: list[dict[str, Any]] = [{} for _ in rows]
    for task, indices in by_task.items():
        predictions = predictor.predict(task, [rows[i] for i in indices])
        for index, prediction in zip(indices, predictions, strict=True):
            results[index] = prediction
    return results


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if type(value).__name__ in ("NAType", "NaTType"):  # pd.NA, pd.NaT
        return True
    return False


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return value.tolist()  # numpy arrays and scalars
    if isinstance(value, tuple):
        return list(value)
    return value
