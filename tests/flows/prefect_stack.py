"""A real Prefect server and process worker for integration tests, each a subprocess with its
own PREFECT_HOME on a free loopback port (never 4200, where a user's server may run), stopped
by PID. The server can be stopped and started again on the same port and database (the
server-restart test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

PREFECT = str(Path(sys.executable).with_name("prefect"))
RUN_TIMEOUT_S = 360
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Stack:
    api_url: str
    env: dict[str, str]
    root: Path
    logs: dict[str, Path]
    port: int = 0
    server: subprocess.Popen | None = field(default=None, repr=False)
    worker: subprocess.Popen | None = field(default=None, repr=False)

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

    def start_server(self) -> None:
        """Start the server (again: same port, same PREFECT_HOME and database)."""
        with self.logs["server"].open("a") as log:
            self.server = subprocess.Popen(
                [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            wait_healthy(self.api_url, self.server)
        except (RuntimeError, TimeoutError) as exc:
            pytest.fail(f"{exc}\n{self.log_tails()}")

    def start_worker(self) -> None:
        with self.logs["worker"].open("a") as log:
            self.worker = subprocess.Popen(
                # queue `default` only: the nightly runs (queue `nightly`) are never picked
                # up here, not even by a test that runs at 03:00 UTC
                [PREFECT, "worker", "start", "--pool", "local", "--work-queue", "default",
                 "--type", "process", "--name", "test-worker"],
                cwd=self.root, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True)

    def log_tails(self, lines: int = 60) -> str:
        parts = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {name} log ({path}) ---\n" + "\n".join(text))
        return "\n".join(parts)


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
        # a training waiting for the training slot asks again within ~2 s of the server's
        # answer (default: up to 30 s, from earlier trainings' slot occupancy): test speed only
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
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


@contextmanager
def running_stack(root: Path, extra_env: dict[str, str] | None = None) -> Iterator[Stack]:
    """Server + the two work pools + a worker for `local` (queue `default`) + every
    deployment of prefect.yaml; stopped (worker first) when the block ends."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {**isolated_env(root, api_url), **(extra_env or {})}
    logs = {"server": root / "server.log", "worker": root / "worker.log"}
    deployed = Stack(api_url=api_url, env=env, root=root, logs=logs, port=port)
    try:
        deployed.start_server()
        # `deploy --all` refuses deployments whose pool is missing: both pools first
        deployed.prefect("work-pool", "create", "local", "--type", "process")
        deployed.prefect("work-pool", "create", "gpu", "--type", "docker", "--base-job-template",
                         str(REPO / "deployments" / "gpu-docker-pool.json"))
        deployed.start_worker()
        deployed.prefect("deploy", "--all", timeout=180)
        yield deployed
    finally:
        stop(deployed.worker, sigints=2)  # the worker before the server it reports to
        stop(deployed.server, sigints=1)


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
