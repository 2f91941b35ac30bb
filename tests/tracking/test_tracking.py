"""Tracking loggers against real MLflow (SQLite store) and real TensorBoard event files."""

from __future__ import annotations

import json
import logging
import math
import socket
import traceback
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from multitask_bert.errors import ConfigError
from multitask_bert.tracking import (
    MAX_PARAM_VALUE_LENGTH,
    CompositeLogger,
    MLflowLogger,
    NoOpLogger,
    TensorBoardLogger,
    TrackingLogger,
    closing_logger,
    create_logger,
    default_tracking_uri,
    flatten_params,
    redact_uri,
    serialize_dict,
)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    """One project folder (and so one SQLite store) for the module: migrations run once."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield tmp_path_factory.mktemp("project").resolve()


@pytest.fixture(scope="module")
def client(project: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{project}/mlflow.db")


def new_mlflow_run(project: Path, name: str) -> MLflowLogger:
    tracker = create_logger(
        "mlflow", output_dir=project / name, experiment_name="exp", run_name=name
    )
    assert isinstance(tracker.inner, MLflowLogger)
    return tracker


def history(client: MlflowClient, run_id: str, key: str) -> list[tuple[int, float]]:
    return [(m.step, m.value) for m in client.get_metric_history(run_id, key)]


def scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


# ----------------------------------------------------------------------------- MLflow


def test_mlflow_run_records_params_metrics_tags_and_artifacts(
    project: Path, client: MlflowClient, tmp_path: Path
) -> None:
    tracker = new_mlflow_run(project, "run-a")
    assert isinstance(tracker.inner, MLflowLogger)
    assert isinstance(tracker, TrackingLogger)
    tracker.log_params(
        {
            "optim": {"lr": 1e-4, "betas": [0.9, 0.999]},
            "encoder": Path("/models/minilm"),
            "notes": "x" * 7000,
        }
    )
    losses = [0.9, 0.7, 0.55, 0.5]
    for step, loss in enumerate(losses):
        tracker.log_metrics({"train/loss": loss}, step=step * 10)
    tracker.log_metrics({"conll2003/ner/f1": 0.81, "conll2003/pos/accuracy": 0.93}, step=30)
    tracker.set_tags({"stage": "test", "seed": "13"})
    config = {"tasks": ["conll2003", "trec"], "training": {"epochs": 2, "lr": 0.0001}}
    tracker.log_dict(config, "config/experiment.json")
    tracker.log_dict(config, "config/experiment.yaml")
    extra = tmp_path / "predictions.jsonl"
    extra.write_text('{"label": 1}\n')
    tracker.log_artifact(extra, "eval")
    tracker.close()
    tracker.close()  # idempotent

    assert (project / "mlflow.db").is_file()
    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run-a"
    assert client.get_experiment(run.info.experiment_id).name == "exp"
    assert run.data.params["optim.lr"] == "0.0001"
    assert run.data.params["optim.betas"] == "[0.9, 0.999]"
    assert run.data.params["encoder"] == "/models/minilm"
    assert len(run.data.params["notes"]) == MAX_PARAM_VALUE_LENGTH
    assert run.data.tags["stage"] == "test" and run.data.tags["seed"] == "13"
    expected_loss = [(0, 0.9), (10, 0.7), (20, 0.55), (30, 0.5)]
    assert history(client, tracker.run_id, "train/loss") == expected_loss
    assert history(client, tracker.run_id, "conll2003/ner/f1") == [(30, 0.81)]

    # Artifacts live in the project's mlartifacts folder and read back as written.
    assert run.info.artifact_uri.startswith((project / "mlartifacts").as_uri())
    downloaded = Path(client.download_artifacts(tracker.run_id, "config", dst_path=str(tmp_path)))
    assert json.loads((downloaded / "experiment.json").read_text()) == config
    assert yaml.safe_load((downloaded / "experiment.yaml").read_text()) == config
    eval_files = [a.path for a in client.list_artifacts(tracker.run_id, "eval")]
    assert eval_files == ["eval/predictions.jsonl"]
    assert (project / "mlartifacts").is_dir()

    with pytest.raises(RuntimeError, match="closed"):
        tracker.log_metrics({"train/loss": 0.1}, step=40)


def test_mlflow_batches_beyond_limits_nan_and_odd_keys(project: Path, client: MlflowClient) -> None:
    tracker = new_mlflow_run(project, "run-b")
    # More than one log_batch call holds (100 params, 1000 metrics): all must arrive.
    tracker.log_params({f"p{i}": i for i in range(250)})
    tracker.log_metrics({f"m/{i}": float(i) for i in range(2500)}, step=1)
    tracker.log_metrics({"train/loss": math.nan, "squad/qa/f1@5": 0.5}, step=2)
    tracker.close("FINISHED")

    run = client.get_run(tracker.run_id)
    assert len(run.data.params) == 250 and run.data.params["p249"] == "249"
    assert run.data.metrics["m/2499"] == 2499.0
    assert sum(key.startswith("m/") for key in run.data.metrics) == 2500
    assert math.isnan(run.data.metrics["train/loss"])
    assert run.data.metrics["squad/qa/f1_5"] == 0.5


def test_two_mlflow_loggers_in_one_process_keep_their_own_runs(
    project: Path, client: MlflowClient
) -> None:
    first = new_mlflow_run(project, "r1")
    second = new_mlflow_run(project, "r2")
    for step in range(3):
        first.log_metrics({"train/loss": 1.0 + step}, step=step)
        second.log_metrics({"train/loss": 10.0 + step}, step=step)
    first.close()
    second.close("KILLED")

    assert first.run_id != second.run_id
    assert history(client, first.run_id, "train/loss") == [(0, 1.0), (1, 2.0), (2, 3.0)]
    assert history(client, second.run_id, "train/loss") == [(0, 10.0), (1, 11.0), (2, 12.0)]
    assert client.get_run(second.run_id).info.status == "KILLED"


def test_mlflow_resume_reopens_the_run_and_tolerates_logged_params(
    project: Path, client: MlflowClient, caplog: pytest.LogCaptureFixture
) -> None:
    original = new_mlflow_run(project, "rr")
    original.log_params({"lr": 0.1, "epochs": 2})
    original.log_metrics({"train/loss": 1.0}, step=0)
    original.close("FAILED")

    resumed = create_logger(
        "mlflow",
        output_dir=project / "rr",
        experiment_name="exp",
        run_name="ignored",
        resume_run_id=original.run_id,
    )
    assert resumed.run_id == original.run_id
    assert client.get_run(resumed.run_id).info.status == "RUNNING"
    with caplog.at_level(logging.WARNING):
        resumed.log_params({"lr": 0.1, "epochs": 3, "resumed": True})  # MLflow alone would raise
    assert "epochs" in caplog.text
    resumed.log_metrics({"train/loss": 0.5}, step=1)
    resumed.close()

    run = client.get_run(original.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.1", "epochs": "2", "resumed": "True"}
    assert history(client, run.info.run_id, "train/loss") == [(0, 1.0), (1, 0.5)]


def test_closing_logger_marks_a_crashed_run_failed(project: Path, client: MlflowClient) -> None:
    tracker = new_mlflow_run(project, "rc")
    with pytest.raises(ZeroDivisionError), closing_logger(tracker):
        tracker.log_metrics({"train/loss": 1.0}, step=0)
        _ = 1 / 0
    assert client.get_run(tracker.run_id).info.status == "FAILED"


def test_default_tracking_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path / "runs" / "r1")
    assert uri == "sqlite:///" + (tmp_path / "runs").resolve().as_posix() + "/mlflow.db"
    assert uri.startswith("sqlite:////")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert default_tracking_uri(tmp_path / "runs" / "r1") == "http://127.0.0.1:5000"


def test_mlflow_errors_never_show_credentials(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A loopback port nobody listens on: MLflow's error quotes the full request URL.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    uri = f"http://alice:s3cr3t@127.0.0.1:{port}/?token=tok123"
    with caplog.at_level(logging.DEBUG), pytest.raises(MlflowException) as raised:
        MLflowLogger(tracking_uri=uri, experiment_name="exp", run_name="r")
    shown = "".join(traceback.format_exception(raised.value)) + caplog.text
    assert f"127.0.0.1:{port}" in shown  # the error still says where it failed
    assert "s3cr3t" not in shown and "tok123" not in shown


# ----------------------------------------------------------------------------- TensorBoard


def test_tensorboard_writes_scalars_params_and_dicts(tmp_path: Path) -> None:
    tracker = create_logger(
        "tensorboard", output_dir=tmp_path / "run", experiment_name="e", run_name="r"
    )
    assert isinstance(tracker, TensorBoardLogger) and tracker.run_id is None
    tracker.log_params({"optim": {"lr": 0.001}, "name": "a|b"})
    for step, loss in [(0, 0.9), (5, 0.6), (10, 0.4)]:
        tracker.log_metrics({"train/loss": loss, "trec/coarse/accuracy": 1 - loss}, step=step)
    tracker.log_dict({"a": 1}, "config/experiment.yaml")
    tracker.close()
    tracker.close()

    log_dir = tmp_path / "run" / "tensorboard"
    assert list(log_dir.glob("events.out.tfevents.*"))
    loss = scalars(log_dir, "train/loss")
    accuracy = scalars(log_dir, "trec/coarse/accuracy")
    assert [step for step, _ in loss] == [step for step, _ in accuracy] == [0, 5, 10]
    assert [value for _, value in loss] == pytest.approx([0.9, 0.6, 0.4])  # stored as float32
    assert [value for _, value in accuracy] == pytest.approx([0.1, 0.4, 0.6])
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    table = accumulator.Tensors("params/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| optim.lr | 0.001 |" in table and "a\\|b" in table
    assert yaml.safe_load((log_dir / "config" / "experiment.yaml").read_text()) == {"a": 1}
    assert not (tmp_path / "mlflow.db").exists()


def test_both_writes_mlflow_and_tensorboard(project: Path, client: MlflowClient) -> None:
    output_dir = project / "run-both"
    tracker = create_logger("both", output_dir=output_dir, experiment_name="exp", run_name="both")
    assert isinstance(tracker, CompositeLogger)
    tracker.log_params({"lr": 0.01})
    tracker.log_metrics({"train/loss": 0.25}, step=7)
    tracker.log_dict({"k": "v"}, "summary.json")
    tracker.close()
    tracker.close()

    assert tracker.run_id is not None
    assert history(client, tracker.run_id, "train/loss") == [(7, 0.25)]
    assert client.get_run(tracker.run_id).data.params == {"lr": "0.01"}
    assert [a.path for a in client.list_artifacts(tracker.run_id)] == ["summary.json"]
    assert scalars(output_dir / "tensorboard", "train/loss") == [(7, 0.25)]
    assert json.loads((output_dir / "tensorboard" / "summary.json").read_text()) == {"k": "v"}


def test_none_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/must-not-exist.db")
    tracker = create_logger("none", output_dir=tmp_path / "run", experiment_name="e", run_name="r")
    assert isinstance(tracker, NoOpLogger) and tracker.run_id is None
    tracker.log_params({"a": {"b": 1}})
    tracker.log_metrics({"train/loss": 1.0}, step=0)
    tracker.log_dict({"a": 1}, "x.json")
    tracker.log_artifact(tmp_path / "missing.txt")
    tracker.set_tags({"t": "v"})
    tracker.close()
    tracker.close()
    assert list(tmp_path.iterdir()) == []


def test_unknown_backend_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="wandb"):
        create_logger("wandb", output_dir=tmp_path, experiment_name="e", run_name="r")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        NoOpLogger().close("DONE")


# ----------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("http://user:secret@host:5000", "http://***@host:5000"),
        ("https://tok_abc@mlflow.example.com/x", "https://***@mlflow.example.com/x"),
        ("http://host:5000/?token=abc&x=1", "http://host:5000/?token=***&x=1"),
        ("https://h/p?a=1&password=pw&api_key=k", "https://h/p?a=1&password=***&api_key=***"),
        (
            "s3://b/k?X-Amz-Signature=deadbeef&X-Amz-Date=1",
            "s3://b/k?X-Amz-Signature=***&X-Amz-Date=1",
        ),
        ("sqlite:////tmp/a@b/mlflow.db", "sqlite:////tmp/a@b/mlflow.db"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        (
            "API request to http://u:pw@h:1/?token=t/api/2.0/x failed",
            "API request to http://***@h:1/?token=***/api/2.0/x failed",
        ),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected


def test_flatten_params_and_serialize_dict() -> None:
    flat = flatten_params({"a": {"b": {"c": 1}, "d": None}, "e": {}, "long": "y" * 9000})
    assert flat["a.b.c"] == "1" and flat["a.d"] == "None" and flat["e"] == "{}"
    assert len(flat["long"]) == MAX_PARAM_VALUE_LENGTH and flat["long"].endswith("[truncated]")
    assert json.loads(serialize_dict({"p": Path("/x")}, "a.json")) == {"p": "/x"}
    with pytest.raises(ValueError, match=r"\.txt"):
        serialize_dict({}, "a.txt")


def test_experiments_are_tagged_so_the_mlflow_ui_opens_on_training_runs(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    old = client.create_experiment("made-before", artifact_location=(tmp_path / "a").as_uri())
    for name in ("made-before", "new-one"):
        logger = MLflowLogger(tracking_uri=uri, experiment_name=name, run_name="my-flow-run")
        logger.close()
        experiment = client.get_experiment_by_name(name)
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        assert client.get_run(logger.run_id).info.run_name == "my-flow-run"
    assert client.get_experiment_by_name("made-before").experiment_id == old
