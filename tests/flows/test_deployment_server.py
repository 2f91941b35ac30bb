"""prefect.yaml against a real Prefect server and a real process worker.

Server and worker are subprocesses with their own PREFECT_HOME, on a free loopback port (never
4200, where a user's server may run); `prefect --no-prompt deploy --all` registers the repo's
prefect.yaml there, and `prefect deployment run train-multitask/local` trains a tiny random
BERT on the sample tasks of tasks_data/. About a minute on 2 cores; the sweep test (3 trials,
one kill of the sweep) a few minutes more.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_ENCODER
from tests.flows.prefect_stack import (
    FINAL_STATES,
    RUN_TIMEOUT_S,
    Stack,
    flow_run_logs,
    run_id_of,
    running_stack,
    wait_final,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("deployment-server")) as deployed:
        yield deployed


def tiny_params(root: Path) -> dict:
    overrides = [f"encoder.random_init={str(TINY_ENCODER['random_init']).lower()}"]
    overrides += [f"encoder.config_overrides.{key}={value}"
                  for key, value in TINY_ENCODER["config_overrides"].items()]
    overrides += [
        "training.epochs=1", "training.max_steps=4", "training.progress_bar=false",
        "logging.log_every_n_steps=2",  # progress lines for scripts/demo_watch.py
        "logging.backend=mlflow", f"logging.tracking_uri=sqlite:///{root}/mlflow.db",
        f"output_dir={root}/runs/tiny", f"cache_dir={root}/cache",
    ]
    return {"params": {"config_path": "configs/quickstart.yaml", "overrides": overrides}}


def deployment(stack: Stack, name: str):
    with stack.client() as client:
        return client.read_deployment_by_name(f"train-multitask/{name}")


def test_deployments_registered(stack: Stack) -> None:
    local, scheduled, gpu = (deployment(stack, n) for n in ("local", "scheduled", "gpu"))
    assert local.work_pool_name == scheduled.work_pool_name == "local"
    assert (local.work_queue_name, scheduled.work_queue_name) == ("default", "nightly")
    assert local.parameters == {"params": {"config_path": "configs/quickstart.yaml"}}
    # the pull step points the process worker at this checkout, whatever its path
    assert local.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]
    # the pydantic parameter is a form the server validates
    schema = local.parameter_openapi_schema
    assert "TrainParameters" in schema["definitions"]
    assert set(schema["definitions"]["TrainParameters"]["properties"]) >= {
        "config_path", "overrides", "force", "model_name"}

    assert gpu.work_pool_name == "gpu"
    assert gpu.job_variables["gpu_count"] == 1
    with stack.client() as client:
        template = client.read_work_pool("gpu").base_job_template
    requests = template["job_configuration"]["container_create_kwargs"]["device_requests"]
    assert requests == [{"driver": "nvidia", "count": "{{ gpu_count }}",
                         "capabilities": [["gpu"]]}]


def test_scheduled_deployment_creates_runs(stack: Stack) -> None:
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    scheduled = deployment(stack, "scheduled")
    assert [s.schedule.cron for s in scheduled.schedules] == ["0 3 * * *"]
    assert scheduled.schedules[0].active
    runs = []
    deadline = time.monotonic() + 60
    while not runs and time.monotonic() < deadline:
        with stack.client() as client:
            runs = client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[scheduled.id])),
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED]))))
        if not runs:
            time.sleep(2)
    assert runs, f"the scheduler made no runs of train-multitask/scheduled\n{stack.log_tails()}"
    for run in runs:
        start = run.expected_start_time.astimezone(UTC)
        assert (start.hour, start.minute) == (3, 0)
        assert start > datetime.now(UTC)
        assert run.parameters == {"params": {"config_path": "configs/quickstart.yaml"}}


def test_local_deployment_runs_on_the_worker(stack: Stack) -> None:
    from multitask_bert.registry import find_champion

    created = stack.prefect("deployment", "run", "train-multitask/local",
                            "--params", json.dumps(tiny_params(stack.root)))
    flow_run_id = next(line.split("UUID:")[1].strip()
                       for line in created.stdout.splitlines() if "UUID:" in line)

    state = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        with stack.client() as client:
            state = client.read_flow_run(flow_run_id).state
        if state is not None and state.type.value in FINAL_STATES:
            break
        time.sleep(3)
    assert state is not None and state.is_completed(), (
        f"flow run {flow_run_id} ended {state.name if state else None}: "
        f"{state.message if state else ''}\n{stack.log_tails(120)}")

    run_dir = stack.root / "runs" / "tiny"
    metrics = json.loads((run_dir / "evaluation.json").read_text())
    assert set(metrics["validation"]) == {"news_tagging", "reviews", "questions", "similarity",
                                          "topics"}
    champion = find_champion(f"sqlite:///{stack.root}/mlflow.db", "multitask-bert")
    assert champion is not None and champion["version"] == "1"
    # evaluate and register say in the run's logs what they found and decided
    logs = flow_run_logs(stack, flow_run_id, expect=(
        "registered multitask-bert version 1", "promoted: no champion yet"))
    assert "per-head major metrics" in logs and "news_tagging/ner" in logs
    assert "registered multitask-bert version 1 (aliases: challenger, champion)" in logs
    assert "promoted: no champion yet" in logs
    # what `make demo` shows while it waits: states and the training progress
    watched = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_watch.py"),
                              flow_run_id, "--timeout", "60"], cwd=REPO, env=stack.env,
                             capture_output=True, text=True, timeout=120)
    assert watched.returncode == 0, watched.stderr[-2000:]
    assert "train: step 4/4 (100%)" in watched.stdout and "ETA" in watched.stdout
    assert "Completed" in watched.stdout and "registered multitask-bert version 1" in watched.stdout


def test_score_deployment_writes_parquet_and_a_rejects_file(stack: Stack) -> None:
    """score-multitask/local on the champion the training run above registered."""
    import pandas as pd

    rows = [{"id": "a", "task": "reviews", "text": "Worth every penny."},
            {"id": "b", "task": "news_tagging", "text": "Maria Lopez flew to Lima ."},
            {"id": "c", "task": "news_tagging", "tokens": "Maria flew"},  # the bad row
            {"id": "d", "task": "similarity", "text_a": "A dog runs.", "text_b": "A dog ran."}]
    source = stack.root / "to-score.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    output = stack.root / "scores" / "scored.parquet"
    params = {"params": {"inputs": [str(source)], "output": str(output)}}
    created = stack.prefect("deployment", "run", "score-multitask/local",
                            "--params", json.dumps(params))
    flow_run_id = next(line.split("UUID:")[1].strip()
                       for line in created.stdout.splitlines() if "UUID:" in line)
    state = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        with stack.client() as client:
            state = client.read_flow_run(flow_run_id).state
        if state is not None and state.type.value in FINAL_STATES:
            break
        time.sleep(2)
    assert state is not None and state.is_completed(), (
        f"score run ended {state.name if state else None}\n{stack.log_tails(120)}")

    scores = pd.read_parquet(output)
    assert list(scores["id"]) == ["a", "b", "d"]
    assert set(scores["model_version"]) == {"1"}
    assert set(scores["model_uri"]) == {"models:/multitask-bert/1"}
    ner = json.loads(scores.loc[scores["id"] == "b", "news_tagging/ner"].item())
    assert len(ner["tags"]) == 6 and "spans" in ner
    rejects = [json.loads(line) for line in
               (output.parent / "scored.rejects.jsonl").read_text().splitlines()]
    assert [(r["row"], r["input"]["id"]) for r in rejects] == [(3, "c")]
    assert rejects[0]["reason"].startswith("row 3, field 'tokens': expected a list of words")
    logs = flow_run_logs(stack, flow_run_id, expect=("scored 4/4 rows", '"rejected": 1'))
    assert "scored 4/4 rows" in logs and '"rejected": 1' in logs


def test_sweep_runs_trials_on_the_pool_and_continues_after_a_kill(stack: Stack) -> None:
    """sweep-multitask/local: 3 trials of a tiny BERT as train-multitask/local runs, 2 at a
    time; the sweep is killed (SIGKILL, by its PID) once the first trial is told and run
    again: the same study continues, no trial lost, none repeated."""
    import optuna
    from mlflow import MlflowClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    space = stack.root / "space.yaml"
    space.write_text("parameters:\n"
                     "  training.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}\n"
                     "  training.sampling: {choices: [round_robin, proportional]}\n")
    overrides = tiny_params(stack.root)["params"]["overrides"]
    params = {"params": {"config_path": "configs/quickstart.yaml", "search_space": str(space),
                         "overrides": [o for o in overrides if not o.startswith("output_dir")]
                         + [f"output_dir={stack.root}/runs/sweep"],
                         "n_trials": 3, "parallelism": 2, "study_name": "sweep-it",
                         "model_name": "sweep-test", "seed": 1}}
    storage = f"sqlite:///{stack.root}/optuna.db"  # beside mlflow.db

    first = run_id_of(stack.prefect("deployment", "run", "sweep-multitask/local",
                                    "--params", json.dumps(params)))
    deadline = time.monotonic() + RUN_TIMEOUT_S
    told = []
    while not told:
        assert time.monotonic() < deadline, f"no trial finished\n{stack.log_tails(120)}"
        with stack.client() as client:
            sweep_run = client.read_flow_run(first)
        assert sweep_run.state.type.value not in FINAL_STATES, stack.log_tails(120)
        try:
            study = optuna.load_study(study_name="sweep-it", storage=storage)
            told = [t for t in study.trials if t.state.is_finished()]
        except KeyError:  # the study does not exist yet
            pass
        time.sleep(1)
    os.kill(int(sweep_run.infrastructure_pid), signal.SIGKILL)  # the sweep's own process
    assert wait_final(stack, first, 60).state.type.value == "CRASHED"

    second = run_id_of(stack.prefect("deployment", "run", "sweep-multitask/local",
                                     "--params", json.dumps(params)))
    run = wait_final(stack, second)
    assert run.state.is_completed(), f"{run.state.message}\n{stack.log_tails(150)}"

    study = optuna.load_study(study_name="sweep-it", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    with stack.client() as client:
        trials = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(like_="sweep-it-trial-")))
        artifacts = client.read_artifacts()
    assert sorted(t.name for t in trials) == [f"sweep-it-trial-{n}" for n in range(3)]
    assert all(t.state.is_completed() for t in trials)
    # two trials ran side by side
    spans = sorted((t.start_time, t.end_time) for t in trials)
    assert any(a[1] > b[0] for a, b in itertools.pairwise(spans))
    [table] = [a for a in artifacts if a.key == "sweep-trials" and a.flow_run_id == run.id]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert sorted(r["trial"] for r in rows) == [0, 1, 2]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)

    client = MlflowClient(f"sqlite:///{stack.root}/mlflow.db")
    experiment = client.get_experiment_by_name("quickstart")
    [parent] = client.search_runs([experiment.experiment_id],
                                  "tags.sweep_study = 'sweep-it' and attributes.run_name "
                                  "LIKE 'sweep %'")
    children = client.search_runs([experiment.experiment_id],
                                  f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(c.data.tags["sweep_trial"] for c in children) == ["0", "1", "2"]
    best = rows[0]
    champion = client.get_model_version_by_alias("sweep-test", "champion")
    assert str(champion.version) == str(best["version"])
    assert parent.data.tags["best_trial"] == str(best["trial"])
