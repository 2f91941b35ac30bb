"""The ``sweep-multitask`` Prefect flow: a hyper-parameter search over ``train-multitask`` runs.

An Optuna study (TPE, seeded; :mod:`multitask_bert.sweep`) draws each trial's values from a
search-space YAML; every trial is a run of the ``train-multitask`` deployment (so trials
spread over every worker of its pool) with ``force=true`` and ``promote=false`` (registered
as a challenger only). ``parallelism`` trials run at once. The study is stored beside the
MLflow store: running the same sweep again continues it (finished trials stay, running ones
are followed, none is drawn twice). At the end: a table artifact of every trial sorted by
objective, and the champion rule applied to the best trial's registered version. Deployed as
``sweep-multitask/local`` (``prefect.yaml``)::

    prefect deployment run sweep-multitask/local --watch \\
      --params '{"params": {"search_space": "configs/sweep.yaml", "n_trials": 8}}'

or once, locally, against a running server with ``train-multitask/local`` deployed::

    python flows/sweep_multitask.py --search-space configs/sweep.yaml --n-trials 4
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.futures import as_completed
from pydantic import BaseModel, ConfigDict, Field

from multitask_bert import pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]
POLL_SECONDS = 5


class SweepParameters(BaseModel):
    """The run form of the Prefect UI: validated before a run starts."""

    model_config = ConfigDict(extra="forbid")

    config_path: str = Field(default="configs/quickstart.yaml",
                             description="Base experiment YAML, relative to the project root.")
    search_space: str = Field(default="configs/sweep.yaml",
                              description="Search-space YAML: ranges or choices per config key.")
    overrides: list[str] = Field(default_factory=list,
                                 description="key=value overrides applied to every trial.")
    n_trials: int = Field(default=8, ge=1, description="Trials in the study, in all.")
    parallelism: int = Field(default=2, ge=1, description="Trials running at once.")
    objective: str = Field(default="score", description="'score' (the run's major validation "
                           "score), 'task/head' or 'task/head/metric'.")
    direction: Literal["auto", "maximize", "minimize"] = Field(
        default="auto", description="auto: minimise losses and errors, maximise the rest.")
    sampler: Literal["tpe", "random"] = Field(default="tpe", description="Optuna sampler.")
    seed: int = Field(default=0, description="Sampler seed.")
    study_name: str | None = Field(default=None, description="Default: from the config name, "
                                   "search space, overrides and objective (same sweep, same "
                                   "name: it continues).")
    deployment: str = Field(default="train-multitask/local",
                            description="The deployment each trial runs as.")
    model_name: str = Field(default="multitask-bert", description="Registered model name.")


def open_sweep(params: SweepParameters) -> pipeline.Sweep:
    return pipeline.open_sweep(
        params.config_path, params.search_space, overrides=params.overrides,
        n_trials=params.n_trials, objective=params.objective, direction=params.direction,
        sampler=params.sampler, seed=params.seed, study_name=params.study_name, root=REPO_ROOT)


@task(name="start-trial", task_run_name="start-trial-{number}", retries=2,
      retry_delay_seconds=5)
def start_trial(deployment: str, number: int, parameters: dict[str, Any], key: str,
                name: str) -> str:
    """Create the trial's deployment run (an idempotency key per trial: a sweep continued
    after an interruption gets the same run back, never a second one)."""
    run = run_deployment(deployment, parameters=parameters, timeout=0, idempotency_key=key,
                         flow_run_name=name)
    return str(run.id)


@task(name="trial", task_run_name="trial-{number}")
def follow_trial(number: int, flow_run_id: str) -> dict[str, Any]:
    """Wait for a trial's run to end; its state and, when it completed, its result."""
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(UUID(flow_run_id))
        while run.state is None or not run.state.is_final():
            time.sleep(POLL_SECONDS)
            run = client.read_flow_run(UUID(flow_run_id))
    try:
        result = run.state.result(raise_on_failure=False) if run.state.is_completed() else None
    except Exception as exc:  # e.g. result storage this machine cannot read
        return {"state": "NO_RESULT", "message": f"result not readable: {exc}"}
    return {"state": run.state.type.value, "message": run.state.message or "",
            "result": result if isinstance(result, dict) else None}


@task(name="register-best", retries=3, retry_delay_seconds=[5, 15, 45])
def register_best(params: SweepParameters) -> dict[str, Any] | None:
    """The champion rule on the best trial's version (trials register challengers only)."""
    return pipeline.promote_best(open_sweep(params), params.model_name)


@flow(name="sweep-multitask", log_prints=True)
def sweep_multitask(params: SweepParameters | None = None) -> dict[str, Any]:
    """Run (or continue) an Optuna study whose trials are train-multitask runs."""
    params = params or SweepParameters()
    logger = get_run_logger()
    sweep = open_sweep(params)
    waiting = sweep.unfinished()  # an interrupted sweep's trials: followed, not drawn again
    if waiting:
        logger.info("continuing %s: following trials %s", sweep.name, [t.number for t in waiting])
    running: dict[Any, pipeline.TrialTicket] = {}
    while True:
        while len(running) < params.parallelism and (
                ticket := waiting.pop(0) if waiting else sweep.ask()) is not None:
            if ticket.flow_run_id is None:
                sweep.bind(ticket, start_trial(params.deployment, ticket.number, {"params": {
                    "config_path": params.config_path, "model_name": params.model_name,
                    "overrides": ticket.overrides, "force": True,
                    "promote": False}}, f"{sweep.name}-{sweep.uid}-trial-{ticket.number}",
                    f"{sweep.name}-trial-{ticket.number}"))
            logger.info("trial %d: %s (flow run %s)", ticket.number, ticket.params,
                        ticket.flow_run_id)
            running[follow_trial.submit(ticket.number, ticket.flow_run_id)] = ticket
        if not running:
            break
        done = next(as_completed(list(running)))
        ticket = running.pop(done)
        outcome = done.result(raise_on_failure=False)
        record = sweep.tell(ticket, pipeline.TrialOutcome(
            **outcome) if isinstance(outcome, dict) else pipeline.TrialOutcome(
            "FAILED", message=str(outcome)))
        best = sweep.best()
        logger.info("trial %d %s: %s = %s; best so far: trial %s (%s)", record.number,
                    record.state, params.objective, record.objective,
                    best.number if best else None, best.objective if best else None)
    rows = sweep.table()
    create_table_artifact(rows, key="sweep-trials",
                          description=f"{sweep.name}: {len(rows)} trials, best first")
    registration = register_best(params)
    return {"study": sweep.name, "storage": str(sweep.storage_path), "trials": rows,
            "best": registration}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the sweep-multitask flow once.")
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--search-space", default="configs/sweep.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--n-trials", type=int, default=4)
    parser.add_argument("--parallelism", type=int, default=2)
    parser.add_argument("--objective", default="score")
    args = parser.parse_args(argv)
    result = sweep_multitask(SweepParameters(
        config_path=args.config, search_space=args.search_space, overrides=args.overrides,
        n_trials=args.n_trials, parallelism=args.parallelism, objective=args.objective))
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
