"""MLflow model packaging, registration, aliases, loading back.

    uri = log_model(run_dir / "best", tracking_uri=uri, experiment_name="glue")
    result = register(uri, tracking_uri=uri, score=0.84, score_metric="mean",
                      data_fingerprints={"conll": "ab12..."}, config_hash="9f3c...",
                      git_commit="e1d2...")
    model = load_champion(uri, "multitask-bert", dst_path=work_dir / "champion")
    model.predict(pd.DataFrame([{"task": "conll", "tokens": ["Alice", "left"]}]))

A saved model folder goes in as a pyfunc ``PythonModel`` (:class:`MultitaskPyfunc`) with the
folder as its artifact and this package as its code, so the model loads where
``multitask-bert`` is not installed. Every new version gets the alias ``challenger``;
``champion`` moves to it only when it scores at least as well as the champion on the same
validation data (see :func:`register`).

MLflow's ``log_model`` and ``load_model`` read the process-wide tracking URI; the functions
here set it for the length of the call and restore it after (not thread-safe against other
threads using MLflow's fluent API at the same time).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import math
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow.pyfunc
import pandas as pd

from multitask_bert.errors import ConfigError, DataError
from multitask_bert.tracking import MLflowLogger, default_artifact_location, redact_uri
from multitask_bert.tracking.mlflow_logger import _hide_credentials, sqlite_path

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from multitask_bert.inference import Predictor

logger = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
DEFAULT_MODEL_NAME = "multitask-bert"
#: Version-tag prefix of the per-task validation-data fingerprints.
FINGERPRINT_TAG_PREFIX = "data_fingerprint."

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
)

_PACKAGE_DIR = Path(__file__).resolve().parent
_PROGRESS_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


# ----------------------------------------------------------------------------- pyfunc


class MultitaskPyfunc(mlflow.pyfunc.PythonModel):
    """Predicts every head of each row's task with a saved multitask-bert model folder.

    Input: a pandas DataFrame (or a list of dicts) with a ``task`` column and, per row,
    ``text`` or ``text_a`` + ``text_b`` (sequence tasks) or ``tokens`` (token tasks, a list
    of words). Rows of different tasks may share one call; values a row's task does not use
    (the NaN/None of a mixed frame) are ignored. ``task`` may be left out when the model has
    one task. Output: one ``{head: prediction}`` dict per row, in input order.

    Load-time option (``mlflow.pyfunc.load_model(uri, model_config={...})``): ``device``
    (default ``cuda`` when available, else ``cpu``) and ``batch_size`` (default 32).
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


# ----------------------------------------------------------------------------- logging


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
) -> str:
    """Logs a saved model folder as an MLflow pyfunc model.

    Args:
        model_dir: the folder :meth:`MultiTaskModel.save` wrote (``<run>/best``).
        tracking_uri: the MLflow store (may carry credentials; they are never shown).
        experiment_name: experiment of the new run when ``run_id`` is None (created if absent).
        run_id: log into this existing run (the training run); its status is left alone.
        artifact_path: the logged model's name.
        artifact_location: root for a new experiment's artifacts; None means
            ``mlartifacts`` next to a SQLite database, or the server's choice.

    Returns:
        The model URI (``models:/<model_id>``), for :func:`register`.

    Raises:
        ConfigError: when ``model_dir`` is not a saved model folder.
    """
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelOutput

    from multitask_bert.models.multitask import CONFIG_FILE

    model_dir = Path(model_dir)
    if not (model_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"{model_dir}: not a multitask-bert model folder (no {CONFIG_FILE})")
    if artifact_location is None and (database := sqlite_path(tracking_uri)) is not None:
        # `default_artifact_location` puts `mlartifacts` next to its argument's parent's
        # `mlflow.db`; handing it the database path gives the database's sibling.
        artifact_location = default_artifact_location(tracking_uri, database)

    own_run = None
    if run_id is None:
        own_run = MLflowLogger(
            tracking_uri=tracking_uri,
            experiment_name=experiment_name,
            run_name=f"log-model-{model_dir.name}",
            artifact_location=artifact_location,
        )
        run_id = own_run.run_id
    status = "FAILED"
    try:
        with mlflow_store(tracking_uri):
            client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
            experiment_id = client.get_run(run_id).info.experiment_id
            # The logged model is created here, not inside `log_model`, so that it belongs to
            # `run_id` without making that run the process's active run (`start_run` would
            # end it, FINISHED, on exit).
            logged = client.create_logged_model(
                experiment_id, name=artifact_path, source_run_id=run_id
            )
            info = mlflow.pyfunc.log_model(
                name=artifact_path,
                python_model=MultitaskPyfunc(),
                artifacts={"model": str(model_dir.resolve())},
                code_paths=[str(_PACKAGE_DIR)],
                pip_requirements=pinned_requirements(),
                model_id=logged.model_id,
            )
            client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        status = "FINISHED"
    finally:
        if own_run is not None:
            own_run.close(status)
    logger.info("logged model %s (run %s) at %s", info.model_uri, run_id,
                redact_uri(tracking_uri))
    return info.model_uri


