"""The sweep library: the search space (validated at the door) and the Optuna study (real
Optuna and MLflow on SQLite); trial outcomes are the train flow's return values."""

from __future__ import annotations

import pytest
import yaml

from multitask_bert.errors import ConfigError
from multitask_bert.sweep import SearchSpace, Sweep, TrialOutcome, override
from tests.conftest import tiny_config_dict

SPACE = {"parameters": {
    "training.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "training.epochs": {"low": 1, "high": 3},
    "training.sampling": {"choices": ["round_robin", "proportional"]},
}}


def test_a_space_parses_kinds_and_writes_overrides():
    space = SearchSpace.from_dict(SPACE)
    kinds = {p.key: p.kind for p in space.parameters}
    assert kinds == {"training.learning_rate": "float", "training.epochs": "int",
                     "training.sampling": "categorical"}
    values = {"training.learning_rate": 0.00123, "training.epochs": 2,
              "training.sampling": "proportional"}
    assert space.overrides(values) == ["training.learning_rate=0.00123", "training.epochs=2",
                                       "training.sampling=proportional"]
    assert override("tasks.a.heads.b.loss_weight", 1.5) == "tasks.a.heads.b.loss_weight=1.5"


@pytest.mark.parametrize(("spec", "message"), [
    ({"low": 1}, r"give both 'low' and 'high'"),
    ({"low": 2, "high": 1}, r"'low' \(2\) must be below 'high' \(1\)"),
    ({"low": 0, "high": 1, "log": True}, r"a log scale needs low > 0"),
    ({"choices": []}, r"'choices' must be a non-empty list"),
    ({"low": 1, "high": 2, "scale": "log"}, r"unknown field\(s\) \['scale'\]"),
    ("1e-4..1e-2", r"expected \{low: .., high: ..\} or \{choices"),
])
def test_a_bad_parameter_names_the_file_and_the_key(spec, message):
    with pytest.raises(ConfigError, match=rf"space.yaml: parameter 'training.x': {message}"):
        SearchSpace.from_dict({"parameters": {"training.x": spec}}, source="space.yaml")


@pytest.fixture
def files(task_dir, tmp_path):
    data = tiny_config_dict(task_dir, tmp_path)
    data["logging"] = {"backend": "mlflow", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(data))
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(SPACE, sort_keys=False))
    return tmp_path


def test_a_key_the_config_refuses_is_named_before_any_trial(files):
    space = {"parameters": {"training.learning_rte": {"low": 1e-4, "high": 1e-2}}}
    (files / "space.yaml").write_text(yaml.safe_dump(space))
    with pytest.raises(ConfigError, match=r"(?s)parameter 'training.learning_rte' = 0.0001 "
                       r"is not a valid config value.*did you mean 'learning_rate'"):
        Sweep.open(files / "base.yaml", files / "space.yaml")
    (files / "space.yaml").write_text(yaml.safe_dump(
        {"parameters": {"training.epochs": {"low": 0, "high": 2}}}))
    with pytest.raises(ConfigError, match=r"'training.epochs' = 0 is not a valid config value"):
        Sweep.open(files / "base.yaml", files / "space.yaml")


def test_an_unknown_objective_is_refused(files):
    with pytest.raises(ConfigError,
                       match=r"(?s)objective 'sentiment/nohead'.*has no head 'nohead'"):
        Sweep.open(files / "base.yaml", files / "space.yaml", objective="sentiment/nohead")


def outcome(score: float, accuracy: float, version: str) -> TrialOutcome:
    metrics = {"validation": {"sentiment": {"label": {"accuracy": accuracy, "macro_f1": 0.5}}}}
    return TrialOutcome("COMPLETED", {"score": score, "metrics": metrics,
                                      "registration": {"version": version}})


def test_a_study_is_stored_continued_and_tracked(files):
    from mlflow import MlflowClient

    sweep = Sweep.open(files / "base.yaml", files / "space.yaml", n_trials=3, seed=3,
                       overrides=[f"output_dir={files}/out", "training.max_steps=2"])
    assert sweep.storage_path == files / "optuna.db"  # beside mlflow.db
    first, second = sweep.ask(), sweep.ask()
    assert (first.number, second.number) == (0, 1)
    # each trial its own run folder; then the sweep's overrides, then the trial's values
    assert first.overrides[:2] == [f"output_dir={files}/out/{sweep.name}/trial-0",
                                   "training.max_steps=2"]
    assert first.overrides[2].startswith("training.learning_rate=")
    sweep.bind(first, "run-a")
    sweep.bind(second, "run-b")
    sweep.tell(first, outcome(0.6, 0.9, "1"))

    # interrupted here: opened again, the same study continues with trial 1 still running
    again = Sweep.open(files / "base.yaml", files / "space.yaml", n_trials=3, seed=3,
                       overrides=[f"output_dir={files}/out", "training.max_steps=2"])
    assert again.name == sweep.name and again.parent_run_id == sweep.parent_run_id
    assert again.uid == sweep.uid and len(sweep.uid) == 32
    [waiting] = again.unfinished()
    assert (waiting.number, waiting.flow_run_id, waiting.params) == (1, "run-b", second.params)
    again.tell(waiting, outcome(0.8, 0.7, "2"))
    third = again.ask()
    assert third.number == 2 and again.ask() is None  # n_trials drawn: no fourth
    again.tell(third, TrialOutcome("FAILED", message="the train run failed"))

    rows = again.table()
    assert [(r["trial"], r["score"], r["state"]) for r in rows] == [
        (1, 0.8, "COMPLETED"), (0, 0.6, "COMPLETED"), (2, None, "FAILED")]
    assert again.best().number == 1 and again.best().version == "2"
    trained = again.trial_config(again.best())
    assert trained.run_dir == files / "out" / again.name / "trial-1"
    assert trained.training.learning_rate == pytest.approx(second.params["training.learning_rate"])

    client = MlflowClient(f"sqlite:///{files}/mlflow.db")
    parent = client.get_run(again.parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  f"tags.mlflow.parentRunId = '{again.parent_run_id}'")
    assert sorted(c.data.tags["sweep_trial"] for c in children) == ["0", "1", "2"]
    child = next(c for c in children if c.data.tags["sweep_trial"] == "1")
    assert child.data.metrics["objective"] == 0.8
    assert child.data.metrics["validation/sentiment/label/accuracy"] == 0.7
    assert set(child.data.params) == {"training.learning_rate", "training.epochs",
                                      "training.sampling"}
    assert child.data.tags["prefect_flow_run_id"] == "run-b"


def test_a_head_metric_objective_and_its_direction(files):
    sweep = Sweep.open(files / "base.yaml", files / "space.yaml", n_trials=2,
                       objective="sentiment/label/macro_f1")
    assert sweep.study.direction.name == "MAXIMIZE"
    ticket = sweep.ask()
    assert sweep.tell(ticket, outcome(0.1, 0.9, "1")).objective == 0.5
    loss = Sweep.open(files / "base.yaml", files / "space.yaml", objective="pairs/score/mse")
    assert loss.study.direction.name == "MINIMIZE"
