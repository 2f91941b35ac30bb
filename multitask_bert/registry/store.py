"""Pointing MLflow's process-wide tracking and registry URIs at one store for a block.

MLflow's ``log_model`` and ``load_model`` read the process-wide tracking URI; the registry
functions set it for the length of the call with :func:`mlflow_store` and restore it after
(not thread-safe against other threads using MLflow's fluent API at the same time).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import mlflow

if TYPE_CHECKING:
    from mlflow import MlflowClient

_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@contextlib.contextmanager
def mlflow_store(tracking_uri: str) -> Iterator[None]:
    """Points MLflow's process-wide tracking and registry URIs at ``tracking_uri`` for a
    block, then restores them (and the ``MLFLOW_*_URI`` environment variables MLflow's
    setters write). Artifact progress bars are off inside unless the user turned them on."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    env_keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", _PROGRESS_BAR)
    saved_env = {key: os.environ.get(key) for key in env_keys}
    saved_tracking = getattr(tracking_utils, "_tracking_uri", None)
    saved_registry = getattr(registry_utils, "_registry_uri", None)
    os.environ.setdefault(_PROGRESS_BAR, "false")
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        registry_utils._registry_uri = saved_registry
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def registry_client(tracking_uri: str) -> MlflowClient:
    """An ``MlflowClient`` whose tracking store and model registry are both ``tracking_uri``."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
