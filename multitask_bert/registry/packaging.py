"""Packaging a saved model folder as an MLflow pyfunc model, with pinned requirements.

The folder goes in as the artifact of a :class:`~multitask_bert.registry.pyfunc.MultitaskPyfunc`
and the ``multitask_bert`` package as its code, so the model loads where ``multitask-bert`` is
not installed.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc

from multitask_bert.atomic import disk_full_as_error, tree_size
from multitask_bert.errors import ConfigError
from multitask_bert.registry.pyfunc import MultitaskPyfunc
from multitask_bert.registry.signature import example_row, model_signature
from multitask_bert.registry.store import mlflow_store, registry_client
from multitask_bert.tracking import MLflowLogger, default_artifact_location, redact_uri
from multitask_bert.tracking.mlflow_logger import _hide_credentials, sqlite_path

logger = logging.getLogger("multitask_bert.registry")  # one name for the package's messages

#: Distributions the packaged model imports at load time (pinned to the installed versions).
RUNTIME_DISTRIBUTIONS = (
    "torch",
    "transformers",
    "tokenizers",
    "safetensors",
    "pydantic",
    "pyyaml",
    "numpy",
    "pandas",
    "onnx",  # runtime=onnx: the graph is exported on first use when the model has none
    "onnxscript",
    "onnxruntime",
)

#: Load-time options of the logged model (``load_model(uri, model_config={...})``) and their
#: defaults: ``device`` (empty: CUDA when available, else CPU), ``batch_size``, ``runtime``
#: (``torch`` or ``onnx``; empty: ``$MULTITASK_BERT_RUNTIME``, else ``torch``).
LOAD_OPTIONS = {"device": "", "batch_size": 32, "runtime": ""}

#: The ``multitask_bert`` package folder, logged as the model's code.
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def pinned_requirements(distributions: tuple[str, ...] = RUNTIME_DISTRIBUTIONS) -> list[str]:
    """``name==version`` for each installed distribution (local tags like ``+cpu`` cut).

    MLflow adds its own pin. ``torch==2.13.0`` rather than ``2.13.0+cpu``: the local tag only
    resolves on PyTorch's own index, and the target machine picks its CPU or CUDA build.
    """
    pins = []
    for name in distributions:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            logger.warning("not pinning %s: not installed", name)
            continue
        pins.append(f"{name}=={version.split('+', 1)[0]}")
    return pins


@_hide_credentials
def log_model(
    model_dir: str | Path,
    *,
    tracking_uri: str,
    experiment_name: str,
    run_id: str | None = None,
    artifact_path: str = "model",
    artifact_location: str | None = None,
    examples: Mapping[str, dict[str, Any]] | None = None,
) -> str:
    """Logs a saved model folder as an MLflow pyfunc model, with its signature (input
    columns, every head's output, the ``on_error`` parameter), one input example row per
    task (``serving_input_example.json``; also ``artifacts/examples/<task>.json``, a
    request body for ``mlflow models serve``).

    Args:
        model_dir: the folder :meth:`MultiTaskModel.save` wrote (``<run>/best``).
        tracking_uri: the MLflow store (may carry credentials; they are never shown).
        experiment_name: experiment of the new run when ``run_id`` is None (created if absent).
        run_id: log into this existing run (the training run); its status is left alone.
        artifact_path: the logged model's name.
        artifact_location: root for a new experiment's artifacts; None means
            ``mlartifacts`` next to a SQLite database, or the server's choice.
        examples: per task, a row of its data (inputs are taken from it); tasks left out
            get a made-up row of the right shape.

    Returns:
        The model URI (``models:/<model_id>``), for
        :func:`~multitask_bert.registry.registration.register`.

    Raises:
        ConfigError: when ``model_dir`` is not a saved model folder.
    """
    from mlflow.entities import LoggedModelOutput

    from multitask_bert.models.multitask import CONFIG_FILE
    from multitask_bert.tasks import TaskSpec

    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{model_dir}: not a multitask-bert model folder (no {CONFIG_FILE})")
    if artifact_location is None and (database := sqlite_path(tracking_uri)) is not None:
        # `default_artifact_location` puts `mlartifacts` next to its argument's parent's
        # `mlflow.db`; handing it the database path gives the database's sibling.
        artifact_location = default_artifact_location(tracking_uri, database)

    described = json.loads((model_dir / CONFIG_FILE).read_text())
    tasks = [TaskSpec.model_validate(t) for t in described["tasks"]]
    rows = [example_row(task, (examples or {}).get(task.name)) for task in tasks]
    examples_root = Path(tempfile.mkdtemp(prefix="mtb-examples-"))
    examples_dir = examples_root / "examples"  # MLflow names the artifact after the folder
    examples_dir.mkdir()
    for row in rows:
        (examples_dir / f"{row['task']}.json").write_text(
            json.dumps({"dataframe_records": [row]}, indent=2) + "\n")

    own_run = None
    if run_id is None:
        own_run = MLflowLogger(
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            run_name=f"log-model-{model_dir.name}",
            artifact_location=artifact_location,
        )
        run_id = own_run.run_id
    status, logged = "FAILED", None
    try:
        with mlflow_store(tracking_uri):
            client = registry_client(tracking_uri)
            run_info = client.get_run(run_id).info
            experiment_id = run_info.experiment_id
            # The logged model is created here, not inside `log_model`, so that it belongs to
            # `run_id` without making that run the process's active run (`start_run` would
            # end it, FINISHED, on exit).
            logged = client.create_logged_model(
                experiment_id, name=artifact_path, source_run_id=run_id
            )
            # out of space (the artifact store, or MLflow's staging copy in the system temp):
            # the logged model is marked FAILED below and no registry version points at it
            target = _local_path(run_info.artifact_uri) or Path(tempfile.gettempdir())
            with disk_full_as_error(target, tree_size(model_dir),
                                    "the MLflow artifact location (or TMPDIR)"):
                info = mlflow.pyfunc.log_model(
                    name=artifact_path,
                    python_model=MultitaskPyfunc(),
                    artifacts={"model": str(model_dir.resolve()), "examples": str(examples_dir)},
                    code_paths=[str(_PACKAGE_DIR)],
                    pip_requirements=pinned_requirements(),
                    model_id=logged.model_id,
                    signature=model_signature(tasks),
                    input_example=rows,
                    # the load-time options and their defaults: MLflow ignores options at
                    # `load_model(..., model_config=...)` that the model was not logged with
                    model_config=dict(LOAD_OPTIONS),
                )
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        status = "FINISHED"
    except BaseException:
        if logged is not None:
            _mark_failed(tracking_uri, logged.model_id)
        raise
    finally:
        shutil.rmtree(examples_root, ignore_errors=True)
        if own_run is not None:
            own_run.close(status)
    logger.info("logged model %s (run %s) at %s", info.model_uri, run_id,
                redact_uri(tracking_uri))
    return info.model_uri


def _local_path(uri: str) -> Path | None:
    """The folder of a local artifact URI (``file:`` or a plain path), else None."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    return Path(uri) if not parsed.scheme else None


def _mark_failed(tracking_uri: str, model_id: str) -> None:
    """Best effort: a logged model whose packaging failed is FAILED, not PENDING."""
    from mlflow.entities import LoggedModelStatus

    try:
        with mlflow_store(tracking_uri):
            registry_client(tracking_uri).finalize_logged_model(model_id,
                                                                LoggedModelStatus.FAILED)
    except Exception as exc:  # the original error matters more
        logger.debug("could not mark logged model %s FAILED: %s", model_id, exc)
