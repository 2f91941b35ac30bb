"""MLflow backend: one run, written through `MlflowClient` (no global active-run state).

Several `MLflowLogger`s can live in one process (a sweep, a test session) without seeing
each other's runs. `mlflow` is imported when the first logger is built, not when this
module is imported: importing it costs about a second.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from multitask_bert.tracking.base import (
    check_status,
    flatten_params,
    redact_uri,
    serialize_dict,
    truncate_param_value,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient

logger = logging.getLogger(__name__)

# MLflow's tag-value limit (mlflow.utils.validation.MAX_TAG_VAL_LENGTH). Batch limits (1000
# metrics, 100 params/tags a call) need no code here: `MlflowClient.log_batch` splits batches.
MAX_TAG_VALUE_LENGTH = 8000

_P = ParamSpec("_P")
_R = TypeVar("_R")

# MLflow accepts alphanumerics, `_`, `-`, `.`, ` `, `:` and `/` in metric and param names.
_BAD_KEY_CHARACTERS = re.compile(r"[^\w.\- :/]")


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}
"""Tags of the experiments the project creates. ``mlflow.experimentKind`` makes the MLflow 3
UI open an experiment on its training runs, not on the (empty) GenAI trace overview."""


def _hide_credentials(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Re-raises errors whose message quotes a URI with credentials, the credentials hidden.

    MLflow's REST errors quote the full request URL (`http://user:password@host/...`); those
    messages end up in tracebacks, Prefect logs and CI output.
    """

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except Exception as error:
            message = str(error)
            redacted = redact_uri(message)
            if redacted == message:
                raise
            raise _same_error_with_message(error, redacted) from None

    return wrapper


def _same_error_with_message(error: Exception, message: str) -> Exception:
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import ErrorCode

    if isinstance(error, MlflowException):
        return MlflowException(message, error_code=ErrorCode.Value(error.error_code))
    try:
        return type(error)(message)
    except Exception:  # an exception type with a custom constructor
        return RuntimeError(message)


def mlflow_key(key: str) -> str:
    """Maps a key to one MLflow accepts: bad characters become `_`, empty path parts go.

    Example: `squad/qa/f1@5` -> `squad/qa/f1_5`. A task pair `a~b` (gradient telemetry)
    becomes `a-vs-b`: MLflow refuses `~` and `_` is common in task names.
    """
    key = key.replace("~", "-vs-")
    parts = [part for part in _BAD_KEY_CHARACTERS.sub("_", key).split("/") if part]
    parts = [part.replace(".", "_") if set(part) == {"."} else part for part in parts]
    return "/".join(parts) or "_"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file a `sqlite:///...` URI names; None for other URIs and in-memory ones."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    path = tracking_uri[len("sqlite:///") :].split("?", 1)[0]
    if not path or path == ":memory:":
        return None
    return Path(path)


