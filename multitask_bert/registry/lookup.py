"""Finding the ``champion`` of a registered model: its description, or the model itself."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.artifacts
import mlflow.pyfunc

from multitask_bert.errors import ConfigError
from multitask_bert.registry.aliases import CHAMPION, DEFAULT_MODEL_NAME
from multitask_bert.registry.store import mlflow_store, registry_client
from multitask_bert.registry.version_tags import champion_info
from multitask_bert.tracking import redact_uri
from multitask_bert.tracking.mlflow_logger import _hide_credentials

if TYPE_CHECKING:
    from mlflow import MlflowClient


@_hide_credentials
def find_champion(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME) -> dict[str, Any] | None:
    """The champion version's description, or None when there is none.

    Returns:
        ``{"model_name", "version", "model_uri", "score", "score_metric",
        "data_fingerprints", "config_hash", "git_commit", "tags"}``: what a pipeline needs to
        skip retraining when the data and the config equal the champion's.
    """
    with mlflow_store(tracking_uri):
        champion = champion_model_version(registry_client(tracking_uri), model_name)
    if champion is None:
        return None
    return {
        "model_name": model_name,
        "version": str(champion.version),
        "model_uri": f"models:/{model_name}/{champion.version}",
        **champion_info(champion),
    }


@_hide_credentials
def load_champion(
    tracking_uri: str,
    model_name: str = DEFAULT_MODEL_NAME,
    dst_path: str | Path | None = None,
    *,
    model_config: Mapping[str, Any] | None = None,
) -> mlflow.pyfunc.PyFuncModel:
    """Downloads the champion to ``dst_path`` and loads it as a pyfunc model.

    Args:
        tracking_uri: the MLflow store and registry.
        model_name: the registered model.
        dst_path: where the model's files go (created; never the system temp folder).
        model_config: load-time options (``device``, ``batch_size``).

    Raises:
        ConfigError: when ``dst_path`` is missing or the model has no champion.
    """
    if dst_path is None:
        raise ConfigError("load_champion: pass dst_path (a folder for the downloaded model)")
    dst_path = Path(dst_path)
    dst_path.mkdir(parents=True, exist_ok=True)
    with mlflow_store(tracking_uri):
        if find_champion(tracking_uri, model_name) is None:
            raise ConfigError(f"registered model {model_name!r} has no {CHAMPION!r} version at "
                              f"{redact_uri(tracking_uri)}")
        return mlflow.pyfunc.load_model(
            f"models:/{model_name}@{CHAMPION}",
            dst_path=str(dst_path),
            model_config=dict(model_config) if model_config else None,
        )


def champion_model_version(client: MlflowClient, name: str) -> Any:
    """The champion's ModelVersion, or None (no such registered model, or no champion).

    Looked up through the registered model's alias map: a missing alias makes
    `get_model_version_by_alias` raise INVALID_PARAMETER_VALUE (SQLite store, MLflow 3.17),
    the same code as a malformed request.
    """
    from mlflow.exceptions import MlflowException

    try:
        aliases = client.get_registered_model(name).aliases
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND"):
            return None
        raise
    if CHAMPION not in aliases:
        return None
    return client.get_model_version(name, str(aliases[CHAMPION]))


@_hide_credentials
def download_model(model_uri: str, tracking_uri: str, dst: str | Path) -> tuple[Path, str]:
    """Downloads a logged or registered model and returns its multitask-bert model folder
    and its version (``models:/<name>@<alias>`` resolved to the version number; a logged
    model's id, or the URI itself, when it is not a registry version).

    A local folder (a saved model, or a downloaded MLflow model) is used where it is.

    Raises:
        ConfigError: when the URI names nothing, or nothing with a multitask-bert model.
    """
    from mlflow.exceptions import MlflowException

    local = Path(model_uri).expanduser()
    if "://" not in model_uri and ":/" not in model_uri and local.exists():
        return _model_folder(local, model_uri), f"local:{local.resolve()}"
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    version, source = model_uri, model_uri
    with mlflow_store(tracking_uri):
        try:
            name, _, ref = model_uri.removeprefix("models:/").partition("/")
            if model_uri.startswith("models:/") and "@" in model_uri:
                name, _, alias = model_uri.removeprefix("models:/").partition("@")
                version = str(registry_client(tracking_uri).get_model_version_by_alias(
                    name, alias).version)
                source = f"models:/{name}/{version}"  # the alias may move meanwhile
            elif model_uri.startswith("models:/") and ref.isdigit():
                version = ref
            # one folder per version: an ONNX graph exported into it stays with its weights
            dst = dst / re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{name}-{version}").strip("_")
            dst.mkdir(parents=True, exist_ok=True)
            folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=source,
                                                              dst_path=str(dst)))
        except MlflowException as error:
            raise ConfigError(f"model {model_uri!r} not found at {redact_uri(tracking_uri)}: "
                              f"{error.message.splitlines()[0]}. Register a model first "
                              "(make demo), or pass another --model") from None
    return _model_folder(folder, model_uri), version


def _model_folder(root: Path, model_uri: str) -> Path:
    from multitask_bert.models.multitask import CONFIG_FILE

    if (root / CONFIG_FILE).is_file():
        return root
    for config_file in sorted(root.rglob(CONFIG_FILE)):
        return config_file.parent
    raise ConfigError(f"{model_uri}: no multitask-bert model inside ({CONFIG_FILE} not found)")
