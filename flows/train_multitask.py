"""The ``train-multitask`` Prefect flow: tokenise and cache, train, evaluate, register.

Thin wiring over the library: each step is one library call wrapped in a Prefect task, and
between tasks travel paths and small dicts. Run it directly for a one-off local run::

    python flows/train_multitask.py --config configs/quickstart.yaml

or through a deployment (``prefect.yaml``)::

    prefect deployment run train-multitask/local --watch
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.runtime import flow_run
from pydantic import BaseModel, ConfigDict, Field

import multitask_bert  # noqa: F401  (sets the offline environment before HF imports)
from multitask_bert.baselines import comparison_markdown, read_comparison
from multitask_bert.cli import EXIT_OUT_OF_MEMORY, EXIT_USER_ERROR
from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import compute_fingerprint
from multitask_bert.errors import MultitaskBertError
from multitask_bert.evaluation.evaluator import Metrics, major_score
from multitask_bert.evaluation.plots import save_metric_plots
from multitask_bert.evaluation.report import metrics_rows
from multitask_bert.models.multitask import load_tokenizer
from multitask_bert.pipeline import evaluate_saved_model, prepare_task, register_run
from multitask_bert.registry import find_champion
from multitask_bert.tracking import create_logger, default_tracking_uri, redact_uri

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


def load_config(params: TrainParameters, run_name: str | None = None) -> ExperimentConfig:
    path = Path(params.config_path)
    if not path.is_absolute():
        path = REPO_ROOT / path
    overrides = list(params.overrides)
    config = ExperimentConfig.load(path, overrides)
    if run_name and not _has_key(overrides, "output_dir"):
        # one folder per flow run: a retry of the same run resumes in the same folder
        base = Path(config.output_dir or f"runs/{config.name}")
        if not base.is_absolute():
            base = REPO_ROOT / base
        config = config.model_copy(update={"output_dir": str(base / run_name)})
    if not config.logging.tracking_uri and not os.environ.get("MLFLOW_TRACKING_URI"):
        # the same store as the CLI's: beside the experiment's folder, not the flow run's
        base = config.run_dir.parent if run_name else config.run_dir
        logging_config = config.logging.model_copy(
            update={"tracking_uri": default_tracking_uri(base)})
        config = config.model_copy(update={"logging": logging_config})
    if not Path(config.cache_dir).is_absolute():
        config = config.model_copy(update={"cache_dir": str(REPO_ROOT / config.cache_dir)})
    return config


def tracking_uri_for(config: ExperimentConfig) -> str:
    return config.logging.tracking_uri or default_tracking_uri(config.run_dir)


def config_hash(config: ExperimentConfig) -> str:
    return config.content_hash()


def _has_key(overrides: list[str], key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in overrides)


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Transient failures (a killed process, OOM, an unreachable server) are retried;
    deterministic ones (bad config, bad data) fail at once with their message."""
    return not _is_user_error(state)


# -- tokenize_and_cache ----------------------------------------------------------------
def _tokenize_cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str | None:
    """Cross-run cache key: the data/tokenizer/config fingerprint of the task, plus whether
    its cache entry still exists (a deleted entry must be rebuilt, not served stale)."""
    try:
        config = ExperimentConfig.model_validate(parameters["config"])
        spec = config.task(parameters["task_name"])
        tokenizer = load_tokenizer(config.encoder.resolve_path())
        fingerprint = compute_fingerprint(spec, tokenizer, max_length=config.max_length_for(spec),
                                          seed=config.training.seed)
    except Exception:
        return None
    entry = config.cache_path / spec.name / fingerprint
    return f"tokenize-{spec.name}-{fingerprint}-{int((entry / 'meta.json').is_file())}"


