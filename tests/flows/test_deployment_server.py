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
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.conftest import REPO, TINY_ENCODER

pytestmark = pytest.mark.integration

PREFECT = str(Path(sys.executable).with_name("prefect"))
RUN_TIMEOUT_S = 360
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Stack:
    api_url: str
    env: dict[str, str]
    root: Path
    logs: dict[str, Path]

    def prefect(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A `prefect` CLI call against this server, from the repo root; fails loudly."""
        done = subprocess.run([PREFECT, "--no-prompt", *args], cwd=REPO, env=self.env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, (
            f"prefect {' '.join(args)} exited {done.returncode}\n{done.stdout[-3000:]}\n"
            f"{done.stderr[-3000:]}\n{self.log_tails()}")
        return done

    def client(self):
        from prefect.client.orchestration import SyncPrefectClient

        return SyncPrefectClient(self.api_url)

    def log_tails(self, lines: int = 60) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {name} log ({path}) ---\n" + "\n".join(text))
        return "\n".join(parts)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return port if port != 4200 else free_port()


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no answer from {url}/health in {timeout:.0f} s")


def stop(process: subprocess.Popen | None, sigints: int) -> None:
    """SIGINT (the worker needs two, DESIGN.md), then SIGKILL if it will not go."""
    if process is None or process.poll() is not None:
        return
    for _ in range(sigints):
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=3)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def isolated_env(root: Path, api_url: str) -> dict[str, str]:
    """This process's environment minus any PREFECT_* (a test harness, a user's profile)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "MTB_ROOT": str(REPO),  # what scripts/env.sh exports; prefect.yaml's pull step reads it
        "PREFECT_HOME": str(root / "prefect"),
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "5",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "PREFECT_LOGGING_LEVEL": "INFO",
        "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db",  # nothing lands in the repo's runs/
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONUNBUFFERED": "1",
    })
    return env


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("deployment-server")
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = isolated_env(root, api_url)
    logs = {"server": root / "server.log", "worker": root / "worker.log"}
    deployed = Stack(api_url=api_url, env=env, root=root, logs=logs)
    server = worker = None
    try:
        with logs["server"].open("w") as log:
            server = subprocess.Popen(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(api_url, server)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{deployed.log_tails()}")

        # `deploy --all` refuses deployments whose pool is missing: both pools first
        deployed.prefect("work-pool", "create", "local", "--type", "process")
        deployed.prefect("work-pool", "create", "gpu", "--type", "docker", "--base-job-template",
                         str(REPO / "deployments" / "gpu-docker-pool.json"))
        with logs["worker"].open("w") as log:
            worker = subprocess.Popen(
                # queue `default` only: the nightly runs (queue `nightly`) are never picked
                # up here, not even by a test that runs at 03:00 UTC
                [PREFECT, "worker", "start", "--pool", "local", "--work-queue", "default",
                 "--type", "process", "--name", "test-worker"],
                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        deployed.prefect("deploy", "--all", timeout=180)
        yield deployed
    finally:
        stop(worker, sigints=2)  # the worker before the server it reports to
        stop(server, sigints=1)


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


def flow_run_logs(stack: Stack, flow_run_id: str, expect: tuple[str, ...] = (),
                  timeout: float = 60) -> str:
    """Every log line of a flow run, paged (the server caps one read at 200 entries), waiting
    up to `timeout` for the lines in `expect`: a run's last logs reach the server after its
    final state does, the worker ships them in batches."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    while True:
        entries = []
        with stack.client() as client:
            while True:
                page = client.read_logs(log_filter=LogFilter(
                    flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])),
                    limit=200, offset=len(entries))
                entries.extend(page)
                if len(page) < 200:
                    break
        text = "\n".join(entry.message for entry in entries)
        if all(line in text for line in expect) or time.monotonic() > deadline:
            return text
        time.sleep(2)


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


def wait_final(stack: Stack, flow_run_id: str, timeout: float = RUN_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with stack.client() as client:
            run = client.read_flow_run(flow_run_id)
        if run.state is not None and run.state.type.value in FINAL_STATES:
            return run
        time.sleep(3)
    raise AssertionError(f"flow run {flow_run_id} did not end in {timeout} s\n"
                         f"{stack.log_tails(120)}")


def run_id_of(created: subprocess.CompletedProcess) -> str:
    return next(line.split("UUID:")[1].strip()
                for line in created.stdout.splitlines() if "UUID:" in line)


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
