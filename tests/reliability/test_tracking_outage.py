"""MLflow outage: training goes on, and what MLflow missed lands in `tracking_fallback.jsonl`."""

from __future__ import annotations

import http.server
import json
import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from multitask_bert.config import ExperimentConfig
from multitask_bert.pipeline import train_experiment
from multitask_bert.tracking import (
    FALLBACK_FILE,
    NoOpLogger,
    ResilientLogger,
    create_logger,
    replay_fallback_file,
)
from multitask_bert.tracking.resilient import http_health_probe
from tests.conftest import free_port, tiny_config_dict


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def fallback_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and FALLBACK_FILE in r.getMessage()]


@pytest.fixture
def dead_server(monkeypatch: pytest.MonkeyPatch) -> str:
    """An MLflow URI (with credentials) that refuses connections; MLflow fails fast on it."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    return f"http://alice:s3cr3t@127.0.0.1:{free_port()}"


def test_training_completes_when_the_tracking_server_is_down(
    dead_server: str, task_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    raw = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=6)
    raw["tasks"] = raw["tasks"][:2]  # tagging + sentiment
    raw["logging"] = {"backend": "mlflow", "tracking_uri": dead_server, "log_every_n_steps": 2}
    config = ExperimentConfig.from_dict(raw, base_dir=tmp_path)

    with caplog.at_level(logging.INFO):
        result = train_experiment(config)

    run = config.run_dir
    assert (run / "metrics.json").is_file() and (run / "best").is_dir()
    assert result.global_step == 6 and result.run_id is None  # no MLflow run was created
    lines = read_lines(run / FALLBACK_FILE)
    assert lines[0]["type"] == "outage" and "Connection refused" in lines[0]["error"]
    metrics = [x for x in lines if x["type"] == "metrics"]
    assert [x["step"] for x in metrics if "train/loss" in x["values"]] == [2, 4, 6]
    (evaluation,) = [x for x in metrics if "eval/score" in x["values"]]
    assert evaluation["step"] == 6 and "tagging/ner/f1" in evaluation["values"]
    assert all(isinstance(x["timestamp"], float) for x in lines)
    (params,) = [x for x in lines if x["type"] == "params"]
    assert params["values"]["training.learning_rate"] == "0.001"
    assert {x["artifact_file"] for x in lines if x["type"] == "dict"} >= {"config.yaml",
                                                                         "data/tagging.json"}
    assert lines[-1]["type"] == "close" and lines[-1]["status"] == "FINISHED"
    # one warning that names the server (credentials hidden) and the file
    (warning,) = fallback_warnings(caplog)
    assert f"http://***@127.0.0.1:{dead_server.rsplit(':', 1)[1]}" in warning
    assert str(run / FALLBACK_FILE) in warning
    assert "s3cr3t" not in caplog.text and "s3cr3t" not in (run / FALLBACK_FILE).read_text()


def test_errors_that_are_not_an_outage_still_raise(tmp_path: Path) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="unsupported URI"):
        create_logger("mlflow", output_dir=tmp_path, experiment_name="e", run_name="r",
                      tracking_uri="nosuchscheme://host")
    assert not (tmp_path / FALLBACK_FILE).exists()


class FlakyLogger:
    """A fake for a failure mode only: a logger whose server "goes down" after `ok_calls`
    calls (ConnectionError, as `requests` raises) and comes back when `down` is cleared."""

    def __init__(self, ok_calls: int) -> None:
        self.ok_calls = ok_calls
        self.down = False
        self.received: list[tuple[str, Any]] = []
        self.attempts = 0

    @property
    def run_id(self) -> str:
        return "run-1"

    def _send(self, kind: str, payload: Any) -> None:
        self.attempts += 1
        if self.attempts == self.ok_calls + 1:
            self.down = True  # the outage starts here
        if self.down:
            raise ConnectionError("Connection refused: http://bob:pw@mlflow.example:5000")
        self.received.append((kind, payload))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._send("params", dict(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self._send("metrics", (step, dict(metrics)))

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        self._send("dict", artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._send("artifact", str(path))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._send("tags", dict(tags))

    def close(self, status: str = "FINISHED") -> None:
        self._send("close", status)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_calls_go_to_the_file_from_the_failure_on_then_replay_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    inner, clock = FlakyLogger(ok_calls=3), FakeClock()
    tracker = ResilientLogger(inner, tmp_path, tracking_uri="http://bob:pw@mlflow.example:5000",
                              probe_interval_s=60, clock=clock)
    fallback = tmp_path / FALLBACK_FILE
    with caplog.at_level(logging.INFO):
        tracker.log_params({"optim": {"lr": 0.1}})
        tracker.log_metrics({"train/loss": 1.0}, step=1)
        tracker.log_metrics({"train/loss": 0.9}, step=2)
        tracker.log_metrics({"train/loss": 0.8}, step=3)  # the server fails here
        tracker.log_metrics({"train/loss": 0.7}, step=4)
        tracker.set_tags({"stage": "x"})
        clock.now += 30  # too early to try again: no call reaches the server
        tracker.log_metrics({"train/loss": 0.6}, step=5)

        assert inner.received == [("params", {"optim": {"lr": 0.1}}),
                                   ("metrics", (1, {"train/loss": 1.0})),
                                   ("metrics", (2, {"train/loss": 0.9}))]
        assert inner.attempts == 4 and tracker.offline
        lines = read_lines(fallback)
        assert [x["type"] for x in lines] == ["outage", "metrics", "metrics", "tags", "metrics"]
        assert [x["step"] for x in lines if x["type"] == "metrics"] == [3, 4, 5]
        assert lines[1]["values"] == {"train/loss": 0.8}
        (warning,) = fallback_warnings(caplog)
        assert "http://***@mlflow.example:5000" in warning and "pw" not in caplog.text

        clock.now += 31  # a minute after the failure, but still down: stays in the file
        tracker.log_metrics({"train/loss": 0.5}, step=6)
        assert tracker.offline and len(inner.received) == 3

        inner.down = False  # the server is back: the next call replays, then goes live
        clock.now += 61
        tracker.log_metrics({"train/loss": 0.4}, step=7)
    assert not tracker.offline
    assert [step for kind, (step, _) in (r for r in inner.received if r[0] == "metrics")] \
        == [1, 2, 3, 4, 5, 6, 7]
    assert ("tags", {"stage": "x"}) in inner.received
    assert read_lines(fallback)[-1]["type"] == "recovered"
    assert read_lines(fallback)[-1]["replayed"] == 5
    assert len(fallback_warnings(caplog)) == 1  # one outage, one warning

    inner.down = True  # the server dies again and stays down: close() must not raise
    tracker.log_metrics({"train/loss": 0.3}, step=8)
    tracker.close()
    tracker.close()
    assert read_lines(fallback)[-1]["type"] == "close"
    with pytest.raises(RuntimeError, match="closed"):
        tracker.log_metrics({"train/loss": 0.2}, step=9)

    # the file replays into any logger later (here: a fresh fake that stays up)
    later = FlakyLogger(ok_calls=100)
    assert replay_fallback_file(fallback, later) == 6
    assert [p[0] for k, p in later.received if k == "metrics"] == [3, 4, 5, 6, 8]


def test_a_live_close_that_fails_does_not_raise(tmp_path: Path) -> None:
    inner = FlakyLogger(ok_calls=1)
    tracker = ResilientLogger(inner, tmp_path, tracking_uri="http://h:5000")
    tracker.log_metrics({"a": 1.0}, step=0)
    tracker.close("FAILED")  # inner.close raises ConnectionError
    assert not (tmp_path / FALLBACK_FILE).exists()


def test_a_logger_that_never_started_records_everything(tmp_path: Path) -> None:
    tracker = ResilientLogger(NoOpLogger(), tmp_path, tracking_uri="http://h:5000",
                              probe_interval_s=None, outage=ConnectionError("refused"))
    tracker.log_metrics({"a": 1.0}, step=0)
    tracker.log_dict({"k": [1, 2]}, "x.json")
    tracker.close()
    lines = read_lines(tmp_path / FALLBACK_FILE)
    assert [x["type"] for x in lines] == ["outage", "metrics", "dict", "close"]
    assert lines[2]["values"] == {"k": [1, 2]}


def test_http_health_probe(tmp_path: Path) -> None:
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/prefix/health" else 404)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        probe = http_health_probe(f"http://u:p@127.0.0.1:{port}/prefix/")
        assert probe is not None and probe()
    finally:
        server.shutdown()
        server.server_close()
    dead = http_health_probe(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    assert dead is not None and not dead()
    assert http_health_probe(f"sqlite:///{tmp_path}/mlflow.db") is None


def test_credentials_in_the_tracking_uri_stay_out_of_the_run_folder(task_dir, tmp_path):
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.pipeline import train_experiment
    from tests.conftest import tiny_config_dict

    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=2)
    data["logging"] = {"backend": "tensorboard",
                       "tracking_uri": "http://alice:s3cr3t@127.0.0.1:9/?token=abc"}
    train_experiment(ExperimentConfig.from_dict(data))
    run = tmp_path / "run"
    for path in run.rglob("*"):
        if path.is_file() and path.suffix in (".yaml", ".json", ".jsonl"):
            text = path.read_text(errors="replace")
            assert "s3cr3t" not in text and "token=abc" not in text, path
    assert "***" in (run / "config.yaml").read_text()


def test_registration_fails_while_mlflow_is_down_and_succeeds_later_alone(
        task_dir, tmp_path, monkeypatch):
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.pipeline import register_run, train_experiment
    from multitask_bert.registry import find_champion
    from tests.conftest import tiny_config_dict

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=2)
    result = train_experiment(ExperimentConfig.from_dict(data))
    run = Path(result.output_dir)
    down = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(Exception):  # noqa: B017  (whatever MLflow raises for a dead server)
        register_run(run, tracking_uri=down, model_name="later")
    assert (run / "best" / "model.safetensors").is_file()  # the trained model stays
    store = f"sqlite:///{tmp_path}/mlflow.db"
    registered = register_run(run, tracking_uri=store, model_name="later")
    assert set(registered["aliases"]) == {"challenger", "champion"}
    assert str(find_champion(store, "later")["version"]) == "1"
