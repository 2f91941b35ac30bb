"""The pipeline façade: the steps of one run, as plain functions the CLI and the flow share.

::

    config = pipeline.resolve("configs/quickstart.yaml", ["training.epochs=1"])   # the door
    run_dir = pipeline.start(config)       # writes <run>/config.yaml, read by every step
    cached = pipeline.prepare(run_dir)     # tokenise and cache every task
    trained = pipeline.train(run_dir)      # a supervised child process (retry-safe)
    evaluation = pipeline.evaluate(run_dir)
    registration = pipeline.register(run_dir, evaluation)

Every step takes the run folder (or its ``config.yaml``, or a resolved config) and returns
small JSON-able values, so a Prefect task passes paths, never tensors or re-serialised
configs. ``train_experiment`` trains in this process instead (the CLI's ``train``, which
``torchrun`` may start once per GPU).
"""

from __future__ import annotations

import json
import logging
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import META_FILE, CachedTask, compute_fingerprint
from multitask_bert.data.prepare import load_datasets, load_split, prepare_data, prepare_task
from multitask_bert.errors import ConfigError, MultitaskBertError
from multitask_bert.evaluation.evaluator import Metrics, flatten_metrics, major_score
from multitask_bert.evaluation.plots import save_metric_plots
from multitask_bert.evaluation.report import metrics_rows, run_summary_markdown
from multitask_bert.evaluation.saved_model import evaluate_saved_model
from multitask_bert.fingerprint import experiment_fingerprint
from multitask_bert.models.multitask import load_tokenizer
from multitask_bert.single_task import (
    add_single_task_baselines,
    comparison_markdown,
    read_comparison,
)
from multitask_bert.sweep import Sweep, TrialOutcome, TrialTicket
from multitask_bert.tracking import create_logger, redact_uri
from multitask_bert.training.experiment import train_model
from multitask_bert.training.launcher import (
    TrainingCrashed,
    TrainingOutOfMemory,
    UserInputError,
    planned_world_size,
    run_training,
)
from multitask_bert.training.result import TrainResult

__all__ = [
    "Evaluation",
    "MultitaskBertError",
    "Sweep",
    "TrainingCrashed",
    "TrainingOutOfMemory",
    "TrialOutcome",
    "TrialTicket",
    "UserInputError",
    "evaluate",
    "evaluate_saved_model",
    "load_datasets",
    "load_split",
    "open_sweep",
    "planned_world_size",
    "prepare",
    "prepare_data",
    "prepare_task",
    "promote_best",
    "redact_uri",
    "register",
    "register_run",
    "resolve",
    "run_config",
    "run_with_baselines",
    "start",
    "task_fingerprint",
    "tokenize_cache_key",
    "train",
    "train_experiment",
    "unchanged_champion",
]

log = logging.getLogger("multitask_bert")

RunRef = str | Path | ExperimentConfig
"""A run: its folder, its ``config.yaml``, or its resolved config."""


# -- the door ---------------------------------------------------------------------------------
def resolve(
    config_path: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    *,
    root: str | Path | None = None,
    run_name: str | None = None,
) -> ExperimentConfig:
    """Load an experiment YAML with ``key=value`` overrides and resolve it once (absolute run
    and cache folders, tracking URI, experiment name; see :meth:`ExperimentConfig.resolve`).

    Args:
        config_path: the YAML; relative to ``root`` when relative.
        overrides: ``key=value`` strings.
        root: what relative paths are relative to (default: the working directory).
        run_name: one sub-folder of the experiment's folder per run (the flow's runs); left
            out when an override names ``output_dir`` (the user chose the folder).
    """
    if any(o.split("=", 1)[0].strip() == "output_dir" for o in overrides):
        run_name = None
    path = Path(config_path)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    return ExperimentConfig.load(path, list(overrides)).resolve(root=root, run_name=run_name)


def start(config: ExperimentConfig) -> Path:
    """Write the resolved config into its run folder; returns the folder."""
    config.write()
    return config.run_dir


def run_config(run: RunRef) -> ExperimentConfig:
    """The resolved config of a run (see :data:`RunRef`)."""
    if isinstance(run, ExperimentConfig):
        return run.resolve()
    return ExperimentConfig.load_run(run)


