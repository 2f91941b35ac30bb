"""The pipeline façade: the steps of one run, as plain functions the CLI and the flow share.

::

    config = pipeline.resolve("configs/quickstart.yaml", ["training.epochs=1"])   # the door
    run_dir = pipeline.start(config)       # writes <run>/config.yaml, read by every step
    cached = pipeline.prepare(run_dir)     # tokenise and cache every task
    trained = pipeline.train(run_dir)      # a supervised child process (retry-safe)
    evaluation = pipeline.evaluate(run_dir)
    registration = pipeline.register(run_dir, evaluation)
    summary = pipeline.score("models:/multitask-bert@champion", ["rows.jsonl"], "out.parquet")
    onnx_file = pipeline.export_onnx("models:/multitask-bert@champion", "exported/")

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

from multitask_bert.atomic import write_json_atomic
from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import META_FILE, CachedTask, compute_fingerprint
from multitask_bert.data.prepare import load_datasets, load_split, prepare_data, prepare_task
from multitask_bert.data.sources import read_split
from multitask_bert.errors import ConfigError, MultitaskBertError
from multitask_bert.evaluation.evaluator import (
    Metrics,
    flatten_metrics,
    head_major_scores,
    major_score,
)
from multitask_bert.evaluation.plots import save_metric_plots
from multitask_bert.evaluation.report import (
    format_head_table,
    run_summary_markdown,
    wide_metrics_table,
)
from multitask_bert.evaluation.saved_model import evaluate_saved_model
from multitask_bert.fingerprint import experiment_fingerprint
from multitask_bert.heads import head_type_class
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
    "export_onnx",
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
    "run_fingerprint",
    "run_with_baselines",
    "score",
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
    by_fingerprint: bool = False,
) -> ExperimentConfig:
    """Load an experiment YAML with ``key=value`` overrides and resolve it once (absolute run
    and cache folders, tracking URI, experiment name; see :meth:`ExperimentConfig.resolve`).

    Args:
        config_path: the YAML; relative to ``root`` when relative.
        overrides: ``key=value`` strings.
        root: what relative paths are relative to (default: the working directory).
        run_name: a sub-folder of the experiment's folder for this run.
        by_fingerprint: the sub-folder is the experiment fingerprint
            (:func:`run_fingerprint`: config and data), so every run of the same experiment
            (a rerun, the next scheduled run, an automation) finds the same folder and
            resumes its checkpoint (the flow's runs).

    ``run_name`` and ``by_fingerprint`` are ignored when an override names ``output_dir``:
    the user chose the folder.
    """
    path = Path(config_path)
    if root is not None and not path.is_absolute():
        path = Path(root) / path
    loaded = ExperimentConfig.load(path, list(overrides))
    if any(o.split("=", 1)[0].strip() == "output_dir" for o in overrides):
        return loaded.resolve(root=root)
    if by_fingerprint:
        run_name = run_fingerprint(loaded.resolve(root=root))
    return loaded.resolve(root=root, run_name=run_name)


def run_fingerprint(config: ExperimentConfig) -> str:
    """The experiment fingerprint of a resolved config (its config minus the settings of
    :data:`multitask_bert.fingerprint.NOT_IN_FINGERPRINT`, every task's data fingerprint,
    the planned world size), without tokenising: the name of its run folder under the flow,
    and the ``config_hash`` its registered version gets. Raises on bad input (a missing
    file, an unknown encoder) with the message that names it."""
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    data = {task.name: compute_fingerprint(task, tokenizer,
                                           max_length=config.max_length_for(task),
                                           seed=config.training.seed)
            for task in config.tasks}
    return experiment_fingerprint(config, data, world_size=planned_world_size(config))


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
    """One row per task/head, one column per metric and split (4 decimals)."""
    head_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every head's major validation metric (``{"task/head": {"metric", "value",
    "higher_is_better"}}``), for the per-head promotion gate."""
    baselines_markdown: str | None = None
    """The multi-task vs single-task comparison, when the run trained baselines."""
    gradients: dict[str, float] = field(default_factory=dict)
    """The training's last gradient telemetry (``grad/<task>/norm``, ``grad/<a>~<b>/cosine``)."""
    plots: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate(run: RunRef, model_name: str = "multitask-bert",
             on_warning: Callable[[str], None] = log.warning,
             on_info: Callable[[str], None] = log.info) -> Evaluation:
    """Per-head metrics of the run's best model on validation and labelled test splits;
    plots; metrics to the run's tracking run (validation as ``task/head/metric``, the name
    training logs them under, at the run's last step; test as ``test/task/head/metric``);
    ``<run>/evaluation.json``; the per-head table and the score to ``on_info``."""
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
    head_scores = head_major_scores(metrics["validation"], heads)
    majors = {key: value["metric"] for key, value in head_scores.items()}
    table = wide_metrics_table(metrics, majors)
    on_info(f"per-head major metrics of {model_dir}:\n{format_head_table(metrics, majors)}")
    on_info(f"score ({config.training.early_stopping.metric}, validation): {score:.4f}")
    report = read_comparison(run_dir)
    plots = save_metric_plots(metrics["validation"], run_dir / "plots")
    trained = _metrics_json(run_dir)
    if trained.get("run_id") and config.logging.backend in ("mlflow", "both"):
        tracker = create_logger("mlflow", output_dir=run_dir,
                                experiment_name=config.logging.experiment_name or config.name,
                                run_name=run_dir.name, tracking_uri=config.logging.tracking_uri,
                                resume_run_id=trained["run_id"])
        try:
            # validation under the names training used, at its last step: the curve ends
            # with the best model (the registered one); test under its own prefix
            step = int(trained.get("global_step") or 0)
            for split, values in metrics.items():
                prefix = "" if split == "validation" else split
                tracker.log_metrics(flatten_metrics(values, prefix=prefix), step=step)
            for plot in plots:
                tracker.log_artifact(plot, "plots")
            tracker.log_dict(metrics, "evaluation.json")
        finally:
            tracker.close()
    write_json_atomic(run_dir / "evaluation.json", metrics)
    return Evaluation(metrics=metrics, score=score, champion=champion, table=table,
                      head_scores=head_scores,
                      baselines_markdown=comparison_markdown(report["comparison"])
                      if report else None, plots=[str(p) for p in plots],
                      gradients=trained.get("gradients") or {})


# -- register ---------------------------------------------------------------------------------
def register(run: RunRef, evaluation: Evaluation | dict[str, Any],
             model_name: str = "multitask-bert", extra_tags: dict[str, str] | None = None,
             on_info: Callable[[str], None] = log.info, promote: bool = True
             ) -> dict[str, Any]:
    """Register the run's best model with the evaluated score and per-head scores; the
    result has the version, its aliases, the promotion decision (and the heads that
    regressed) and ``summary_markdown`` (for a run summary). The version, aliases and
    decision go to ``on_info``. ``promote=False`` registers a challenger only (a sweep's
    trial)."""
    config = run_config(run)
    evaluated = evaluation.to_dict() if isinstance(evaluation, Evaluation) else evaluation
    registration = register_run(config.run_dir, model_name=model_name, config=config,
                                score=evaluated["score"], extra_tags=extra_tags,
                                head_scores=evaluated.get("head_scores"), promote=promote)
    on_info(f"registered {registration['model_name']} version {registration['version']} "
            f"(aliases: {', '.join(registration['aliases']) or 'none'}): "
            f"{registration['reason']}")
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
    head_scores: dict[str, dict[str, Any]] | None = None,
    promote: bool = True,
) -> dict[str, Any]:
    """Register a finished run's ``best/`` model: log it as an MLflow pyfunc (signature,
    an input example per task), create a registry version (alias ``challenger``, a
    description of its tasks, heads, labels and scores) and move ``champion`` when its score
    is at least the champion's on the same validation data and no head's major metric fell
    more than ``promotion.max_head_regression`` below the champion's (re-scoring the
    champion if the data changed; never with ``promote=False``). Works later and alone, e.g.
    after the tracking server was down (the per-head scores then come from
    ``metrics.json``)."""
    from multitask_bert.registry import log_model
    from multitask_bert.registry import register as register_version
    from multitask_bert.registry.signature import version_description

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
    heads = {t.name: list(t.heads) for t in config.tasks}
    if head_scores is None and metrics.get("best"):
        head_scores = head_major_scores(metrics["best"], heads)
    head_scores = head_scores or {}
    model_uri = log_model(run_dir / "best", tracking_uri=tracking_uri,
                          experiment_name=config.logging.experiment_name or config.name,
                          run_id=run_id, examples=_example_rows(config))

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
        head_scores={k: v["value"] for k, v in head_scores.items()},
        lower_is_better_heads=tuple(k for k, v in head_scores.items()
                                    if not v["higher_is_better"]),
        max_head_regression=config.promotion.max_head_regression,
        description=version_description(config.tasks, _label_vocab(run_dir / "best"),
                                        head_scores, score,
                                        config.training.early_stopping.metric),
        promote=promote,
    )
    log.info("registered %s version %s (aliases: %s): %s", model_name, result.version,
             ", ".join(result.aliases), result.reason)
    return result.to_dict()


