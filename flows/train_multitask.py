"""The ``train-multitask`` Prefect flow: tokenise and cache, train, evaluate, register.

Thin wiring over the pipeline façade (:mod:`multitask_bert.pipeline`): the flow resolves the
config once and writes it into the run folder; each task is a few lines over one façade call
and gets the run folder's ``config.yaml`` path, never a re-serialised config. Run it directly
for a one-off local run::

    python flows/train_multitask.py --config configs/quickstart.yaml

or through a deployment (``prefect.yaml``)::

    prefect deployment run train-multitask/local --watch
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

from multitask_bert import pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]


class TrainParameters(BaseModel):
    """The run form of the Prefect UI: validated before a run starts."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field is rejected, not dropped

    config_path: str = Field(
        default="configs/quickstart.yaml",
        description="Experiment YAML, relative to the project root or absolute.",
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="key=value overrides, e.g. training.epochs=1",
    )
    force: bool = Field(
        default=False,
        description="Train even when data and config equal the champion's.",
    )
    model_name: str = Field(default="multitask-bert", description="Registered model name.")
    promote: bool = Field(
        default=True,
        description="Let the champion rule move `champion` to the new version; false "
                    "registers a challenger only (what sweep-multitask's trials do).",
    )
    crash_reruns_left: int | None = Field(
        default=None,
        description="Set by the crash automation (deployments/crash_automation.py) on the rerun of "
                    "a Crashed run: how many more times it may rerun this experiment; below "
                    "0 the run stops at once. Leave empty.",
    )


class CrashRerunsExhausted(RuntimeError):
    """The crash automation reran this experiment as often as it may."""


def _is_user_error(state: Any) -> bool:
    """Deterministic failures (bad config, bad data) are not retried."""
    try:
        state.result(raise_on_failure=True)
    except pipeline.MultitaskBertError:
        return True
    except Exception:
        return False
    return False


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Transient failures (a killed process, OOM, an unreachable server) are retried."""
    return not _is_user_error(state)


def _tokenize_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Cross-run cache key: the task's data fingerprint, plus whether its cache entry still
    exists (a deleted entry must be rebuilt, not served stale)."""
    return pipeline.tokenize_cache_key(parameters["run_config"], parameters["task_name"])


@task(
    name="tokenize_and_cache",
    task_run_name="tokenize-{task_name}",
    cache_key_fn=_tokenize_cache_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
    retries=1,
    retry_condition_fn=_retry_unless_user_error,
)
def tokenize_task(run_config: str, task_name: str) -> dict[str, Any]:
    """Tokenise one task into the Parquet cache; returns the entry (paths, vocab, stats)."""
    return pipeline.prepare(run_config, task_name)[task_name].to_dict()


# Retries back off (10, 30, 90 s): besides a killed or OOM child, a Prefect server restarting
# at the step's start or end (a fresh API client does not retry a refused connection) is ridden
# out; a retry after training finished only re-reads the final checkpoint.
SERVER_OUTAGE_RETRY_DELAYS = [10, 30, 90]


@task(name="train", retries=3, retry_delay_seconds=SERVER_OUTAGE_RETRY_DELAYS,
      retry_condition_fn=_retry_unless_user_error, tags=["training"])
def train_task(run_config: str) -> dict[str, Any]:
    """Train in a supervised child process (under torchrun with ``training.nproc_per_node``
    above 1 or several nodes); a retry resumes from the newest checkpoint, an out-of-memory
    retry halves the per-device batch, a user error is not retried."""
    logger = get_run_logger()
    limit = ensure_training_limit()
    logger.info("waiting for a slot of concurrency limit %r (one training at a time)", limit)
    # a short lease (renewed while training runs): a slot held by a killed worker frees
    # itself within a minute instead of blocking every later training
    with concurrency(limit, occupy=1, lease_duration=60):
        trained = pipeline.train(run_config, on_line=logger.info, on_start=lambda command:
                                 logger.info("training in a child process: %s", " ".join(command)))
    resumed = trained["resumed_from_step"]
    logger.info("trained %d steps in %.0f s on %s process(es); best %s = %.4f at step %s%s",
                trained["global_step"], trained["train_seconds"], trained["world_size"],
                trained["score_metric"], trained["best_score"] or float("nan"),
                trained["best_step"],
                f" (resumed from step {resumed})" if resumed is not None else "")
    return trained