# -- prepare ----------------------------------------------------------------------------------
def prepare(run: RunRef, task_name: str | None = None) -> dict[str, CachedTask]:
    """Tokenise every task (or one) into the Parquet cache; a hit when nothing changed."""
    config = run_config(run)
    if task_name is not None:
        return {task_name: prepare_task(config, task_name)}
    return prepare_data(config)


def task_fingerprint(run: RunRef, task_name: str) -> str:
    """The cache fingerprint of one task, without tokenising (raises on bad input)."""
    config = run_config(run)
    task = config.task(task_name)
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    return compute_fingerprint(task, tokenizer, max_length=config.max_length_for(task),
                               seed=config.training.seed)


def tokenize_cache_key(run: RunRef, task_name: str) -> str | None:
    """A key for caching the tokenisation of one task across runs: its data fingerprint plus
    whether its cache entry still exists (a deleted entry must be rebuilt, not served stale).
    None when the fingerprint cannot be computed (the step then runs and reports why)."""
    try:
        config = run_config(run)
        fingerprint = task_fingerprint(config, task_name)
    except Exception:
        return None
    entry = config.cache_path / task_name / fingerprint
    return f"tokenize-{task_name}-{fingerprint}-{int((entry / META_FILE).is_file())}"


def unchanged_champion(run: RunRef, data_fingerprints: dict[str, str], model_name: str
                       ) -> dict[str, Any] | None:
    """The champion when it was trained on exactly this experiment (config and data: the
    same :func:`experiment_fingerprint`), else None. A run that finds one need not train."""
    config = run_config(run)
    champion = safe_find_champion(config, model_name)
    fingerprint = experiment_fingerprint(config, data_fingerprints,
                                         world_size=planned_world_size(config))
    if champion and champion.get("config_hash") == fingerprint:
        return champion
    return None


# -- train ------------------------------------------------------------------------------------
def train(run: RunRef, *, on_line: Callable[[str], None] = print,
          on_start: Callable[[list[str]], None] | None = None) -> dict[str, Any]:
    """Train in a supervised child process (:func:`multitask_bert.training.launcher.run_training`).

    Returns the run folder, the tracking run and the scores; raises ``UserInputError``
    (do not retry), ``TrainingOutOfMemory`` or ``TrainingCrashed`` (retry: it resumes)."""
    config = run_config(run)
    result = run_training(config.run_dir, on_line=on_line, on_start=on_start)
    keys = ("run_id", "best_score", "score_metric", "global_step", "train_seconds",
            "best_step", "resumed_from_step", "world_size")
    return {"run_dir": str(config.run_dir), **{key: result.get(key) for key in keys}}


def train_experiment(run: RunRef, cached: dict[str, CachedTask] | None = None,
                     logger: Any = None) -> TrainResult:
    """Train in this process (under ``torchrun``, once per rank): the model, then the
    single-task baselines when ``baselines: single_task``."""
    config = run_config(run)
    result = train_model(config, cached, logger)
    if config.baselines == "single_task":  # one model per task, same budget: compare
        add_single_task_baselines(config, result, cached)
    return result


def run_with_baselines(run: RunRef, cached: dict[str, CachedTask] | None = None
                       ) -> tuple[TrainResult, dict[str, Any]]:
    """Train the multi-task model, then its single-task baselines, and compare them.

    Returns:
        The multi-task result and the report of
        :func:`multitask_bert.single_task.add_single_task_baselines`.
    """
    config = run_config(run)
    cached = cached or prepare_data(config)
    result = train_experiment(config, cached)
    # train_experiment trains the baselines itself when config.baselines == "single_task"
    report = read_comparison(config.run_dir)  # (metrics.json is rewritten by every training)
    if report is None:
        return result, add_single_task_baselines(config, result, cached)
    return result, {**report, "markdown": comparison_markdown(report["comparison"])}