@task(
    name="tokenize_and_cache",
    task_run_name="tokenize-{task_name}",
    cache_key_fn=_tokenize_cache_key,
    cache_expiration=timedelta(days=30),
    persist_result=True,
    retries=1,
    retry_condition_fn=_retry_unless_user_error,
)
def tokenize_task(config: dict[str, Any], task_name: str) -> dict[str, Any]:
    """Tokenise one task into the Parquet cache; returns the entry (paths, vocab, stats)."""
    cached = prepare_task(ExperimentConfig.model_validate(config), task_name)
    return cached.to_dict()


# -- train --------------------------------------------------------------------------------
class TrainingCrashed(RuntimeError):
    """The training process died (killed, preempted, crashed): retried, and it resumes."""


class TrainingOutOfMemory(RuntimeError):
    """CUDA ran out of memory: retried with half the per-device batch, twice the accumulation."""


def oom_overrides(config: dict[str, Any], halvings: int) -> list[str]:
    """Overrides that keep the effective batch while halving the per-device batch."""
    if halvings <= 0:
        return []
    training = config["training"]
    factor = 2 ** halvings
    overrides = [
        f"training.batch_size={max(1, training['batch_size'] // factor)}",
        f"training.gradient_accumulation_steps="
        f"{training['gradient_accumulation_steps'] * factor}",
        "training.resume=false",  # other batch shapes: the data plan differs, start over
    ]
    for task_name, size in training.get("task_batch_size", {}).items():
        overrides.append(f"training.task_batch_size.{task_name}={max(1, size // factor)}")
    return overrides