def _example_rows(config: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """The first validation row of every task that has one (for the model's examples)."""
    examples = {}
    for task in config.tasks:
        try:
            rows = read_split(task, "validation" if task.validation else "train",
                              apply_limit=False)
        except Exception as exc:  # an example is documentation: never fail registration
            log.debug("no example row for %s: %s", task.name, exc)
            continue
        if rows:
            examples[task.name] = rows[0]
    return examples


def _label_vocab(model_dir: Path) -> dict[str, dict[str, list[str]]]:
    from multitask_bert.models.multitask import CONFIG_FILE

    return json.loads((model_dir / CONFIG_FILE).read_text()).get("label_vocab", {})


def _rescorer(config: ExperimentConfig, tracking_uri: str, work_dir: Path
              ) -> Callable[[str], tuple[float, dict[str, float]]]:
    """Scores a registered model on ``config``'s validation data (the champion, when the
    data changed since it was scored, or it has no per-head scores): its major score and
    every head's major metric."""
    heads = {t.name: list(t.heads) for t in config.tasks}

    def rescore(champion_uri: str) -> tuple[float, dict[str, float]]:
        log.info("re-scoring %s on today's validation data (the data changed, or it has no "
                 "per-head scores)", champion_uri)
        folder = download_model_folder(champion_uri, tracking_uri, work_dir)
        champion_metrics = evaluate_saved_model(folder, config)
        scored = {t: h for t, h in heads.items() if t in champion_metrics}
        return (major_score(champion_metrics, config.training.early_stopping.metric, scored),
                {k: v["value"] for k, v in head_major_scores(champion_metrics, scored).items()})

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
    lower = [f"{t.name}/{h.name}" for t in config.tasks for h in t.heads
             if h.major in head_type_class(h.type).lower_is_better]
    result = promote_version(uri, model_name, best.version, rescore_champion=rescore,
                             lower_is_better_heads=lower)
    registration = {**result.to_dict(), "trial": best.number, "objective": best.objective}
    sweep.finish(best, registration)
    return registration


def download_model_folder(model_uri: str, tracking_uri: str, dst: Path) -> Path:
    """Download a registered model and return its multitask-bert model folder."""
    from multitask_bert.registry.lookup import download_model

    return download_model(model_uri, tracking_uri, dst)[0]


# -- use the model ----------------------------------------------------------------------------
def score(model_uri: str, inputs: list[str], output: str, *, rejects: str | None = None,
          task: str | None = None, runtime: str = "torch", batch_size: int = 32,
          chunk_rows: int = 2048, tracking_uri: str | None = None,
          root: str | Path | None = None,
          on_progress: Callable[[int, int | None, float], None] | None = None
          ) -> dict[str, Any]:
    """Batch scoring (:func:`multitask_bert.scoring.score_files`): every row of the input
    files (JSONL, CSV, Parquet; streamed) into a Parquet file; rejected rows, with their
    reason, into a JSONL file. Relative paths are relative to ``root`` (default: the working
    directory). Returns the summary (rows, scored, rejected, rows/s, model version)."""
    from multitask_bert.scoring import score_files

    base = Path(root) if root is not None else Path.cwd()

    def at(path: str) -> Path:
        return Path(path) if Path(path).is_absolute() else base / path

    local = at(model_uri)
    model = str(local) if ":/" not in model_uri and local.exists() else model_uri
    return score_files(model, [at(p) for p in inputs], at(output),
                       rejects=at(rejects) if rejects else None, task=task, runtime=runtime,
                       batch_size=batch_size, chunk_rows=chunk_rows, tracking_uri=tracking_uri,
                       on_progress=on_progress).to_dict()


def export_onnx(model: str, output_dir: str | None = None, tracking_uri: str | None = None,
                work_dir: str | Path = ".work/export") -> Path:
    """One ONNX graph for every head (:func:`multitask_bert.onnx_export.export_onnx`) of a
    model folder or a model URI (downloaded first); returns the ``model.onnx`` written."""
    import os

    from multitask_bert.onnx_export import export_onnx as export
    from multitask_bert.registry.lookup import download_model

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    folder, _ = download_model(model, uri, Path(work_dir))
    return export(folder, output_dir)


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

