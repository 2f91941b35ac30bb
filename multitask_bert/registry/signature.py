"""What the served model says about itself: its signature, input examples, description.

The signature names the input columns (``task``, ``text``, ``text_a``, ``text_b``,
``tokens``) and the output of every head, so the MLflow version page lists them. The input
columns are typed ``Any``: MLflow checks a typed schema *before* the model sees a request,
rejecting the NaN that a mixed frame holds in a row's unused columns and answering a
mistyped field with its own text. Typed ``Any``, every row reaches
:meth:`~multitask_bert.inference.Predictor.check_row`, which names the row, the field and
the type expected. The one parameter, ``on_error`` (``fail`` or ``row``), is part of the
signature, so ``mlflow models serve`` accepts it in a request's ``params``.
"""

from __future__ import annotations

from typing import Any

from multitask_bert.heads import build_head_type, head_type_class
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import TaskSpec

INPUT_COLUMNS: tuple[str, ...] = ("task", "text", "text_a", "text_b", "tokens")
CONTEXT_COLUMNS: tuple[str, ...] = ("left_context", "right_context")
"""Optional inputs of token tasks trained with ``document_context``."""


def model_signature(tasks: list[TaskSpec]) -> Any:
    """The ``ModelSignature`` of a model with these tasks."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, ColSpec, DataType, ParamSchema, ParamSpec, Schema

    columns = INPUT_COLUMNS + (CONTEXT_COLUMNS if any(t.document_context for t in tasks) else ())
    inputs = Schema([ColSpec(AnyType(), name, required=False) for name in columns])
    outputs = Schema([
        ColSpec(DataType.string, "task", required=False),
        ColSpec(_head_outputs(tasks), "predictions", required=False),
        ColSpec(_mlflow_type(["string"]), "tokens", required=False),
        ColSpec(DataType.string, "error", required=False),
    ])
    params = ParamSchema([ParamSpec("on_error", DataType.string, "fail")])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def _head_outputs(tasks: list[TaskSpec]) -> Any:
    """``predictions``: an object with one optional property per head name (a head name
    used by two head types in two tasks is typed ``Any``)."""
    from mlflow.types.schema import AnyType, Object, Property

    by_name: dict[str, set[str]] = {}
    for task in tasks:
        for head in task.heads:
            by_name.setdefault(head.name, set()).add(head.type)
    properties = []
    for name, types in sorted(by_name.items()):
        fields = head_type_class(next(iter(types))).output_fields
        dtype = _mlflow_type(fields) if len(types) == 1 and fields else AnyType()
        properties.append(Property(name, dtype, required=False))
    return Object(properties)


def _mlflow_type(spec: Any) -> Any:
    """MLflow's type for a head's ``output_fields`` notation (see ``HeadType``)."""
    from mlflow.types.schema import Array, DataType, Map, Object, Property

    if isinstance(spec, str):
        return getattr(DataType, spec)
    if isinstance(spec, list):
        return Array(_mlflow_type(spec[0]))
    if set(spec) == {"*"}:
        return Map(_mlflow_type(spec["*"]))
    return Object([Property(name.rstrip("?"), _mlflow_type(value),
                            required=not name.endswith("?"))
                   for name, value in spec.items()])


def example_row(task: TaskSpec, example: dict[str, Any] | None = None) -> dict[str, Any]:
    """One input row of ``task``: the inputs of ``example`` (a row of its data) when given,
    else a made-up one of the right shape."""
    task_type = task_type_of(task)
    if example:
        fields = task_type.input_fields(task, example)
        if all(field in example for field in fields):
            return {"task": task.name, **{field: example[field] for field in fields}}
    return {"task": task.name, **task_type.example_row(task)}


def version_description(tasks: list[TaskSpec], label_vocab: dict[str, dict[str, list[str]]],
                        head_scores: dict[str, dict[str, Any]] | None = None,
                        score: float | None = None, score_metric: str = "") -> str:
    """Markdown for the registry's version page: tasks, heads, label sets, scores, and how
    to call the model."""
    lines = ["multitask-bert: one shared encoder, one head per output."]
    if score is not None:
        lines.append(f"\nScore ({score_metric or 'mean'}, validation): {score:.4f}")
    lines += ["", "| task | input | head | type | labels | validation |",
              "|---|---|---|---|---|---|"]
    for task in tasks:
        inputs = task_type_of(task).describe_inputs(task)
        for head in task.heads:
            labels = label_vocab.get(task.name, {}).get(head.name) or []
            shown = ", ".join(labels[:12]) + (f", ... ({len(labels)})" if len(labels) > 12
                                              else "")
            kind = build_head_type(head, labels).describe()
            value = (head_scores or {}).get(f"{task.name}/{head.name}")
            scored = f"{value['metric']} {value['value']:.4f}" if value else ""
            lines.append(f"| {task.name} | {inputs} | {head.name} | {kind} | {shown} | "
                         f"{scored} |")
    lines += ["", "Input: one row per example, `task` plus the task's input fields. Output: "
              "`{task, predictions: {head: ...}, tokens?}` per row. Examples: "
              "`artifacts/examples/<task>.json` in the model folder (a request body for "
              "`mlflow models serve`)."]
    return "\n".join(lines)

