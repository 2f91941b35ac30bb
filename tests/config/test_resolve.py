"""The config resolved once, at the door: folders, tracking URI, experiment name; written to
the run folder and read back by every later step."""

from __future__ import annotations

import pytest

from multitask_bert.config import ExperimentConfig
from multitask_bert.fingerprint import NOT_IN_FINGERPRINT, experiment_fingerprint
from tests.conftest import tiny_config_dict


def config_from(task_dir, tmp_path, **top) -> ExperimentConfig:
    data = tiny_config_dict(task_dir, tmp_path)
    data.update(top)
    return ExperimentConfig.from_dict(data)


def test_resolve_makes_folders_absolute_and_fills_tracking(task_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = config_from(task_dir, tmp_path, output_dir="runs/exp", cache_dir="cache")
    config = config.model_copy(update={"logging": config.logging.model_copy(
        update={"tracking_uri": None})})
    resolved = config.resolve(root=tmp_path, run_name="run-1")
    assert resolved.output_dir == str(tmp_path / "runs" / "exp" / "run-1")
    assert resolved.cache_dir == str(tmp_path / "cache")
    # one store beside the experiment's folder for every run of every experiment
    assert resolved.logging.tracking_uri == f"sqlite:///{tmp_path}/runs/mlflow.db"
    assert resolved.logging.experiment_name == "tiny"
    assert resolved.resolve() == resolved  # idempotent
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert config.resolve(root=tmp_path).logging.tracking_uri == "http://127.0.0.1:5000"


def test_the_run_config_round_trips_with_credentials_redacted(task_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    secret = "http://alice:s3cr3t@127.0.0.1:9/"
    data = tiny_config_dict(task_dir, tmp_path)
    data["logging"] = {"backend": "none", "tracking_uri": secret}
    config = ExperimentConfig.from_dict(data).resolve()
    path = config.write()
    assert "s3cr3t" not in path.read_text() and "***" in path.read_text()
    again = ExperimentConfig.load_run(config.run_dir)
    assert again.logging.tracking_uri == secret  # this process saw it
    assert again.to_dict() == config.to_dict()


def test_the_fingerprint_ignores_only_the_listed_keys(task_dir, tmp_path):
    config = config_from(task_dir, tmp_path).resolve()
    data = {"tagging": "a", "sentiment": "b", "pairs": "c", "topics": "d"}
    base = experiment_fingerprint(config, data)
    training = config.training
    same = [
        config.model_copy(update={"output_dir": str(tmp_path / "elsewhere")}),
        config.model_copy(update={"training": training.model_copy(
            update={"progress_bar": True, "keep_checkpoints": 9, "eval_batch_size": 3})}),
    ]
    assert all(experiment_fingerprint(c, data) == base for c in same)
    different = [
        config.model_copy(update={"training": training.model_copy(update={"seed": 1})}),
        config.model_copy(update={"max_length": 16}),
    ]
    assert all(experiment_fingerprint(c, data) != base for c in different)
    assert experiment_fingerprint(config, {**data, "pairs": "changed"}) != base
    assert "training.eval_batch_size" in NOT_IN_FINGERPRINT


def test_a_moved_data_file_keeps_the_fingerprint(task_dir, tmp_path):
    config = config_from(task_dir, tmp_path).resolve()
    moved = tmp_path / "moved"
    task_dir.rename(moved)
    data = tiny_config_dict(moved, tmp_path)
    other = ExperimentConfig.from_dict(data).resolve()
    same_data = {"tagging": "a"}
    assert experiment_fingerprint(other, same_data) == experiment_fingerprint(config, same_data)


@pytest.mark.parametrize("override", ["training.learning_rate=0.5",
                                      "tasks.pairs.heads.score.loss_weight=2"])
def test_training_settings_are_in_the_fingerprint(task_dir, tmp_path, override):
    data = tiny_config_dict(task_dir, tmp_path)
    base = ExperimentConfig.from_dict(data).resolve()
    changed = ExperimentConfig.from_dict(data, overrides=[override]).resolve()
    assert experiment_fingerprint(base, {}) != experiment_fingerprint(changed, {})


def test_by_fingerprint_the_run_folder_is_named_by_what_it_trains(task_dir, tmp_path):
    """The flow's run folders: runs/<experiment>/<fingerprint>, equal for every run of the
    same config and data (whatever the tracking or checkpoint settings), another folder when
    the config or the data change, and the user's folder when an override names one."""
    import yaml

    from multitask_bert import pipeline

    data = tiny_config_dict(task_dir, tmp_path)
    data["output_dir"] = "runs/tiny"
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data))

    def folder(*overrides: str):
        return pipeline.resolve(path, list(overrides), root=tmp_path,
                                by_fingerprint=True).run_dir

    first = folder()
    assert first.parent == tmp_path / "runs" / "tiny"
    assert first.name == pipeline.run_fingerprint(pipeline.resolve(path, root=tmp_path))
    # settings outside the fingerprint (display, checkpoints, tracking) keep the folder
    assert folder("training.progress_bar=false", "training.checkpoint_every_n_steps=3",
                  "logging.backend=mlflow") == first
    # another config, or other data: another folder
    assert folder("training.learning_rate=0.5") != first
    train = task_dir / "sentiment" / "train.jsonl"
    train.write_text(train.read_text() + '{"text": "one more", "label": "pos"}\n')
    changed = folder()
    assert changed != first and changed.parent == first.parent
    # the user chose the folder
    assert folder(f"output_dir={tmp_path}/mine") == tmp_path / "mine"