# -- evaluate ---------------------------------------------------------------------------------
@dataclass
class Evaluation:
    """What :func:`evaluate` found; JSON-able (``to_dict``)."""

    metrics: dict[str, Metrics]
    """``{split: {task: {head: {metric: value}}}}`` (validation, and test where labelled)."""
    score: float
    """The major validation score (``training.early_stopping.metric``)."""
    champion: dict[str, Any] | None
    """The registered champion before this run, if any."""
    table: list[dict[str, Any]] = field(default_factory=list)
    """One row per split, task, head and metric (4 decimals)."""
    baselines_markdown: str | None = None
    """The multi-task vs single-task comparison, when the run trained baselines."""
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(run: RunRef, model_name: str = "multitask-bert",
             on_warning: Callable[[str], None] = log.warning) -> Evaluation:
    """Per-head metrics of the run's best model on validation and labelled test splits;
    plots; metrics to the run's tracking run; ``<run>/evaluation.json``."""
    config = run_config(run)
    run_dir = config.run_dir
    model_dir = run_dir / "best"
    metrics: dict[str, Metrics] = {"validation": evaluate_saved_model(model_dir, config)}
    if any(t.test is not None for t in config.tasks):
        try:
            metrics["test"] = evaluate_saved_model(model_dir, config, split="test")
        except MultitaskBertError as exc:
            on_warning(f"test split not evaluated: {exc}")
    heads = {t.name: list(t.heads) for t in config.tasks if t.name in metrics["validation"]}
    score = major_score(metrics["validation"], config.training.early_stopping.metric, heads)
    champion = safe_find_champion(config, model_name, on_warning)
    table = [{"split": split, "task": t, "head": h, "metric": m, "value": round(v, 4)}
             for split, values in metrics.items() for t, h, m, v in metrics_rows(values)]
    report = read_comparison(run_dir)
    plots = save_metric_plots(metrics["validation"], run_dir / "plots")
    trained = _metrics_json(run_dir)
    if trained.get("run_id") and config.logging.backend in ("mlflow", "both"):
        tracker = create_logger("mlflow", output_dir=run_dir,
                                experiment_name=config.logging.experiment_name or config.name,
                                run_name=config.name, tracking_uri=config.logging.tracking_uri,
                                resume_run_id=trained["run_id"])
        try:
            for split, values in metrics.items():
                tracker.log_metrics(flatten_metrics(values, prefix=split), step=0)
            for plot in plots:
                tracker.log_artifact(plot, "plots")
            tracker.log_dict(metrics, "evaluation.json")
        finally:
            tracker.close()
    (run_dir / "evaluation.json").write_text(json.dumps(metrics, indent=2))
    return Evaluation(metrics=metrics, score=score, champion=champion, table=table,
                      baselines_markdown=comparison_markdown(report["comparison"])
                      if report else None, plots=[str(p) for p in plots])


# -- register ---------------------------------------------------------------------------------
def register(run: RunRef, evaluation: Evaluation | dict[str, Any],
             model_name: str = "multitask-bert", extra_tags: dict[str, str] | None = None,
             promote: bool = True) -> dict[str, Any]:
    """Register the run's best model with the evaluated score; the result has the version,
    its aliases, the promotion decision and ``summary_markdown`` (for a run summary).
    ``promote=False`` registers a challenger only (a sweep's trial)."""
    config = run_config(run)
    evaluated = evaluation.to_dict() if isinstance(evaluation, Evaluation) else evaluation
    registration = register_run(config.run_dir, model_name=model_name, config=config,
                                score=evaluated["score"], extra_tags=extra_tags,
                                promote=promote)
    registration["summary_markdown"] = run_summary_markdown(
        config.name, config.training.early_stopping.metric, evaluated, registration,
        redact_uri(config.logging.tracking_uri or ""))
    return registration


