"""The whole train-multitask flow under prefect_test_harness, on a tiny random BERT and the
sample tasks the project ships."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, TINY_ENCODER

SAMPLE_TASKS = ["news_tagging", "reviews", "questions", "similarity", "topics"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    shutil.copytree(REPO / "tasks_data", root / "tasks_data",
                    ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    config = {
        "name": "flowtest",
        "encoder": TINY_ENCODER,
        "tasks": SAMPLE_TASKS,
        "max_length": 48,
        "training": {"epochs": 1, "max_steps": 30, "batch_size": 16, "learning_rate": 2e-3,
                     "progress_bar": False},
        "logging": {"backend": "mlflow", "tracking_uri": f"sqlite:///{root}/mlflow.db"},
        "output_dir": str(root / "runs" / "flowtest"),
        "cache_dir": str(root / "cache"),
    }
    (root / "flowtest.yaml").write_text(yaml.safe_dump(config))
    return root


def run_flow(workspace: Path, *overrides: str, force: bool = False):
    from flows.train_multitask import TrainParameters, train_multitask

    params = TrainParameters(config_path=str(workspace / "flowtest.yaml"),
                             overrides=list(overrides), force=force)
    state = train_multitask(params, return_state=True)
    return state, state.result()


def task_states(state) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    return {run.name: run.state.name for run in runs}


def test_flow_end_to_end(prefect_harness, workspace):
    import mlflow
    import pandas as pd
    from prefect.client.orchestration import get_client

    from multitask_bert.registry import find_champion, mlflow_store

    tracking = f"sqlite:///{workspace}/mlflow.db"

    # 1. first run: every task Completed, version 1 is champion and challenger
    state, result = run_flow(workspace)
    assert state.is_completed()
    states = task_states(state)
    assert {f"tokenize-{t}" for t in SAMPLE_TASKS} <= set(states)
    assert {"train", "evaluate", "register"} <= {n.split("-")[0] for n in states}
    assert set(states.values()) == {"Completed"}, states
    registration = result["registration"]
    assert registration["version"] == 1 or str(registration["version"]) == "1"
    assert set(registration["aliases"]) == {"champion", "challenger"}
    assert set(result["metrics"]["validation"]) == set(SAMPLE_TASKS)
    assert Path(result["run_dir"], "best", "model.safetensors").is_file()
    assert list(Path(result["run_dir"], "plots").glob("*.png"))

    # artifacts: the per-head table (wide: one row per head) and the markdown summary
    from mlflow import MlflowClient

    with get_client(sync_client=True) as client:
        artifacts = {a.key: a for a in client.read_artifacts()}
    assert {"per-head-metrics", "run-summary"} <= set(artifacts)
    table = artifacts["per-head-metrics"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert len(table) == 7 and {"task", "head", "major", "accuracy validation"} <= set(table[0])
    # MLflow: the run is named after the run folder (the flow run), as TensorBoard's is, and
    # the experiment opens on its training runs
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("flowtest")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    names = {r.info.run_name for r in client.search_runs([experiment.experiment_id])}
    assert Path(result["run_dir"]).name in names

    # 2. same data and config as the champion: training is skipped and says why
    _, result2 = run_flow(workspace)
    assert result2["skipped"] and "champion v1" in result2["reason"]

    # 3. a deliberately worse run (forced, no learning): tokenise tasks are Cached,
    #    the new version stays challenger and champion stays on v1
    state3, result3 = run_flow(workspace, "training.learning_rate=1e-12", force=True)
    states3 = task_states(state3)
    assert all(states3[f"tokenize-{t}"] == "Cached" for t in SAMPLE_TASKS), states3
    reg3 = result3["registration"]
    assert reg3["aliases"] == ["challenger"]
    assert not reg3["promoted"] and "not promoted" in reg3["reason"]
    champion = find_champion(tracking, "multitask-bert")
    assert str(champion["version"]) == "1"

    # the champion loads through MLflow and predicts every head of every task
    (workspace / "loaded").mkdir()
    with mlflow_store(tracking):
        model = mlflow.pyfunc.load_model("models:/multitask-bert@champion",
                                         dst_path=str(workspace / "loaded"))
    rows = pd.DataFrame([
        {"task": "reviews", "text": "a wonderful, moving film"},
        {"task": "questions", "text": "Who wrote Hamlet ?"},
        {"task": "similarity", "text_a": "A man plays a guitar.", "text_b": "A man plays."},
        {"task": "topics", "text": "the team won the final"},
        {"task": "news_tagging", "tokens": ["Maria", "Lopez", "visited", "Paris", "."]},
    ])
    outputs = model.predict(rows)
    assert [o["task"] for o in outputs] == list(rows["task"])
    predictions = [o["predictions"] for o in outputs]
    assert set(predictions[0]) == {"sentiment"}
    assert set(predictions[1]) == {"coarse", "fine"}
    assert set(predictions[4]) == {"ner", "pos"}
    assert len(predictions[4]["ner"]["tags"]) == 5


def test_changed_data_file_misses_the_tokenize_cache(prefect_harness, workspace):
    from prefect import flow

    from flows.train_multitask import tokenize_task
    from multitask_bert import pipeline

    @flow
    def tokenize_all(config: str):
        return {t: tokenize_task(config, t, return_state=True).name for t in SAMPLE_TASKS}

    resolved = pipeline.resolve(workspace / "flowtest.yaml", run_name="tokenize-only")
    config = str(pipeline.start(resolved) / "config.yaml")
    first = tokenize_all(config)
    assert set(first.values()) <= {"Completed", "Cached"}
    again = tokenize_all(config)
    assert set(again.values()) == {"Cached"}, again
    path = workspace / "tasks_data" / "reviews" / "train.jsonl"
    path.write_text(path.read_text() + '{"text": "an extra, new review", "sentiment": "neutral"}\n')
    changed = tokenize_all(config)
    assert changed["reviews"] == "Completed"
    assert all(changed[t] == "Cached" for t in SAMPLE_TASKS if t != "reviews"), changed


def test_score_flow_fails_at_once_on_a_missing_input(prefect_harness, tmp_path):
    """A user error (a missing file) fails the score task without its retry."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.score_multitask import ScoreParameters, score_multitask

    params = ScoreParameters(inputs=[str(tmp_path / "missing.jsonl")],
                             output=str(tmp_path / "scores.parquet"), model_uri=str(tmp_path))
    state = score_multitask(params, return_state=True)
    assert state.is_failed()
    with pytest.raises(Exception, match="input file not found"):
        state.result()
    with get_client(sync_client=True) as client:
        (run,) = client.read_task_runs(flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    assert run.run_count == 1  # not retried
