"""The steps of one run as plain functions: tokenise and cache, train, evaluate.

The CLI calls them in a row; the Prefect flow wraps each in a task. Between steps travel
paths and small dicts, never tensors.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import CachedTask, tokenize_and_cache
from multitask_bert.data.dataset import TaskDataset
from multitask_bert.errors import ConfigError
from multitask_bert.evaluation.evaluator import Metrics
from multitask_bert.evaluation.majority import majority_baselines
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.tracking import TrackingLogger
from multitask_bert.training.trainer import Trainer, TrainResult, evaluate_model

log = logging.getLogger("multitask_bert")


def prepare_task(config: ExperimentConfig, task_name: str, tokenizer=None) -> CachedTask:
    """Tokenise one task's splits into the Parquet cache (a hit when nothing changed)."""
    task = config.task(task_name)
    tokenizer = tokenizer or load_tokenizer(config.encoder.resolve_path())
    return tokenize_and_cache(
        task,
        tokenizer,
        max_length=config.max_length_for(task),
        cache_dir=config.cache_path,
        seed=config.training.seed,
    )


def prepare_data(config: ExperimentConfig, tokenizer=None) -> dict[str, CachedTask]:
    tokenizer = tokenizer or load_tokenizer(config.encoder.resolve_path())
    return {task.name: prepare_task(config, task.name, tokenizer) for task in config.tasks}


def load_split(
    config: ExperimentConfig, cached: CachedTask, split: str, pad_token_id: int
) -> TaskDataset | None:
    path = cached.splits.get(split)
    if path is None:
        return None
    return TaskDataset.from_parquet(
        path,
        config.task(cached.task),
        cached.label_vocab,
        split=split,
        pad_token_id=pad_token_id,
        pad_to_multiple_of=config.training.pad_multiple(),
    )


def load_datasets(
    config: ExperimentConfig, cached: dict[str, CachedTask], split: str, pad_token_id: int
) -> dict[str, TaskDataset]:
    datasets = {}
    for name, entry in cached.items():
        dataset = load_split(config, entry, split, pad_token_id)
        if dataset is not None:
            datasets[name] = dataset
    return datasets


def train_experiment(
    config: ExperimentConfig,
    cached: dict[str, CachedTask] | None = None,
    logger: TrackingLogger | None = None,
) -> TrainResult:
    """Tokenise (or reuse the cache), build the model, train, write metrics and ``best/``."""
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = cached or prepare_data(config, tokenizer)
    pad = tokenizer.pad_token_id or 0
    train_sets = load_datasets(config, cached, "train", pad)
    eval_sets = load_datasets(config, cached, "validation", pad)
    label_vocab = {name: entry.label_vocab for name, entry in cached.items()}
    model = build_model(config.encoder, config.tasks, label_vocab, seed=config.training.seed)
    trainer = Trainer(config, model, tokenizer, train_sets, eval_sets, logger=logger)
    trainer.result.baseline = majority_baselines(train_sets, eval_sets)
    try:
        result = trainer.train()
        for name, entry in cached.items():
            trainer.logger.log_dict(entry.to_dict(), f"data/{name}.json")
    finally:
        trainer.close()
    if config.baselines == "single_task":  # one model per task, same budget: compare
        from multitask_bert.baselines import add_single_task_baselines

        add_single_task_baselines(config, result, cached)
    return result


def evaluate_saved_model(
    model_dir: str | Path,
    config: ExperimentConfig,
    split: str = "validation",
    batch_size: int | None = None,
) -> Metrics:
    """Per-head metrics of a saved model on one split of the config's tasks."""
    model = MultiTaskModel.load(model_dir)
    tokenizer = load_tokenizer(model_dir)
    datasets = {}
    for task in config.tasks:
        if task.name not in model.heads:
            log.warning("task %s: not in the model (tasks: %s), skipped", task.name,
                        model.task_names)
            continue
        if task.source(split) is None:
            log.warning("task %s: no %s split, skipped", task.name, split)
            continue
        cached = tokenize_and_cache(task, tokenizer, max_length=config.max_length_for(task),
                                    cache_dir=config.cache_path, seed=config.training.seed)
        _check_vocab(task.name, model.label_vocab.get(task.name, {}), cached.label_vocab)
        dataset = load_split(config, cached, split, tokenizer.pad_token_id or 0)
        if dataset is not None:
            datasets[task.name] = dataset
    if not datasets:
        raise ConfigError(f"nothing to evaluate: no task of the config has a {split!r} split "
                          f"that the model knows (model tasks: {model.task_names})")
    return evaluate_model(model, datasets, batch_size or config.training.eval_batch_size)


def _check_vocab(task: str, model_vocab: dict, data_vocab: dict) -> None:
    for head, labels in data_vocab.items():
        if model_vocab.get(head) != labels:
            raise ConfigError(
                f"task {task}, head {head}: the model was trained with labels "
                f"{model_vocab.get(head)} but the data gives {labels}; evaluate with the "
                "config the model was trained with (runs/<name>/config.yaml)"
            )


def register_run(
    run_dir: str | Path,
    *,
    model_name: str = "multitask-bert",
    tracking_uri: str | None = None,
    config: ExperimentConfig | None = None,
    score: float | None = None,
    extra_tags: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register a finished run's ``best/`` model: log it as an MLflow pyfunc, create a
    registry version (alias ``challenger``) and move ``champion`` when its score is at least
    the champion's on the same validation data (re-scoring the champion if the data
    changed). Works later and alone, e.g. after the tracking server was down."""
    from multitask_bert.data.cache import compute_fingerprint
    from multitask_bert.evaluation.evaluator import major_score
    from multitask_bert.registry import log_model, register
    from multitask_bert.tracking import default_tracking_uri

    run_dir = Path(run_dir)
    if not (run_dir / "best" / "model.safetensors").is_file():
        raise ConfigError(f"{run_dir}: no trained model in best/; train first, or pass the "
                          "run folder that holds metrics.json and best/")
    config = config or ExperimentConfig.load(run_dir / "config.yaml")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    # the run folder's config has credentials redacted ("***"): prefer the environment's URI
    configured = config.logging.tracking_uri
    if configured and "***" in configured:
        configured = None
    tracking_uri = (tracking_uri or configured or os.environ.get("MLFLOW_TRACKING_URI")
                    or default_tracking_uri(run_dir))
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

    def rescore(champion_uri: str) -> float:
        log.info("data changed since the champion: re-scoring %s on today's validation data",
                 champion_uri)
        folder = download_model_folder(champion_uri, tracking_uri, run_dir / "champion")
        champion_metrics = evaluate_saved_model(folder, config)
        heads = {t.name: list(t.heads) for t in config.tasks if t.name in champion_metrics}
        return major_score(champion_metrics, config.training.early_stopping.metric, heads)

    result = register(
        model_uri,
        tracking_uri=tracking_uri,
        model_name=model_name,
        score=score,
        score_metric=config.training.early_stopping.metric,
        data_fingerprints=fingerprints,
        config_hash=config.content_hash(),
        git_commit=git_commit(),
        extra_tags={"run_dir": str(run_dir), **(extra_tags or {})},
        rescore_champion=rescore,
    )
    log.info("registered %s version %s (aliases: %s): %s", model_name, result.version,
             ", ".join(result.aliases), result.reason)
    return result.to_dict()


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


def git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, check=True,
                              timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


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