def ensure_training_limit() -> str:
    """The global concurrency limit trainings share (created with 1 slot on first use), so
    a manual run during a scheduled one waits instead of sharing the GPU."""
    name = os.environ.get("MTB_TRAINING_CONCURRENCY_LIMIT", "multitask-bert-training")
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=1))
            except ObjectAlreadyExists:
                pass
    return name


@task(name="evaluate", retries=3, retry_delay_seconds=SERVER_OUTAGE_RETRY_DELAYS)
def evaluate_task(run_config: str, model_name: str) -> dict[str, Any]:
    """Per-head metrics of the best model (validation, labelled test); table and markdown
    artifacts; metrics and plots to MLflow."""
    logger = get_run_logger()  # the per-head table and the score go to the run's logs
    evaluation = pipeline.evaluate(run_config, model_name, on_warning=logger.warning,
                                   on_info=logger.info)
    create_table_artifact(evaluation.table, key="per-head-metrics",
                          description=f"{Path(run_config).parent.name}: one row per head, "
                          "validation and test side by side")
    if evaluation.baselines_markdown:  # baselines: single_task
        create_markdown_artifact("# Multi-task vs single-task (validation)\n\n"
                                 + evaluation.baselines_markdown, key="single-task-baselines")
    return evaluation.to_dict()


@task(name="register", retries=3, retry_delay_seconds=[5, 15, 45])
def register_task(run_config: str, evaluated: dict[str, Any], model_name: str,
                  promote: bool = True) -> dict[str, Any]:
    """A registry version (alias ``challenger``); ``champion`` moves only when the new score
    is at least the champion's on the same validation data and no head fell more than the
    margin below the champion's (never with ``promote=False``). Logs the version, its
    aliases and the decision."""
    registration = pipeline.register(run_config, evaluated, model_name, promote=promote,
                                     extra_tags={"flow_run": str(flow_run.name or "")},
                                     on_info=get_run_logger().info)
    create_markdown_artifact(registration.pop("summary_markdown"), key="run-summary",
                             description="metrics, registration and comparison to the champion")
    return registration


@flow(name="train-multitask", log_prints=True, persist_result=True)
def train_multitask(params: TrainParameters | None = None) -> dict[str, Any]:
    """Tokenise every task (cached), train, evaluate and register one multi-task model."""
    params = params or TrainParameters()
    logger = get_run_logger()
    if params.crash_reruns_left is not None and params.crash_reruns_left < 0:
        raise CrashRerunsExhausted(
            "not rerun: this experiment's run crashed again after the crash automation "
            "reran it as often as it may (deployments/crash_automation.py --max-reruns). Find why "
            "in the logs of the Crashed runs before it; a new run of the deployment resumes "
            "from the experiment's newest checkpoint")
    # resolved once, written into the run folder. The folder is named by what it trains
    # (runs/<experiment>/<fingerprint>: config and data), so any later run of the same
    # experiment (a retry, a rerun, the next scheduled run, the crash automation) resumes
    # its checkpoint; an `output_dir` override is the user's folder. Flows log lines, not
    # progress bars.
    config = pipeline.resolve(params.config_path,
                              [*params.overrides, "training.progress_bar=false"],
                              root=REPO_ROOT, by_fingerprint=True)
    run_config = str(pipeline.start(config) / "config.yaml")
    logger.info("run folder %s", config.run_dir)

    futures = {t.name: tokenize_task.submit(run_config, t.name) for t in config.tasks}
    fingerprints = {name: future.result()["fingerprint"] for name, future in futures.items()}
    champion = None if params.force else pipeline.unchanged_champion(
        run_config, fingerprints, params.model_name)
    if champion:
        message = (f"skipped training: data and config equal those of {params.model_name} "
                   f"champion v{champion['version']} (score {champion.get('score')}); "
                   "run with force=true to train anyway")
        logger.info(message)
        create_markdown_artifact(f"# Training skipped\n\n{message}\n", key="run-summary")
        return {"skipped": True, "reason": message, "champion": champion}

    trained = train_task(run_config)
    evaluated = evaluate_task(run_config, params.model_name)
    registered = register_task(run_config, evaluated, params.model_name, params.promote)
    return {"skipped": False, "run_dir": trained["run_dir"], "score": evaluated["score"],
            "metrics": evaluated["metrics"], "registration": registered,
            "tracking_uri": pipeline.redact_uri(config.logging.tracking_uri or "")}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the train-multitask flow once, locally.")
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    result = train_multitask(TrainParameters(config_path=args.config, overrides=args.overrides,
                                             force=args.force))
    print(json.dumps({k: v for k, v in result.items() if k != "metrics"}, indent=2,
                     default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
