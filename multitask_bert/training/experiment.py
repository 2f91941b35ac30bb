"""Train one multi-task model on a resolved config: data from the cache, model, Trainer.

The pipeline's ``train`` step (and the single-task baselines, once per task) call
:func:`train_model`; it writes ``metrics.json``, checkpoints and ``best/`` into the config's
run folder.
"""

from __future__ import annotations

from multitask_bert.config import ExperimentConfig
from multitask_bert.data.cache import CachedTask
from multitask_bert.data.prepare import load_datasets, prepare_data
from multitask_bert.evaluation.majority import majority_baselines
from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.tracking import TrackingLogger
from multitask_bert.training.result import TrainResult
from multitask_bert.training.trainer import Trainer


def train_model(
    config: ExperimentConfig,
    cached: dict[str, CachedTask] | None = None,
    logger: TrackingLogger | None = None,
) -> TrainResult:
    """Tokenise (or reuse the cache), build the model, train; returns the result.

    Args:
        config: the experiment (resolved: :meth:`ExperimentConfig.resolve`).
        cached: the tokenised tasks, when the caller has them.
        logger: a tracking logger (default: built from ``config.logging``).
    """
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = cached or prepare_data(config, tokenizer)
    pad = tokenizer.pad_token_id or 0
    train_sets = load_datasets(config, cached, "train", pad)
    eval_sets = load_datasets(config, cached, "validation", pad)
    label_vocab = {name: entry.label_vocab for name, entry in cached.items()}
    model = build_model(config.encoder, config.tasks, label_vocab, seed=config.training.seed,
                        loss_balancing=config.training.loss_balancing)
    trainer = Trainer(config, model, tokenizer, train_sets, eval_sets, logger=logger)
    trainer.result.baseline = majority_baselines(train_sets, eval_sets)
    try:
        result = trainer.train()
        for name, entry in cached.items():
            trainer.logger.log_dict(entry.to_dict(), f"data/{name}.json")
    finally:
        trainer.close()
    return result
