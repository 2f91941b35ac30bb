"""Single-task baselines: does sharing one encoder cost any head anything?

For every task of an experiment, train the same encoder on that task alone, with the same
budget (the same number of epochs over the task's data, the same batch size for the task)
and the same hyper-parameters, then compare every head's best validation score::

    result = train_model(config)                             # the multi-task model
    report = add_single_task_baselines(config, result)      # one model per task, compared
    print(report["markdown"])

The single-task runs live in ``<run>/baselines/<task>/`` (each a normal run folder: its own
``metrics.json``, ``best/``, checkpoints); the comparison goes into the multi-task run's
``metrics.json`` under ``baselines``, into the tracking run (``baselines/comparison.json``,
``baselines/comparison.md`` and ``baselines/<task>/<head>/{single_task,delta}`` metrics) and,
as markdown, into the flow's Prefect artifact.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from multitask_bert.atomic import write_json_atomic, write_text_atomic
from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import CachedTask
from multitask_bert.evaluation.evaluator import Metrics
from multitask_bert.tasks import TaskSpec
from multitask_bert.tracking import TrackingLogger, create_logger
from multitask_bert.training import distributed
from multitask_bert.training.experiment import train_model
from multitask_bert.training.result import TrainResult

log = logging.getLogger("multitask_bert.single_task")

BASELINES_DIR = "baselines"
"""Sub-folder of the multi-task run that holds one run folder per single-task baseline."""


# -- configs of the single-task runs ----------------------------------------------------
def single_task_config(config: ExperimentConfig, task_name: str) -> ExperimentConfig:
    """``config`` restricted to one task: same encoder, hyper-parameters and seed; the
    task's own batch size; output in ``<run>/baselines/<task>``; tracked in the same MLflow
    store and experiment as the multi-task run (run name ``<name>-single-<task>``)."""
    config = config.resolve()  # the store and experiment of the multi-task run
    task = config.task(task_name)
    training = config.training
    metric = training.early_stopping.metric
    if metric != "mean" and metric.split("/")[0] != task_name:
        metric = "mean"  # another task's head: select this task's model on its own score
    if training.max_steps is not None:
        log.warning("training.max_steps=%d caps the multi-task run's total steps; the "
                    "single-task run of %s keeps the same cap, so its budget may be larger",
                    training.max_steps, task_name)
    training = training.model_copy(update={
        "task_batch_size": {k: v for k, v in training.task_batch_size.items() if k == task_name},
        "early_stopping": training.early_stopping.model_copy(update={"metric": metric}),
    })
    return config.model_copy(update={
        "name": f"{config.name}-single-{task_name}",
        "tasks": [task],
        "training": training,
        "output_dir": str(config.run_dir / BASELINES_DIR / task_name),
        "baselines": "none",
    })


# -- training -----------------------------------------------------------------------------
def train_single_task_baselines(
    config: ExperimentConfig, cached: dict[str, CachedTask] | None = None
) -> Metrics:
    """Train one single-task model per task of ``config``.

    Args:
        config: the multi-task experiment.
        cached: tokenised tasks from :func:`multitask_bert.data.prepare.prepare_data` (reused;
            tokenised here when None).

    Returns:
        ``{task: {head: {metric: value}}}``: each single-task run's best validation metrics
        (also in ``<run>/baselines/<task>/metrics.json`` under ``best``).
    """
    single: Metrics = {}
    for task in config.tasks:
        task_config = single_task_config(config, task.name)
        log.info("single-task baseline %d/%d: %s -> %s", len(single) + 1, len(config.tasks),
                 task.name, task_config.run_dir)
        task_cached = {task.name: cached[task.name]} if cached and task.name in cached else None
        result = train_model(task_config, task_cached)
        single[task.name] = result.best.get(task.name, {})
    return single


# -- comparison ---------------------------------------------------------------------------
def compare(multi: Metrics, single: Metrics, tasks: list[TaskSpec]) -> list[dict[str, Any]]:
    """One row per head of every task: its major metric in both runs and the difference.

    Returns:
        ``[{task, head, metric, multi_task, single_task, delta}]`` with ``delta = multi_task -
        single_task`` (positive: sharing the encoder helped). A score a run did not record
        (no validation split) is None, and so is the delta.
    """
    rows = []
    for task in tasks:
        for head in task.heads:
            multi_score = _score(multi, task.name, head.name, head.major)
            single_score = _score(single, task.name, head.name, head.major)
            delta = (multi_score - single_score
                     if multi_score is not None and single_score is not None else None)
            rows.append({"task": task.name, "head": head.name, "metric": head.major,
                         "multi_task": multi_score, "single_task": single_score,
                         "delta": delta})
    return rows


def _score(metrics: Metrics, task: str, head: str, metric: str) -> float | None:
    value = metrics.get(task, {}).get(head, {}).get(metric)
    return float(value) if isinstance(value, (int, float)) else None


def comparison_markdown(rows: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table: head | multi-task val | single-task val | delta."""
    lines = ["| head | multi-task val | single-task val | delta |", "|---|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['task']}/{row['head']} ({row['metric']}) | "
                     f"{_fmt(row['multi_task'])} | {_fmt(row['single_task'])} | "
                     f"{_fmt(row['delta'], signed=True)} |")
    return "\n".join(lines)


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def write_comparison(
    run_dir: str | Path,
    rows: list[dict[str, Any]],
    logger: TrackingLogger | None = None,
    *,
    single_task: Metrics | None = None,
) -> str:
    """Record the comparison: ``metrics.json`` gains ``baselines`` (an atomic rewrite that
    keeps every other key), ``<run>/baselines/comparison.md`` is written, and ``logger``
    (when given) gets ``baselines/comparison.json``, the markdown file and one metric per
    head. Returns the markdown table (for a Prefect artifact)."""
    run_dir = Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    data = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    report = {
        "single_task": single_task or {},
        "comparison": rows,
        "runs": {task: str(run_dir / BASELINES_DIR / task) for task in (single_task or {})},
    }
    data["baselines"] = report
    write_json_atomic(metrics_file, data)
    markdown = comparison_markdown(rows)
    markdown_file = run_dir / BASELINES_DIR / "comparison.md"
    markdown_file.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(markdown_file, markdown + "\n")
    if logger is not None:
        logger.log_dict(report, f"{BASELINES_DIR}/comparison.json")
        logger.log_artifact(markdown_file, BASELINES_DIR)
        scalars = {}
        for row in rows:
            key = f"{BASELINES_DIR}/{row['task']}/{row['head']}"
            if row["single_task"] is not None:
                scalars[f"{key}/single_task"] = row["single_task"]
            if row["delta"] is not None:
                scalars[f"{key}/delta"] = row["delta"]
        if scalars:
            logger.log_metrics(scalars, step=int(data.get("global_step") or 0))
    return markdown


