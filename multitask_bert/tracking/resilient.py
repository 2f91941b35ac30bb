"""Training goes on when the tracking server does not answer.

`ResilientLogger` forwards every call to an inner logger (MLflow). The first call that fails
switches it to a fallback file, `<run dir>/tracking_fallback.jsonl`, with one warning: that
call and every later one become JSON lines there, instead of one failing (and slow) server
call per step. Every `probe_interval_s` it asks the server again; once the server answers, the
buffered lines are replayed in order and calls go to the server again.

A line of the fallback file::

    {"type": "metrics", "step": 40, "values": {"train/loss": 0.41}, "timestamp": 1767225600.1}

Types: `metrics`, `params`, `tags`, `dict` (with `artifact_file`), `artifact` (with `path`,
`artifact_path`); and, for the reader, `outage` (the error, once per outage), `recovered`
(the lines before it reached the server) and `close`. `replay_fallback_file` sends the calls
of a file to any logger, e.g. a new MLflow run once the server is back.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from multitask_bert.tracking.base import (
    TrackingLogger,
    check_status,
    flatten_params,
    redact_uri,
    serialize_dict,
)

logger = logging.getLogger(__name__)

FALLBACK_FILE = "tracking_fallback.jsonl"
"""Name of the fallback file in the run folder."""

PROBE_INTERVAL_S = 60.0
"""Seconds between two attempts to reach a server that failed."""

_CALL_TYPES = ("metrics", "params", "tags", "dict", "artifact")
# MLflow error codes that mean "the request was wrong", not "the server is unwell".
_CLIENT_ERROR_CODES = frozenset({
    "BAD_REQUEST",
    "INVALID_PARAMETER_VALUE",
    "INVALID_STATE",
    "MALFORMED_REQUEST",
    "PERMISSION_DENIED",
    "RESOURCE_ALREADY_EXISTS",
    "RESOURCE_DOES_NOT_EXIST",
    "UNAUTHENTICATED",
})
_LOCAL_FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError)


def is_tracking_outage(error: BaseException) -> bool:
    """True when `error` says the tracking store is unreachable or unwell (connection refused,
    timeout, HTTP 5xx, a locked database); False when the request itself was wrong (an
    unsupported URI, a deleted run, a missing local file)."""
    if isinstance(error, _LOCAL_FILE_ERRORS):
        return False
    if isinstance(error, OSError):  # ConnectionError, TimeoutError and every requests error
        return True
    code = getattr(error, "error_code", None)
    if isinstance(code, str):  # MlflowException: transport failures come as INTERNAL_ERROR
        return code not in _CLIENT_ERROR_CODES
    return type(error).__module__.split(".")[0] in ("requests", "urllib3", "sqlalchemy")


def http_health_probe(tracking_uri: str, timeout_s: float = 5.0) -> Callable[[], bool] | None:
    """A cheap "does the server answer?" check for an `http(s)://` tracking URI (GET
    `<uri>/health`, credentials left out); None for other URIs (a SQLite file, Databricks)."""
    parts = urllib.parse.urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    if parts.port:
        netloc += f":{parts.port}"
    url = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/health",
                                   "", ""))

    def probe() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=timeout_s):
                return True
        except urllib.error.HTTPError as error:  # it answered: only a 5xx means unwell
            return error.code < 500
        except (OSError, ValueError):
            return False

    return probe


def replay_fallback_file(path: str | Path, target: TrackingLogger, start: int = 0) -> int:
    """Sends the calls recorded in a fallback file to `target`, in order.

    Args:
        path: a `tracking_fallback.jsonl`.
        target: the logger to send them to, e.g. a new MLflow run once the server is back.
        start: byte offset in the file to start from.

    Returns:
        How many calls were sent.

    Raises:
        Exception: the first error of `target` that `is_tracking_outage` calls an outage; the
            lines before it were sent. Other errors (a rejected value, an artifact file that
            is gone) skip that line with a warning.
    """
    return sum(sent for _, sent in _replay_lines(Path(path), target, start))


def _replay_lines(path: Path, target: TrackingLogger, start: int) -> Iterator[tuple[int, bool]]:
    """Replays line by line; yields (byte offset after the line, whether it was a call sent)."""
    offset = start
    with open(path, "rb") as file:
        file.seek(start)
        for raw in file:
            if not raw.endswith(b"\n"):
                return  # a line still being written
            record = json.loads(raw)
            sent = False
            if record.get("type") in _CALL_TYPES:
                try:
                    _apply(target, record)
                    sent = True
                except Exception as error:
                    if is_tracking_outage(error):
                        raise
                    logger.warning("tracking fallback %s: %s call skipped: %s", path,
                                   record["type"], _describe(error))
            offset += len(raw)
            yield offset, sent


class ResilientLogger:
    """Forwards to `inner`; when `inner` fails, records calls in a fallback file instead.

    Args:
        inner: the logger to forward to (an `MLflowLogger`, or a `NoOpLogger` when the MLflow
            run could not even be created).
        fallback_dir: the run folder; the file is `<fallback_dir>/tracking_fallback.jsonl`.
        tracking_uri: the server, for messages (shown through `redact_uri`).
        probe: says whether the server answers again (see `http_health_probe`); None tries
            the replay itself.
        probe_interval_s: seconds between two tries of a failed server; None never tries
            again (every later call goes to the file).
        outage: the error that already happened (the MLflow run could not be created): start
            in fallback mode.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(
        self,
        inner: TrackingLogger,
        fallback_dir: str | Path,
        *,
        tracking_uri: str | None = None,
        probe: Callable[[], bool] | None = None,
        probe_interval_s: float | None = PROBE_INTERVAL_S,
        outage: BaseException | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.fallback_path = Path(fallback_dir) / FALLBACK_FILE
        self._where = redact_uri(tracking_uri) if tracking_uri else repr(inner)
        self._probe = probe
        self._interval = probe_interval_s
        self._clock = clock
        self._offline = False
        self._next_try = 0.0
        self._replay_from = 0  # byte offset of the first line the server has not seen
        self._closed = False
        if outage is not None:
            self._go_offline("start", outage)

    @property
    def offline(self) -> bool:
        """True while calls go to the fallback file."""
        return self._offline

    @property
    def run_id(self) -> str | None:
        """The inner logger's run id (None when the MLflow run could not be created)."""
        return self.inner.run_id

    # -- the logger interface ----------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        self._call("params", lambda: self.inner.log_params(params),
                   lambda: {"values": _redacted(flatten_params(params))})

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._call("metrics", lambda: self.inner.log_metrics(metrics, step),
                   lambda: {"step": int(step),
                            "values": {str(k): float(v) for k, v in metrics.items()}})

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        self._call("dict", lambda: self.inner.log_dict(obj, artifact_file),
                   lambda: {"artifact_file": artifact_file,
                            "values": _redacted(json.loads(serialize_dict(obj, "values.json")))})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call("artifact", lambda: self.inner.log_artifact(path, artifact_path),
                   lambda: {"path": str(Path(path).resolve()), "artifact_path": artifact_path})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._call("tags", lambda: self.inner.set_tags(tags),
                   lambda: {"values": _redacted({str(k): str(v) for k, v in tags.items()})})

    def close(self, status: str = "FINISHED") -> None:
        """Ends the run; never raises because of the tracking server.

        An offline logger tries the server once more (to replay what it buffered); if the
        server still does not answer, the MLflow run stays RUNNING there and the fallback file
        holds the rest of it.
        """
        status = check_status(status)
        if self._closed:
            return
        self._closed = True
        if self._offline and self._interval is not None:
            self._next_try = float("-inf")
            self._try_recover()
        if self._offline:
            self._append({"type": "close", "status": status})
            if self._interval is not None:
                logger.warning("tracking at %s still does not answer: its run %s stays "
                               "RUNNING there; the calls it missed are in %s", self._where,
                               self.inner.run_id, self.fallback_path)
                return
        try:
            self.inner.close(status)
        except Exception as error:
            logger.warning("closing the tracking run at %s failed (%s); training results are "
                           "not affected", self._where, _describe(error))

    # -- forwarding and falling back ---------------------------------------------------
    def _call(self, kind: str, live: Callable[[], None],
              fields: Callable[[], dict[str, Any]]) -> None:
        if self._closed:
            raise RuntimeError(f"tracking logger for {self._where} is closed")
        if self._offline:
            self._try_recover()
        if not self._offline:
            try:
                live()
                return
            except Exception as error:
                self._go_offline(f"log_{kind}" if kind != "tags" else "set_tags", error)
        self._append({"type": kind, **fields()})

    def _go_offline(self, during: str, error: BaseException) -> None:
        self._offline = True
        self._replay_from = self._file_size()
        self._next_try = self._clock() + (self._interval or 0.0)
        self._append({"type": "outage", "during": during, "tracking_uri": self._where,
                      "error": _describe(error)})
        if self._interval is None:
            then = ("this run will not be in the tracking server; replay the file into a run "
                    "later with multitask_bert.tracking.replay_fallback_file")
        else:
            then = (f"the server is tried again every {self._interval:.0f} s and the file "
                    f"replayed once it answers")
        logger.warning("tracking at %s failed (%s: %s); training goes on, and tracking calls go "
                       "to %s; %s", self._where, during, _describe(error), self.fallback_path,
                       then)

    def _try_recover(self) -> None:
        if self._interval is None or self._clock() < self._next_try:
            return
        self._next_try = self._clock() + self._interval
        if self._probe is not None and not self._probe():
            return
        sent = 0
        try:
            for offset, was_sent in _replay_lines(self.fallback_path, self.inner,
                                                  self._replay_from):
                self._replay_from, sent = offset, sent + was_sent
        except Exception as error:  # down again: the lines sent so far stay sent
            logger.debug("tracking at %s still fails: %s", self._where, _describe(error))
            return
        self._offline = False
        self._append({"type": "recovered", "replayed": sent})
        self._replay_from = self._file_size()
        logger.info("tracking at %s answers again: replayed %d calls from %s", self._where,
                    sent, self.fallback_path)

    def _append(self, record: dict[str, Any]) -> None:
        record["timestamp"] = round(time.time(), 3)
        self.fallback_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.fallback_path, "a", encoding="utf-8") as file:
            file.write(json.dumps(record, ensure_ascii=False) + "\n")

    def _file_size(self) -> int:
        try:
            return self.fallback_path.stat().st_size
        except FileNotFoundError:
            return 0

    def __repr__(self) -> str:
        state = "offline" if self._offline else "live"
        return f"ResilientLogger({self.inner!r}, {state}, fallback={str(self.fallback_path)!r})"


def _apply(target: TrackingLogger, record: dict[str, Any]) -> None:
    kind = record["type"]
    if kind == "metrics":
        target.log_metrics(record["values"], step=record["step"])
    elif kind == "params":
        target.log_params(record["values"])
    elif kind == "tags":
        target.set_tags(record["values"])
    elif kind == "dict":
        target.log_dict(record["values"], record["artifact_file"])
    elif kind == "artifact":
        target.log_artifact(record["path"], record["artifact_path"])


def _redacted(value: Any) -> Any:
    """`value` with credentials hidden in every string (a config holds the tracking URI)."""
    if isinstance(value, str):
        return redact_uri(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_redacted(item) for item in value]
    return value


def _describe(error: BaseException, limit: int = 600) -> str:
    text = redact_uri(f"{type(error).__name__}: {error}")
    return text if len(text) <= limit else text[: limit - 3] + "..."