@task(
    name="train",
    retries=2,
    retry_delay_seconds=10,
    retry_condition_fn=_retry_unless_user_error,
    tags=["training"],
)
def train_task(config: dict[str, Any], cached: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Train in a child process on the cached tasks (GPU when there is one).

    The child writes checkpoints into the run folder; when it dies, Prefect retries this
    task and the new child resumes from the newest checkpoint. Returns the run folder and
    the scores."""
    logger = get_run_logger()
    run_dir = Path(config["output_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    oom_file = run_dir / "oom_retries"
    halvings = int(oom_file.read_text()) if oom_file.is_file() else 0
    config_file = run_dir / "flow_config.yaml"
    _write_atomic(config_file, yaml.safe_dump(config, sort_keys=False))
    command = [sys.executable, "-m", "multitask_bert", "train", "--config", str(config_file),
               "--set", "training.progress_bar=false"]
    for override in oom_overrides(config, halvings):
        command += ["--set", override]
    limit = ensure_training_limit()
    logger.info("waiting for a slot of concurrency limit %r (one training at a time)", limit)
    # a short lease (renewed while training runs): a slot held by a killed worker frees
    # itself within a minute instead of blocking every later training
    with concurrency(limit, occupy=1, lease_duration=60):
        logger.info("training in a child process: %s", " ".join(command[1:]))
        code, tail = _run_training_process(command, run_dir, logger)
    (run_dir / "train.pid").unlink(missing_ok=True)
    message = "\n".join(tail[-12:])
    if code == EXIT_USER_ERROR:
        raise UserInputError(message)
    if code == EXIT_OUT_OF_MEMORY:
        _write_atomic(oom_file, str(halvings + 1))
        raise TrainingOutOfMemory(f"CUDA out of memory; retrying with a per-device batch "
                                  f"halved {halvings + 1} time(s)\n{message}")
    if code != 0:
        raise TrainingCrashed(f"the training process exited with {code}; a retry resumes "
                              f"from the newest checkpoint in {run_dir}\n{message}")
    result = json.loads((run_dir / "metrics.json").read_text())
    logger.info("trained %d steps in %.0f s; best %s = %.4f at step %s%s",
                result["global_step"], result["train_seconds"], result["score_metric"],
                result["best_score"] or float("nan"), result["best_step"],
                f" (resumed from step {result['resumed_from_step']})"
                if result.get("resumed_from_step") is not None else "")
    return {"run_dir": str(run_dir), "run_id": result.get("run_id"),
            "best_score": result["best_score"], "score_metric": result["score_metric"],
            "global_step": result["global_step"],
            "resumed_from_step": result.get("resumed_from_step")}


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


def _run_training_process(command: list[str], run_dir: Path, logger: Any
                          ) -> tuple[int, list[str]]:
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        (run_dir / "train.pid").write_text(str(proc.pid))
        tail: list[str] = []
        for line in proc.stdout:
            line = line.rstrip()
            tail = [*tail[-30:], line]
            if " INFO " in line or " WARNING " in line or " ERROR " in line:
                logger.info(line)
        return proc.wait(), tail


# -- evaluate -----------------------------------------------------------------------------
@task(name="evaluate", retries=1)
def evaluate_task(config: dict[str, Any], trained: dict[str, Any], model_name: str
                  ) -> dict[str, Any]:
    """Per-head metrics of the best model on validation (and labelled test splits);
    Prefect table + markdown artifacts; metrics and plots to MLflow."""
    logger = get_run_logger()
    experiment = ExperimentConfig.model_validate(config)
    model_dir = Path(trained["run_dir"]) / "best"
    metrics: dict[str, Metrics] = {"validation": evaluate_saved_model(model_dir, experiment)}
    if any(t.test is not None for t in experiment.tasks):
        try:
            metrics["test"] = evaluate_saved_model(model_dir, experiment, split="test")
        except MultitaskBertError as exc:
            logger.warning("test split not evaluated: %s", exc)
    heads = {t.name: list(t.heads) for t in experiment.tasks if t.name in metrics["validation"]}
    score = major_score(metrics["validation"], experiment.training.early_stopping.metric, heads)

    tracking_uri = tracking_uri_for(experiment)
    champion = _safe_find_champion(tracking_uri, model_name, logger)
    rows = [
        {"split": split, "task": t, "head": h, "metric": m, "value": round(v, 4)}
        for split, values in metrics.items()
        for t, h, m, v in metrics_rows(values)
    ]
    create_table_artifact(rows, key="per-head-metrics",
                          description=f"{experiment.name}: per-head metrics")
    report = read_comparison(trained["run_dir"])
    if report:  # baselines: single_task
        create_markdown_artifact("# Multi-task vs single-task (validation)\n\n"
                                 + comparison_markdown(report["comparison"]),
                                 key="single-task-baselines")
    plots_dir = Path(trained["run_dir"]) / "plots"
    plots = save_metric_plots(metrics["validation"], plots_dir)
    if trained.get("run_id") and experiment.logging.backend in ("mlflow", "both"):
        from multitask_bert.evaluation.evaluator import flatten_metrics

        mlflow_logger = create_logger("mlflow", output_dir=experiment.run_dir,
                                      experiment_name=experiment.logging.experiment_name
                                      or experiment.name, run_name=experiment.name,
                                      tracking_uri=tracking_uri,
                                      resume_run_id=trained["run_id"])
        try:
            for split, values in metrics.items():
                mlflow_logger.log_metrics(flatten_metrics(values, prefix=split), step=0)
            for plot in plots:
                mlflow_logger.log_artifact(plot, "plots")
            mlflow_logger.log_dict(metrics, "evaluation.json")
        finally:
            mlflow_logger.close()
    (Path(trained["run_dir"]) / "evaluation.json").write_text(json.dumps(metrics, indent=2))
    return {"metrics": metrics, "score": score, "champion": champion}


# -- register -----------------------------------------------------------------------------
@task(name="register", retries=3, retry_delay_seconds=[5, 15, 45])
def register_task(config: dict[str, Any], trained: dict[str, Any], evaluated: dict[str, Any],
                  fingerprints: dict[str, str], model_name: str) -> dict[str, Any]:
    """Log the pyfunc model, register a version (alias ``challenger``) and move ``champion``
    only when the new score is at least the champion's on the same validation data."""
    experiment = ExperimentConfig.model_validate(config)
    tracking_uri = tracking_uri_for(experiment)
    registration = register_run(trained["run_dir"], model_name=model_name,
                                tracking_uri=tracking_uri, config=experiment,
                                score=evaluated["score"],
                                extra_tags={"flow_run": str(flow_run.name or "")})
    create_markdown_artifact(
        _summary_markdown(experiment, evaluated, registration, tracking_uri),
        key="run-summary", description="metrics, registration and comparison to the champion",
    )
    return registration


# -- the flow -----------------------------------------------------------------------------
@flow(name="train-multitask", log_prints=True, persist_result=True)
def train_multitask(params: TrainParameters | None = None) -> dict[str, Any]:
    """Tokenise every task (cached), train, evaluate and register one multi-task model."""
    params = params or TrainParameters()
    logger = get_run_logger()
    run_name = f"{flow_run.name}-{str(flow_run.id)[:8]}" if flow_run.id else None
    experiment = load_config(params, run_name=run_name)
    config = experiment.model_dump(mode="json")
    config["tasks"] = experiment.to_dict()["tasks"]  # absolute paths for the worker

    futures = {t.name: tokenize_task.submit(config, t.name) for t in experiment.tasks}
    cached = {name: future.result() for name, future in futures.items()}
    fingerprints = {name: entry["fingerprint"] for name, entry in cached.items()}

    tracking_uri = tracking_uri_for(experiment)
    champion = _safe_find_champion(tracking_uri, params.model_name, logger)
    if (not params.force and champion
            and champion.get("data_fingerprints") == fingerprints
            and champion.get("config_hash") == config_hash(experiment)):
        message = (f"skipped training: data and config equal those of {params.model_name} "
                   f"champion v{champion['version']} (score {champion.get('score')}); "
                   "run with force=true to train anyway")
        logger.info(message)
        create_markdown_artifact(f"# Training skipped\n\n{message}\n", key="run-summary")
        return {"skipped": True, "reason": message, "champion": champion}

    trained = train_task(config, cached)
    evaluated = evaluate_task(config, trained, params.model_name)
    registered = register_task(config, trained, evaluated, fingerprints, params.model_name)
    return {"skipped": False, "run_dir": trained["run_dir"], "score": evaluated["score"],
            "metrics": evaluated["metrics"], "registration": registered,
            "tracking_uri": redact_uri(tracking_uri)}


# -- helpers ------------------------------------------------------------------------------
class UserInputError(MultitaskBertError):
    """The training process rejected the config or data (its message says what to fix)."""


def _is_user_error(state: Any) -> bool:
    """Deterministic failures (bad config, bad data) are not retried."""
    try:
        state.result(raise_on_failure=True)
    except MultitaskBertError:
        return True
    except Exception:
        return False
    return False


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _safe_find_champion(tracking_uri: str, model_name: str, logger: Any) -> dict | None:
    try:
        return find_champion(tracking_uri, model_name)
    except Exception as exc:
        logger.warning("no champion found in %s (%s)", redact_uri(tracking_uri), exc)
        return None


def _summary_markdown(experiment: ExperimentConfig, evaluated: dict, registration: dict,
                      tracking_uri: str) -> str:
    champion = evaluated.get("champion") or {}
    lines = [f"# {experiment.name}: {registration['model_name']} v{registration['version']}",
             "", f"**Score** ({experiment.training.early_stopping.metric}, validation): "
             f"{evaluated['score']:.4f}"]
    if champion:
        lines.append(f"**Champion before this run**: v{champion['version']}, score "
                     f"{champion.get('score')}")
    lines += [f"**Aliases**: {', '.join(registration['aliases'])}",
              f"**Decision**: {registration['reason']}", "",
              "| task | head | metric | validation |", "|---|---|---|---|"]
    for task_name, head, metric, value in metrics_rows(evaluated["metrics"]["validation"]):
        lines.append(f"| {task_name} | {head} | {metric} | {value:.4f} |")
    lines += ["", f"MLflow: `{redact_uri(tracking_uri)}`"]
    return "\n".join(lines)


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
