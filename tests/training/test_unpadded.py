"""``training.unpadded``: the Trainer on packed batches (CPU, fp32) trains the same model as on
padded ones, computes no pad token, and refuses an encoder that cannot run packed."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

from multitask_bert.errors import ConfigError
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.pipeline import load_datasets, prepare_data
from multitask_bert.tracking.base import NoOpLogger
from multitask_bert.training.trainer import Trainer


class Recorder(NoOpLogger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[dict[str, float]] = []
        self.params: dict = {}

    def log_metrics(self, metrics, step):
        self.metrics.append(dict(metrics))

    def log_params(self, params):
        self.params.update(params)


def build(config, encoder=None):
    """A Trainer on the tiny tasks; heads without dropout (a packed tagging batch has another
    shape than a padded one, so its dropout masks would differ)."""
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    train = load_datasets(config, cached, "train", tokenizer.pad_token_id)
    vocab = {n: c.label_vocab for n, c in cached.items()}
    model = build_model(config.encoder, config.tasks, vocab, seed=config.training.seed)
    if encoder is not None:
        model = MultiTaskModel(encoder, config.tasks, vocab)
    for module in model.heads.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    logger = Recorder()
    return Trainer(config, model, tokenizer, train, {}, logger=logger), logger


def test_packed_training_matches_padded_training_without_pad_tokens(tiny_config, tmp_path):
    runs = {}
    for unpadded in (False, True):
        # pad_to_multiple_of 8 (as on CUDA): the padded run computes pad tokens
        config = tiny_config(epochs=1, unpadded=unpadded, eval_strategy="no",
                             pad_to_multiple_of=8)
        config = config.model_copy(update={
            "output_dir": str(tmp_path / f"run-{unpadded}"),
            "logging": config.logging.model_copy(update={"log_every_n_steps": 1})})
        trainer, logger = build(config)
        assert trainer.unpadded is unpadded
        trainer.train()
        trainer.close()
        runs[unpadded] = (trainer.model.state_dict(), logger)
    padded, packed = runs[False], runs[True]
    assert packed[1].params["unpadded"] is True
    assert "dense" in packed[1].params["packed_attention"]
    pad_padded = [m["train/pad_ratio"] for m in padded[1].metrics if "train/pad_ratio" in m]
    pad_packed = [m["train/pad_ratio"] for m in packed[1].metrics if "train/pad_ratio" in m]
    assert max(pad_padded) > 0 and max(pad_packed) == 0.0
    losses_padded = [m["train/loss"] for m in padded[1].metrics if "train/loss" in m]
    losses_packed = [m["train/loss"] for m in packed[1].metrics if "train/loss" in m]
    assert len(losses_packed) == len(losses_padded) == trainer.total_steps
    assert losses_packed == pytest.approx(losses_padded, rel=1e-4, abs=1e-5)
    for name, weight in padded[0].items():
        torch.testing.assert_close(packed[0][name], weight, rtol=1e-3, atol=1e-4, msg=name)


def test_auto_is_padded_on_cpu(tiny_config):
    trainer, _ = build(tiny_config(epochs=1))
    assert trainer.args.unpadded == "auto" and trainer.unpadded is False
    trainer.close()


def test_unpadded_true_refuses_an_encoder_that_cannot_run_packed(tiny_config):
    config = AutoConfig.for_model("roberta", hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64,
                                  vocab_size=31000)
    roberta = AutoModel.from_config(config, add_pooling_layer=False)
    with pytest.raises(ConfigError, match=r"training.unpadded=true.*numbers positions "
                       r"differently.*Set training.unpadded to auto or false"):
        build(tiny_config(epochs=1, unpadded=True), encoder=roberta)