# ----------------------------------------------------------------------------- registry


@dataclass
class RegistrationResult:
    """What :func:`register` did."""

    model_name: str
    version: str
    """The new version."""
    aliases: list[str]
    """Aliases the new version holds now (``challenger``, maybe ``champion``)."""
    promoted: bool
    """Whether ``champion`` moved to the new version."""
    reason: str
    """One sentence: why it was or was not promoted."""
    champion_version: str | None
    """The champion after registration."""
    champion_score: float | None
    """The score of the previous champion the new version was compared with (rescored on
    the new data when the data changed); None when there was none to compare."""
    score: float
    """The new version's score."""
    score_metric: str = ""
    model_uri: str = field(default="")
    """``models:/<name>/<version>`` of the new version."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (NaN scores become None)."""
        data = asdict(self)
        for key in ("champion_score", "score"):
            if isinstance(data[key], float) and not math.isfinite(data[key]):
                data[key] = None
        return data


@_hide_credentials
def register(
    model_uri: str,
    *,
    tracking_uri: str,
    model_name: str = DEFAULT_MODEL_NAME,
    score: float,
    score_metric: str,
    data_fingerprints: Mapping[str, str],
    config_hash: str,
    git_commit: str | None,
    extra_tags: Mapping[str, str] | None = None,
    rescore_champion: Callable[[str], float] | None = None,
    higher_is_better: bool = True,
    await_registration_for: int = 300,
) -> RegistrationResult:
    """Registers a logged model as a new version, sets ``challenger``, maybe ``champion``.

    Promotion: ``champion`` moves to the new version when there is no champion, or when
    the new score is at least the champion's on the same validation data. When the
    champion's ``data_fingerprint.*`` tags (and score metric) equal the new ones, the stored
    scores are compared; otherwise ``rescore_champion(models:/<name>/<champion version>)``
    gives the champion's score on the new data. Without it, the scores are not comparable
    and the new version is promoted (the reason says so).

    Order, so that a failure leaves the registry consistent: the version and its tags are
    written first, the aliases last. If anything fails after the version exists (e.g.
    ``rescore_champion`` raises), the version stays, tagged ``promoted=false``, and no alias
    moves.

    Args:
        model_uri: what :func:`log_model` returned (or any URI MLflow can register).
        tracking_uri: the MLflow store, also used as the model registry.
        model_name: the registered model (created if absent).
        score: the new version's major validation score.
        score_metric: the score's name (``mean`` or ``task/head/metric``).
        data_fingerprints: per task, the fingerprint of the validation data behind ``score``.
        config_hash: hash of the experiment config (to skip retraining identical runs).
        git_commit: the code's commit, if known.
        extra_tags: more version tags.
        rescore_champion: scores a model URI on the new validation data; called while
            MLflow points at ``tracking_uri``, so ``mlflow.pyfunc.load_model(uri,
            dst_path=...)`` works inside it.
        higher_is_better: False for losses and errors.
        await_registration_for: seconds to wait for the version to be READY.

    Raises:
        ValueError: for a score that is not a finite number.
    """
    from mlflow import MlflowClient

    score = float(score)
    if not math.isfinite(score):
        raise ValueError(f"register: score must be a finite number, got {score!r}")
    fingerprints = {str(task): str(value) for task, value in data_fingerprints.items()}
    with mlflow_store(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        _ensure_registered_model(client, model_name)
        champion = _champion_version(client, model_name)

        # 1. The version and its description tags.
        tags = {
            "score": repr(score),
            "score_metric": score_metric,
            "config_hash": config_hash,
            **{FINGERPRINT_TAG_PREFIX + task: value for task, value in fingerprints.items()},
            **({"git_commit": git_commit} if git_commit else {}),
            **{str(key): str(value) for key, value in (extra_tags or {}).items()},
        }
        version = client.create_model_version(
            model_name,
            source=model_uri,
            run_id=_source_run_id(client, model_uri),
            tags=tags,
            await_creation_for=await_registration_for,
            model_id=_model_id(model_uri),
        )
        number = str(version.version)
        try:
            _check_ready(version, model_name)
            # 2. The decision (may run the champion on the new data).
            decision = _decide(
                model_name, score, score_metric, fingerprints, champion,
                rescore_champion, higher_is_better,
            )
            promoted = "true" if decision.promote else "false"
            client.set_model_version_tag(model_name, number, "promoted", promoted)
            if not decision.promote:
                client.set_model_version_tag(model_name, number, "not_promoted_reason",
                                             decision.reason)
            # 3. The aliases, last.
            client.set_registered_model_alias(model_name, CHALLENGER, number)
            if decision.promote:
                client.set_registered_model_alias(model_name, CHAMPION, number)
        except Exception as error:
            with contextlib.suppress(Exception):  # best effort: the first error matters more
                client.set_model_version_tag(model_name, number, "promoted", "false")
                client.set_model_version_tag(
                    model_name, number, "not_promoted_reason",
                    redact_uri(f"registration failed: {type(error).__name__}: {error}")[:4000],
                )
            raise
        aliases = sorted(client.get_model_version(model_name, number).aliases)

    result = RegistrationResult(
        model_name=model_name,
        version=number,
        aliases=aliases,
        promoted=decision.promote,
        reason=decision.reason,
        champion_version=number if decision.promote else (str(champion.version) if champion
                                                          else None),
        champion_score=decision.champion_score,
        score=score,
        score_metric=score_metric,
        model_uri=f"models:/{model_name}/{number}",
    )
    logger.info("registered %s v%s at %s: %s", model_name, number, redact_uri(tracking_uri),
                result.reason)
    return result


@dataclass
class _Decision:
    promote: bool
    reason: str
    champion_score: float | None


def _decide(
    model_name: str,
    score: float,
    score_metric: str,
    fingerprints: dict[str, str],
    champion: Any,
    rescore_champion: Callable[[str], float] | None,
    higher_is_better: bool,
) -> _Decision:
    """The promotion rule; `champion` is the champion's ModelVersion or None."""
    metric = score_metric or "score"
    if champion is None:
        return _Decision(True, f"promoted: no champion yet; score {score:.4g} ({metric})", None)
    info = champion_info(champion)
    label = f"champion v{champion.version}"
    same_data = info["data_fingerprints"] == fingerprints and info["score_metric"] == score_metric
    if same_data and info["score"] is not None and math.isfinite(info["score"]):
        champion_score, basis = info["score"], "same data"
    elif rescore_champion is not None:
        champion_score = float(rescore_champion(f"models:/{model_name}/{champion.version}"))
        basis = "champion rescored on the new data"
        if not math.isfinite(champion_score):
            return _Decision(True, f"promoted: {label} rescored to {champion_score} on the new "
                                   f"data; score {score:.4g} ({metric})", champion_score)
    else:
        return _Decision(
            True,
            f"promoted: score {score:.4g} ({metric}) not comparable with {label}, which was "
            f"scored on other data or another metric (no rescore_champion given)",
            info["score"],
        )
    better_or_equal = score >= champion_score if higher_is_better else score <= champion_score
    if better_or_equal:
        sign = ">=" if higher_is_better else "<="
        return _Decision(True, f"promoted: score {score:.4g} {sign} {label} "
                               f"{champion_score:.4g} ({metric}, {basis})", champion_score)
    sign = "<" if higher_is_better else ">"
    return _Decision(False, f"not promoted: score {score:.4g} {sign} {label} "
                            f"{champion_score:.4g} ({metric}, {basis})", champion_score)


@_hide_credentials
def find_champion(tracking_uri: str, model_name: str = DEFAULT_MODEL_NAME) -> dict[str, Any] | None:
    """The champion version's description, or None when there is none.

    Returns:
        ``{"model_name", "version", "model_uri", "score", "score_metric",
        "data_fingerprints", "config_hash", "git_commit", "tags"}``: what a pipeline needs to
        skip retraining when the data and the config equal the champion's.
    """
    from mlflow import MlflowClient

    with mlflow_store(tracking_uri):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        champion = _champion_version(client, model_name)
    if champion is None:
        return None
    return {
        "model_name": model_name,
        "version": str(champion.version),
        "model_uri": f"models:/{model_name}/{champion.version}",
        **champion_info(champion),
    }


def champion_info(version: Any) -> dict[str, Any]:
    """Score, metric, data fingerprints, config hash and tags of a ModelVersion."""
    tags = dict(version.tags or {})
    try:
        score: float | None = float(tags["score"])
    except (KeyError, ValueError):
        score = None
    return {
        "score": score,
        "score_metric": tags.get("score_metric", ""),
        "data_fingerprints": {
            key[len(FINGERPRINT_TAG_PREFIX):]: value
            for key, value in tags.items()
            if key.startswith(FINGERPRINT_TAG_PREFIX)
        },
        "config_hash": tags.get("config_hash"),
        "git_commit": tags.get("git_commit"),
        "tags": tags,
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


# ----------------------------------------------------------------------------- helpers


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


def _ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise


def _champion_version(client: MlflowClient, name: str) -> Any:
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


def _model_id(model_uri: str) -> str | None:
    """The logged-model id of a ``models:/<model_id>`` URI (MLflow 3), else None."""
    rest = model_uri.removeprefix("models:/")
    if rest != model_uri and "/" not in rest and "@" not in rest and rest.startswith("m-"):
        return rest
    return None


def _source_run_id(client: MlflowClient, model_uri: str) -> str | None:
    if model_uri.startswith("runs:/"):
        return model_uri[len("runs:/"):].split("/", 1)[0]
    if (model_id := _model_id(model_uri)) is not None:
        return client.get_logged_model(model_id).source_run_id
    return None


def _check_ready(version: Any, model_name: str) -> None:
    status = str(getattr(version, "status", "READY"))
    if status != "READY":
        raise RuntimeError(f"model version {model_name} v{version.version} is {status}, not "
                           f"READY: {getattr(version, 'status_message', '')}")
