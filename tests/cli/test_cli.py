"""`multitask-bert train | evaluate | predict` end to end on a tiny random BERT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from multitask_bert.cli import main
from tests.conftest import tiny_config_dict


@pytest.fixture
def trained(task_dir, tmp_path, capsys):
    config = tiny_config_dict(task_dir, tmp_path, epochs=3)
    config["logging"] = {"backend": "both", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                         "log_every_n_steps": 2}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", "--config", str(path), "--set", "training.eval_batch_size=5"]) == 0
    assert "best (step" in capsys.readouterr().out
    return path, tmp_path / "run"


def test_train_writes_metrics_model_and_tracking(trained):
    _, run = trained
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["tagging"]["ner"]["f1"] >= 0.0
    assert (run / "best" / "model.safetensors").is_file()

    # TensorBoard really received per-step training loss (per task) and eval metrics
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/tagging/loss", "tagging/ner/f1", "pairs/score/pearson",
            "train/tokens_per_s", "train/pad_ratio", "train/mfu"} <= tags
    assert all(0 < e.value < 1 for e in events.Scalars("train/mfu"))
    assert len(events.Scalars("train/loss")) >= 3

    # ... and so did MLflow (SQLite store), with the resolved config as an artifact
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{run.parent}/mlflow.db")
    [experiment] = [e for e in client.search_experiments() if e.name == "tiny"]
    [mlrun] = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(mlrun.info.run_id, "sentiment/label/accuracy")
    assert [m.step for m in history] == sorted(m.step for m in history) and len(history) == 3
    assert mlrun.data.params["training.learning_rate"] == "0.001"
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert "config.yaml" in artifacts


def test_evaluate_and_predict(trained, tmp_path, capsys):
    config, run = trained
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(run / "best"), "--config", str(config),
                 "--output", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    best = json.loads((run / "metrics.json").read_text())["best"]
    # the saved best model re-scores exactly as it scored during training
    assert evaluated["sentiment"]["label"]["accuracy"] == best["sentiment"]["label"]["accuracy"]
    assert evaluated["tagging"]["ner"]["f1"] == pytest.approx(best["tagging"]["ner"]["f1"])
    capsys.readouterr()

    assert main(["predict", "--model", str(run / "best"), "--task", "tagging",
                 "--text", "Alice smith visited Paris today ."]) == 0
    row = json.loads(capsys.readouterr().out)
    assert set(row["predictions"]) == {"ner", "pos"}
    assert len(row["predictions"]["ner"]["tags"]) == 6

    rows = tmp_path / "in.jsonl"
    rows.write_text('{"text_a": "bob saw lima", "text_b": "bob saw lima"}\n\n'
                    '{"text_a": "eve left oslo", "text_b": "carol cooked soup"}\n')
    out_rows = tmp_path / "out.jsonl"
    assert main(["predict", "--model", str(run / "best"), "--task", "pairs",
                 "--input", str(rows), "--output", str(out_rows)]) == 0
    lines = [json.loads(line) for line in out_rows.read_text().splitlines()]
    assert len(lines) == 2 and all("value" in r["predictions"]["score"] for r in lines)

    assert main(["predict", "--model", str(run / "best"), "--task", "topics",
                 "--text", "the match ended"]) == 0
    topics = json.loads(capsys.readouterr().out)["predictions"]["topics"]
    assert set(topics["scores"]) == {"sports", "politics", "health"}


def test_user_errors_exit_2_with_a_message_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"tasks": [{"name": "x", "type": "sequence",
                                              "heads": [{"name": "y", "type": "classification"}],
                                              "train": "missing.jsonl"}],
                                   "trainig": {"epochs": 1}}))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "multitask_bert", "train", "--config", str(bad)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "did you mean 'training'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert main(["predict", "--model", str(tmp_path), "--task", "x", "--text", "hi"]) == 2


def test_predict_input_that_is_missing_or_unreadable_is_one_message(tmp_path, capsys):
    """Checked before the model loads: no model is needed to see the message."""
    missing = tmp_path / "missing.jsonl"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.run([sys.executable, "-m", "multitask_bert", "predict", "--model",
                           str(tmp_path), "--task", "x", "--input", str(missing)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2  # the CLI's user-error code
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: --input {missing}: file not found (resolved: {missing}). Give the path of a "
        "JSONL file (one JSON object a line), or '-' to read stdin"]

    assert main(["predict", "--model", str(tmp_path), "--task", "x", "--input",
                 str(tmp_path)]) == 2
    assert f"--input {tmp_path}: is a folder, not a file" in capsys.readouterr().err
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    assert main(["predict", "--model", str(tmp_path), "--task", "x", "--input",
                 str(latin)]) == 2
    assert f"{latin}:2: not valid UTF-8" in capsys.readouterr().err


def test_register_a_finished_run_later(trained, tmp_path, capsys):
    from multitask_bert.registry import find_champion

    _, run = trained
    store = f"sqlite:///{tmp_path}/registry.db"  # another store than training logged to
    assert main(["register", "--run-dir", str(run), "--tracking-uri", store,
                 "--model-name", "later"]) == 0
    out = capsys.readouterr().out
    assert "later version 1 (aliases: " in out
    assert "champion" in out and "challenger" in out
    champion = find_champion(store, "later")
    assert str(champion["version"]) == "1"
    assert set(champion["data_fingerprints"]) == {"tagging", "sentiment", "pairs", "topics"}
    assert main(["register", "--run-dir", str(tmp_path), "--tracking-uri", store]) == 2


def test_evaluate_scores_a_held_out_validation_split(task_dir, tmp_path):
    """A task whose validation split is a seeded part of train (TREC-like) is evaluated too."""
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.pipeline import evaluate_saved_model, train_experiment
    from tests.conftest import tiny_config_dict

    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=2)
    sentiment = next(t for t in data["tasks"] if t["name"] == "sentiment")
    del sentiment["validation"]
    sentiment["holdout_fraction"] = 0.25
    config = ExperimentConfig.from_dict(data)
    result = train_experiment(config)
    metrics = evaluate_saved_model(Path(result.output_dir) / "best", config)
    assert set(metrics) == {"tagging", "sentiment", "pairs", "topics"}
    assert metrics["sentiment"]["label"] == result.best["sentiment"]["label"]