def register_run(
    run_dir: str | Path,
    *,
    model_name: str = "multitask-bert",
    tracking_uri: str | None = None,
    config: ExperimentConfig | None = None,
    score: float | None = None,
    extra_tags: dict[str, str] | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Register a finished run's ``best/`` model: log it as an MLflow pyfunc, create a
    registry version (alias ``challenger``) and move ``champion`` when its score is at least
    the champion's on the same validation data (re-scoring the champion if the data
    changed; never with ``promote=False``). Works later and alone, e.g. after the tracking
    server was down."""
    from multitask_bert.registry import log_model
    from multitask_bert.registry import register as register_version

    run_dir = Path(run_dir)
    if not (run_dir / "best" / "model.safetensors").is_file():
        raise ConfigError(f"{run_dir}: no trained model in best/; train first, or pass the "
                          "run folder that holds metrics.json and best/")
    config = config or ExperimentConfig.load_run(run_dir)
    metrics = _metrics_json(run_dir)
    tracking_uri = tracking_uri or config.logging.tracking_uri
    assert tracking_uri is not None  # resolved
    score = metrics["best_score"] if score is None else score
    tokenizer = load_tokenizer(run_dir / "best")
    fingerprints = {
        task.name: compute_fingerprint(task, tokenizer, max_length=config.max_length_for(task),
                                       seed=config.training.seed)
        for task in config.tasks
    }
    run_id = metrics.get("run_id") if _run_exists(tracking_uri, metrics.get("run_id")) else None
    model_uri = log_model(run_dir / "best", tracking_uri=tracking_uri,
                          experiment_name=config.logging.experiment_name or config.name,
                          run_id=run_id)

    result = register_version(
        model_uri,
        tracking_uri=tracking_uri,
        model_name=model_name,
        score=score,
        score_metric=config.training.early_stopping.metric,
        data_fingerprints=fingerprints,
        config_hash=experiment_fingerprint(config, fingerprints,
                                           world_size=metrics.get("world_size") or 1),
        git_commit=git_commit(),
        extra_tags={"run_dir": str(run_dir), **(extra_tags or {})},
        rescore_champion=_rescorer(config, tracking_uri, run_dir / "champion"),
        promote=promote,
    )
    log.info("registered %s version %s (aliases: %s): %s", model_name, result.version,
             ", ".join(result.aliases), result.reason)
    return result.to_dict()


def _rescorer(config: ExperimentConfig, tracking_uri: str, work_dir: Path
              ) -> Callable[[str], float]:
    """Scores a registered model on ``config``'s validation data (the champion, when the
    data changed since it was scored)."""
    def rescore(champion_uri: str) -> float:
        log.info("data changed since the champion: re-scoring %s on today's validation data",
                 champion_uri)
        folder = download_model_folder(champion_uri, tracking_uri, work_dir)
        champion_metrics = evaluate_saved_model(folder, config)
        heads = {t.name: list(t.heads) for t in config.tasks if t.name in champion_metrics}
        return major_score(champion_metrics, config.training.early_stopping.metric, heads)

    return rescore


# -- sweeps -----------------------------------------------------------------------------------
def open_sweep(config_path: str | Path, search_space: str | Path, **options: Any) -> Sweep:
    """Open (create or continue) a hyper-parameter sweep: see
    :meth:`multitask_bert.sweep.Sweep.open` for the options."""
    return Sweep.open(config_path, search_space, **options)


def promote_best(sweep: Sweep, model_name: str = "multitask-bert") -> dict[str, Any] | None:
    """Apply the champion rule to the sweep's best trial's registered version (trials are
    registered as challengers only) and record the outcome on the sweep's MLflow run.
    Returns the registration (version, aliases, reason), or None without a best trial."""
    from multitask_bert.registry import promote_version

    best = sweep.best()
    if best is None or best.version is None:
        sweep.finish(best, None)
        return None
    config = sweep.trial_config(best)
    uri = config.logging.tracking_uri or ""
    rescore = _rescorer(config, uri, sweep.storage_path.parent / ".sweep-champion")
    result = promote_version(uri, model_name, best.version, rescore_champion=rescore)
    registration = {**result.to_dict(), "trial": best.number, "objective": best.objective}
    sweep.finish(best, registration)
    return registration


def download_model_folder(model_uri: str, tracking_uri: str, dst: Path) -> Path:
    """Download a registered model and return its multitask-bert model folder."""
    import mlflow

    from multitask_bert.registry import mlflow_store

    dst.mkdir(parents=True, exist_ok=True)
    with mlflow_store(tracking_uri):
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri,
                                                         dst_path=str(dst)))
    for config_file in local.rglob("multitask_config.json"):
        return config_file.parent
    raise FileNotFoundError(f"no multitask-bert model folder inside {model_uri}")


def safe_find_champion(config: ExperimentConfig, model_name: str,
                       on_warning: Callable[[str], None] = log.warning) -> dict | None:
    """The registered champion's description, or None (also when the store cannot be read:
    then with a warning, URI redacted)."""
    from multitask_bert.registry import find_champion

    uri = config.logging.tracking_uri or ""
    try:
        return find_champion(uri, model_name)
    except Exception as exc:
        on_warning(f"no champion found in {redact_uri(uri)} ({exc})")
        return None


def git_commit() -> str | None:
    """The commit of the code, when it runs from a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _metrics_json(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def _run_exists(tracking_uri: str, run_id: str | None) -> bool:
    if not run_id:
        return False
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        MlflowClient(tracking_uri).get_run(run_id)
        return True
    except MlflowException:
        return False

