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
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException

from multitask_bert.errors import DataError

if TYPE_CHECKING:
    from multitask_bert.inference import Predictor

RUNTIME_ENV = "MULTITASK_BERT_RUNTIME"
"""The runtime of a served model whose load did not name one (``torch`` or ``onnx``)."""


class ModelInputError(MlflowException):
    """A malformed request: HTTP 400 from ``mlflow models serve``, whose ``message`` is the
    project's one line (row, field, what was expected, the model's tasks).

    MLflow's scoring server catches an ``MlflowException`` from ``predict``, rewrites its
    ``message`` as ``"Failed to predict data '<the whole input frame>'. Error: ..."`` and
    answers with it (MLflow 3.17, ``scoring_server.invocations``). This class keeps the first
    message it was given, so the answer says only what is wrong; it carries no stack trace,
    so none is sent. ``error_code`` INVALID_PARAMETER_VALUE is MLflow's code for HTTP 400.
    """

    def __init__(self, message: str) -> None:
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        super().__init__(message, error_code=INVALID_PARAMETER_VALUE)

    @property
    def message(self) -> str:
        return self._first_message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_first_message"):
            self._first_message = value


class MultitaskPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts every head of each row's task with a saved multitask-bert model folder.

    Input: a pandas DataFrame (or a list of dicts) with a ``task`` column and, per row,
    ``text`` or ``text_a`` + ``text_b`` (sequence tasks) or ``tokens`` (token tasks: a list
    of words, or ``text`` split on whitespace). Rows of different tasks may share one call;
    values a row's task does not use (the NaN/None of a mixed frame) are ignored; other
    columns (ids) are ignored too. ``task`` may be left out when the model has one task.

    Output: one dict per row, in input order: ``{"task", "predictions": {head:
    prediction}}``, plus ``"tokens"`` when a token task's row was text
    (:meth:`~multitask_bert.inference.Predictor.output_rows`).

    A malformed row raises :class:`ModelInputError` naming the row and the field (HTTP 400
    when served), unless the call passes ``params={"on_error": "row"}``: then that row's
    output is ``{"task", "error"}`` and the other rows are predicted.

    Load-time options (``mlflow.pyfunc.load_model(uri, model_config={...})``): ``device``
    (default ``cuda`` when available, else ``cpu``), ``batch_size`` (default 32) and
    ``runtime`` (``torch``, the default, or ``onnx``: the model's ONNX graph run by ONNX
    Runtime, exported on first load when the model was logged without one). ``mlflow models
    serve`` takes no model config: there ``MULTITASK_BERT_RUNTIME=onnx`` in its environment
    picks the runtime.

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
            context.artifacts["model"], device=device,
            batch_size=int(options.get("batch_size") or 32),
            runtime=str(options.get("runtime") or os.environ.get(RUNTIME_ENV) or "torch"),
        )

    # `pd.DataFrame` is the one hint from which MLflow infers no schema: the frame arrives
    # as given (list-valued `tokens` cells, NaN in a mixed frame's unused columns) and a list
    # of dicts passes too. No hint at all draws a warning; a list hint, a schema.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One output row per input row (see the class docstring)."""
        if self._predictor is None:
            raise RuntimeError("MultitaskPyfunc.predict before load_context")
        on_error = str((params or {}).get("on_error") or "fail")
        try:
            return self._predictor.output_rows(input_rows(model_input), on_error=on_error)
        except DataError as error:
            raise ModelInputError(str(error)) from None


def input_rows(model_input: Any) -> list[Any]:
    """Rows as plain dicts: a DataFrame's records, a list of dicts, a dict of columns (what
    MLflow makes of an ``inputs`` request), or one dict.

    Missing values (None, NaN, ``pd.NA``) are dropped, so a mixed frame's unused columns do
    not reach the tokenizer; array-valued cells (``tokens`` read back from Parquet or JSON)
    become lists. A row that is not a dict stays as it is, for the row check to name it.
    """
    if hasattr(model_input, "to_dict") and hasattr(model_input, "columns"):
        records: list[Any] = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        record = {str(key): _plain(value) for key, value in model_input.items()}
        records = _columns_to_records(record) or [record]
    elif isinstance(model_input, (list, tuple)) or hasattr(model_input, "tolist"):
        records = list(_plain(model_input))
    else:
        raise DataError(
            f"model input must be a pandas DataFrame, a list of row objects or a dict of "
            f"columns, got {type(model_input).__name__}"
        )
    rows: list[Any] = []
    for record in records:
        if isinstance(record, Mapping):
            rows.append({str(key): _plain(value) for key, value in record.items()
                         if not _is_missing(value)})
        else:
            rows.append(record)
    return rows


def _columns_to_records(columns: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The rows of a dict of equally long columns (``tokens`` a list of word lists), or None
    when the dict is one row."""
    values = list(columns.values())
    if not values or not all(isinstance(v, list) for v in values):
        return None
    if len({len(v) for v in values}) != 1:
        return None
    tokens = columns.get("tokens")
    if tokens is not None and any(isinstance(t, str) for t in tokens):
        return None  # one row's word list
    return [dict(zip(columns, row, strict=True)) for row in zip(*values, strict=True)]


def predict_rows(predictor: Predictor, rows: list[Any], on_error: str = "fail"
                 ) -> list[dict[str, Any]]:
    """Predicts rows of several tasks, in input order
    (:meth:`~multitask_bert.inference.Predictor.output_rows`)."""
    return predictor.output_rows(rows, on_error=on_error)


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