def read_comparison(run_dir: str | Path) -> dict[str, Any] | None:
    """The ``baselines`` entry of a run's ``metrics.json`` (None when there is none)."""
    metrics_file = Path(run_dir) / "metrics.json"
    if not metrics_file.is_file():
        return None
    return json.loads(metrics_file.read_text()).get("baselines")


# -- the whole step -----------------------------------------------------------------------
def add_single_task_baselines(
    config: ExperimentConfig,
    multi: TrainResult | Metrics,
    cached: dict[str, CachedTask] | None = None,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Train the single-task baselines of a multi-task run and record the comparison.

    Args:
        config: the multi-task experiment (its ``run_dir`` holds the multi-task run).
        multi: the multi-task :class:`TrainResult`, or its best validation metrics.
        cached: tokenised tasks to reuse.
        run_id: the multi-task tracking run to log the comparison to (default: the
            result's); reopened with the config's backend.

    Returns:
        ``{"single_task": Metrics, "comparison": rows, "markdown": table}``.
    """
    if isinstance(multi, TrainResult):
        run_id = run_id or multi.run_id
        multi = multi.best
    single = train_single_task_baselines(config, cached)
    rows = compare(multi, single, config.tasks)
    markdown = comparison_markdown(rows)
    if distributed.current().is_main:  # under torchrun every rank trained; rank 0 records
        logger = _reopen_logger(config, run_id)
        try:
            markdown = write_comparison(config.run_dir, rows, logger, single_task=single)
        finally:
            if logger is not None:
                logger.close()
        log.info("multi-task vs single-task (validation, major metric per head):\n%s",
                 markdown)
    return {"single_task": single, "comparison": rows, "markdown": markdown}


def _reopen_logger(config: ExperimentConfig, run_id: str | None) -> TrackingLogger | None:
    backend = config.logging.backend
    if backend == "none" or (backend == "mlflow" and not run_id):
        return None
    if backend == "both" and not run_id:
        backend = "tensorboard"
    try:
        return create_logger(
            backend,
            output_dir=config.run_dir,
            experiment_name=config.logging.experiment_name,
            run_name=config.name,
            tracking_uri=config.logging.tracking_uri,
            resume_run_id=run_id if backend in ("mlflow", "both") else None,
        )
    except Exception as exc:  # hours of training are not lost for a tracking problem
        log.warning("comparison not logged to the tracking run %s (%s); it is in "
                    "%s/metrics.json", run_id, exc, config.run_dir)
        return None
