"""Experiment tracking: one logger interface; MLflow, TensorBoard, both, or none.

    logger = create_logger("both", output_dir=run_dir, experiment_name="glue", run_name="r1")
    with closing_logger(logger):
        logger.log_params(config_dict)
        logger.log_metrics({"train/loss": 0.7}, step=10)

Importing this package is cheap: MLflow and torch are imported when a logger is built.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from multitask_bert.errors import ConfigError
from multitask_bert.tracking.base import (
    MAX_PARAM_VALUE_LENGTH,
    CompositeLogger,
    NoOpLogger,
    TrackingLogger,
    closing_logger,
    flatten_params,
    redact_uri,
    serialize_dict,
)
from multitask_bert.tracking.mlflow_logger import MLflowLogger, mlflow_key
from multitask_bert.tracking.resilient import (
    FALLBACK_FILE,
    ResilientLogger,
    http_health_probe,
    is_tracking_outage,
    replay_fallback_file,
)
from multitask_bert.tracking.tensorboard_logger import TensorBoardLogger

__all__ = [
    "FALLBACK_FILE",
    "MAX_PARAM_VALUE_LENGTH",
    "CompositeLogger",
    "MLflowLogger",
    "NoOpLogger",
    "ResilientLogger",
    "TensorBoardLogger",
    "TrackingBackend",
    "TrackingLogger",
    "closing_logger",
    "create_logger",
    "default_artifact_location",
    "default_tracking_uri",
    "flatten_params",
    "is_tracking_outage",
    "mlflow_key",
    "redact_uri",
    "replay_fallback_file",
    "serialize_dict",
]

TrackingBackend = Literal["mlflow", "tensorboard", "both", "none"]
BACKENDS: tuple[str, ...] = ("mlflow", "tensorboard", "both", "none")


def default_tracking_uri(output_dir: Path) -> str:
    """`$MLFLOW_TRACKING_URI` if set, else a SQLite store in the project's run folder.

    The store is `<output_dir>/../mlflow.db`, so all runs of a project share it.
    """
    from_env = os.environ.get("MLFLOW_TRACKING_URI")
    if from_env:
        return from_env
    # sqlite:/// + an absolute path -> four slashes on POSIX.
    return "sqlite:///" + (Path(output_dir).parent.resolve() / "mlflow.db").as_posix()


def default_artifact_location(tracking_uri: str, output_dir: Path) -> str | None:
    """`<output_dir>/../mlartifacts` (a file URI) for SQLite stores; None for servers.

    MLflow 3 needs an explicit artifact location for experiments in a SQLite store.
    """
    if not tracking_uri.startswith("sqlite:"):
        return None
    return (Path(output_dir).parent.resolve() / "mlartifacts").as_uri()


def create_logger(
    backend: TrackingBackend,
    *,
    output_dir: Path,
    experiment_name: str,
    run_name: str,
    tracking_uri: str | None = None,
    resume_run_id: str | None = None,
) -> TrackingLogger:
    """Builds the logger for `backend`.

    The MLflow logger comes wrapped in a `ResilientLogger`: when the tracking server stops
    answering, training goes on and the calls go to `<output_dir>/tracking_fallback.jsonl`
    (replayed once the server answers again). When the server does not answer at the start,
    the run is tracked in that file only, with a warning.

    Args:
        backend: `mlflow`, `tensorboard`, `both` or `none` (records nothing, writes no file).
        output_dir: this run's folder; TensorBoard writes to `<output_dir>/tensorboard`.
        experiment_name: MLflow experiment, created on first use.
        run_name: MLflow run name.
        tracking_uri: MLflow store; None means `default_tracking_uri(output_dir)`.
        resume_run_id: reopen this MLflow run instead of starting a new one.

    Raises:
        ConfigError: for an unknown backend.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"tracking backend must be one of {BACKENDS}, got {backend!r}")
    output_dir = Path(output_dir)
    loggers: list[TrackingLogger] = []
    try:
        if backend in ("mlflow", "both"):
            uri = tracking_uri or default_tracking_uri(output_dir)
            loggers.append(
                _resilient_mlflow_logger(
                    uri, output_dir, experiment_name, run_name, resume_run_id
                )
            )
        if backend in ("tensorboard", "both"):
            loggers.append(TensorBoardLogger(output_dir / "tensorboard"))
    except BaseException:
        for built in loggers:  # don't leave an MLflow run RUNNING forever
            built.close("FAILED")
        raise
    if not loggers:
        return NoOpLogger()
    return loggers[0] if len(loggers) == 1 else CompositeLogger(loggers)


def _resilient_mlflow_logger(
    uri: str, output_dir: Path, experiment_name: str, run_name: str, resume_run_id: str | None
) -> ResilientLogger:
    """An MLflow logger that survives outages; a file-only one when the server is down now.

    Errors that are not outages (an unsupported URI, a deleted run to resume) still raise.
    """
    try:
        inner = MLflowLogger(
            tracking_uri=uri,
            experiment_name=experiment_name,
            run_name=run_name,
            artifact_location=default_artifact_location(uri, output_dir),
            resume_run_id=resume_run_id,
        )
    except Exception as error:
        if not is_tracking_outage(error):
            raise
        return ResilientLogger(
            NoOpLogger(), output_dir, tracking_uri=uri, probe_interval_s=None, outage=error
        )
    return ResilientLogger(inner, output_dir, tracking_uri=uri, probe=http_health_probe(uri))
