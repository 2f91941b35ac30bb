"""The tracking-logger interface, the no-op and fan-out loggers, and helpers they share.

Every backend takes the same calls (`log_params`, `log_metrics`, `log_dict`, ...), so the
trainer and the flows never ask which backend is on. Nothing here imports MLflow or torch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

logger = logging.getLogger(__name__)

#: MLflow stores a param value in at most this many characters (`MAX_PARAM_VAL_LENGTH`).
MAX_PARAM_VALUE_LENGTH = 6000
_TRUNCATION_MARKER = "...[truncated]"

#: Run statuses `close` accepts (MLflow's terminal states).
TERMINAL_STATUSES = ("FINISHED", "FAILED", "KILLED")


@runtime_checkable
class TrackingLogger(Protocol):
    """What the trainer and the flows log through; one implementation per backend."""

    @property
    def run_id(self) -> str | None:
        """The backend's run id (MLflow), or None when the backend has none."""
        ...

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Logs hyperparameters; nested mappings become dotted keys, values become strings."""
        ...

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Logs scalars at one step; keys read `task/head/metric` or `train/loss`."""
        ...

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        """Stores `obj` as JSON or YAML (by the extension of `artifact_file`)."""
        ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Stores a local file or folder under `artifact_path` in the run."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Sets run tags (string values)."""
        ...

    def close(self, status: str = "FINISHED") -> None:
        """Ends the run with `status` (FINISHED, FAILED or KILLED); a second call does nothing."""
        ...


# ----------------------------------------------------------------------------- helpers


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Flattens nested mappings to dotted keys and stringifies values.

    Values longer than MLflow's limit are cut to `MAX_PARAM_VALUE_LENGTH` characters, ending
    in a marker, so that no backend sees a value MLflow would refuse.

    Example: `{"optim": {"lr": 1e-4}}` -> `{"optim.lr": "0.0001"}`.
    """
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name))
        else:
            flat[name] = truncate_param_value(_param_string(value))
    return flat


def _param_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Path):
        return value.as_posix()
    return str(value)


def truncate_param_value(value: str, limit: int = MAX_PARAM_VALUE_LENGTH) -> str:
    """Returns `value` unchanged if it fits in `limit` characters, else a cut ending in a marker."""
    if len(value) <= limit:
        return value
    return value[: limit - len(_TRUNCATION_MARKER)] + _TRUNCATION_MARKER


def serialize_dict(obj: Mapping[str, Any], artifact_file: str) -> str:
    """Renders `obj` as YAML for `.yaml`/`.yml` files and as JSON for `.json` files.

    Raises:
        ValueError: for any other extension.
    """
    suffix = Path(artifact_file).suffix.lower()
    if suffix == ".json":
        return json.dumps(obj, indent=2, default=_json_default) + "\n"
    if suffix in (".yaml", ".yml"):
        # Round-trip through JSON so that Paths, tuples and numpy scalars become plain YAML.
        plain = json.loads(json.dumps(obj, default=_json_default))
        return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)
    raise ValueError(f"log_dict: artifact_file {artifact_file!r} must end in .json, .yaml or .yml")


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return value.as_posix()
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def check_status(status: str) -> str:
    """Returns `status` upper-cased if it is a terminal run status, else raises ValueError."""
    normalized = status.upper()
    if normalized not in TERMINAL_STATUSES:
        raise ValueError(f"close: status must be one of {TERMINAL_STATUSES}, got {status!r}")
    return normalized


# Credentials in URLs and in free text that quotes them (MLflow's own error messages quote
# the full request URL, user:password included).
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/?#\s@]+@")
_SECRET_QUERY = re.compile(
    r"(?P<key>[?&;](?:[A-Za-z0-9_\-]*(?:token|password|passwd|pwd|secret|signature|sig|"
    r"credential|api[_\-]?key|access[_\-]?key|auth)[A-Za-z0-9_\-]*)=)[^&#\s/'\"]*",
    re.IGNORECASE,
)


def redact_uri(uri: str) -> str:
    """Hides credentials in a URI, or in any text that contains URIs.

    `user:pass@` becomes `***@`; values of token-like query parameters (`token=`,
    `password=`, `api_key=`, `X-Amz-Signature=`, ...) become `***`. Use it wherever a
    tracking URI is logged, printed or stored.

    Example: `http://u:p@host:5000/?token=abc` -> `http://***@host:5000/?token=***`.
    """
    redacted = _USERINFO.sub(r"\g<scheme>***@", uri)
    return _SECRET_QUERY.sub(r"\g<key>***", redacted)


@contextlib.contextmanager
def closing_logger(tracking_logger: TrackingLogger) -> Iterator[TrackingLogger]:
    """Closes the logger on the way out: FINISHED, KILLED on Ctrl-C, FAILED on an error."""
    try:
        yield tracking_logger
    except KeyboardInterrupt:
        tracking_logger.close("KILLED")
        raise
    except BaseException:
        tracking_logger.close("FAILED")
        raise
    tracking_logger.close("FINISHED")


# ----------------------------------------------------------------------------- loggers


class NoOpLogger:
    """Accepts every call and records nothing (`tracking.backend: none`)."""

    @property
    def run_id(self) -> str | None:
        return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        pass

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        check_status(status)

    def __repr__(self) -> str:
        return "NoOpLogger()"


class CompositeLogger:
    """Fans every call out to several loggers (`tracking.backend: both`).

    Args:
        loggers: the loggers to call, in order.
    """

    def __init__(self, loggers: list[TrackingLogger]) -> None:
        self.loggers = list(loggers)

    @property
    def run_id(self) -> str | None:
        """The first run id any child has (the MLflow run's, with `both`)."""
        return next((child.run_id for child in self.loggers if child.run_id), None)

    def log_params(self, params: Mapping[str, Any]) -> None:
        for child in self.loggers:
            child.log_params(params)

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        for child in self.loggers:
            child.log_metrics(metrics, step)

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        for child in self.loggers:
            child.log_dict(obj, artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        for child in self.loggers:
            child.log_artifact(path, artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for child in self.loggers:
            child.set_tags(tags)

    def close(self, status: str = "FINISHED") -> None:
        """Closes every child, even if one fails; then raises the first failure."""
        check_status(status)
        first_error: BaseException | None = None
        for child in self.loggers:
            try:
                child.close(status)
            except Exception as error:  # the others must still close
                logger.warning("closing %r failed: %s", child, redact_uri(str(error)))
                first_error = first_error or error
        if first_error is not None:
            raise first_error

    def __repr__(self) -> str:
        return f"CompositeLogger({self.loggers!r})"