class MLflowLogger:
    """Logs one MLflow run through `MlflowClient`.

    Args:
        tracking_uri: where runs are stored, e.g. `sqlite:////abs/path/mlflow.db` or
            `http://host:5000`. May carry credentials; they never reach logs, tags or errors.
        experiment_name: the experiment to create or reuse.
        run_name: the run's display name (ignored when resuming).
        artifact_location: root for the experiment's artifacts when the experiment is new.
            MLflow 3 needs one with a SQLite store; None lets a tracking server choose.
        tags: tags set on the run at creation.
        resume_run_id: reopen this existing run (status back to RUNNING) instead of creating one.
    """

    @_hide_credentials
    def __init__(
        self,
        *,
        tracking_uri: str,
        experiment_name: str,
        run_name: str | None = None,
        artifact_location: str | None = None,
        tags: Mapping[str, str] | None = None,
        resume_run_id: str | None = None,
    ) -> None:
        from mlflow import MlflowClient

        self._tracking_uri = tracking_uri
        self._closed = False
        database = sqlite_path(tracking_uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)  # SQLite makes no folders
        self.client: MlflowClient = MlflowClient(tracking_uri=tracking_uri)

        if resume_run_id is not None:
            run = self.client.get_run(resume_run_id)
            if run.info.lifecycle_stage != "active":
                raise ValueError(f"MLflow run {resume_run_id} is deleted; it cannot be resumed")
            if run.info.status != "RUNNING":
                self.client.update_run(resume_run_id, status="RUNNING")
            self._logged_params: dict[str, str] = dict(run.data.params)
            if tags:
                self.set_tags(tags)
        else:
            experiment_id = self._experiment_id(experiment_name, artifact_location)
            run = self.client.create_run(
                experiment_id,
                run_name=run_name,
                tags={key: str(value) for key, value in (tags or {}).items()},
            )
            self._logged_params = {}
        self._run_id: str = run.info.run_id
        self.experiment_id: str = run.info.experiment_id
        logger.info(
            "MLflow run %s (%s) in experiment %s at %s",
            self._run_id,
            "resumed" if resume_run_id else "new",
            self.experiment_id,
            redact_uri(tracking_uri),
        )

    def _experiment_id(self, name: str, artifact_location: str | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self.client.get_experiment_by_name(name)
        if experiment is None:
            try:
                return self.client.create_experiment(name, artifact_location=artifact_location,
                                                     tags=dict(EXPERIMENT_TAGS))
            except MlflowException as error:
                if error.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
                # Another process created it between our look-up and our create.
                experiment = self.client.get_experiment_by_name(name)
                assert experiment is not None
        if experiment.lifecycle_stage == "deleted":
            logger.info("restoring deleted MLflow experiment %r", name)
            self.client.restore_experiment(experiment.experiment_id)
        for key, value in EXPERIMENT_TAGS.items():  # experiments made before the tag
            if key not in (experiment.tags or {}):
                try:
                    self.client.set_experiment_tag(experiment.experiment_id, key, value)
                except MlflowException as error:  # e.g. no permission: the UI still works
                    logger.debug("could not tag experiment %r: %s", name, error)
        return experiment.experiment_id

    @property
    def run_id(self) -> str:
        """The MLflow run id."""
        return self._run_id

    @property
    def tracking_uri(self) -> str:
        """The tracking URI as given, credentials included: show `redact_uri(...)` of it."""
        return self._tracking_uri

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"MLflowLogger for run {self._run_id} is closed")

    @_hide_credentials
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Logs flattened, stringified params.

        A param already logged with the same value is skipped (so a resumed run can log its
        config again); one logged with a different value keeps its first value, with a
        warning, because MLflow refuses to change params.
        """
        from mlflow.entities import Param

        self._check_open()
        new: dict[str, str] = {}
        for key, value in flatten_params(params).items():
            key = mlflow_key(key)
            old = self._logged_params.get(key)
            if old is None:
                new[key] = value
            elif old != value:
                logger.warning(
                    "MLflow param %r keeps its logged value %r (new value %r ignored: "
                    "MLflow params cannot change)",
                    key,
                    old[:100],
                    value[:100],
                )
        if new:
            self.client.log_batch(self._run_id, params=[Param(k, v) for k, v in new.items()])
        self._logged_params.update(new)

    @_hide_credentials
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Logs scalars at `step` (any number of keys). NaN is stored as NaN; MLflow's SQL
        store clips +-inf to +-1.8e308."""
        from mlflow.entities import Metric

        self._check_open()
        timestamp = int(time.time() * 1000)
        entries = [
            Metric(mlflow_key(key), float(value), timestamp, int(step))
            for key, value in metrics.items()
        ]
        self.client.log_batch(self._run_id, metrics=entries)

    @_hide_credentials
    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Stores `obj` as the artifact `artifact_file` (`.json`, `.yaml` or `.yml`)."""
        self._check_open()
        self.client.log_text(self._run_id, serialize_dict(obj, artifact_file), artifact_file)

    @_hide_credentials
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Uploads a file, or a folder with its contents, to `<artifact_path>/<name>`."""
        self._check_open()
        path = Path(path)
        if path.is_dir():
            target = PurePosixPath(artifact_path or "", path.name).as_posix()
            self.client.log_artifacts(self._run_id, str(path), artifact_path=target)
        elif path.is_file():
            self.client.log_artifact(self._run_id, str(path), artifact_path=artifact_path)
        else:
            raise FileNotFoundError(f"log_artifact: {path} does not exist")

    @_hide_credentials
    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Sets run tags; values are cut to MLflow's 8000 characters."""
        from mlflow.entities import RunTag

        self._check_open()
        entries = [
            RunTag(mlflow_key(key), truncate_param_value(str(value), MAX_TAG_VALUE_LENGTH))
            for key, value in tags.items()
        ]
        self.client.log_batch(self._run_id, tags=entries)

    @_hide_credentials
    def close(self, status: str = "FINISHED") -> None:
        """Marks the run terminated with `status`; later calls do nothing."""
        status = check_status(status)
        if self._closed:
            return
        self.client.set_terminated(self._run_id, status=status)
        self._closed = True

    def __repr__(self) -> str:
        run_id = getattr(self, "_run_id", None)
        uri = redact_uri(getattr(self, "_tracking_uri", ""))
        return f"MLflowLogger(run_id={run_id!r}, tracking_uri={uri!r})"
