"""Word-shape features, uncertainty loss balancing and gradient telemetry (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow.pyfunc
import pytest
import torch

from multitask_bert.config import EncoderConfig, ExperimentConfig
from multitask_bert.data.word_shape import SHAPES, word_shape
from multitask_bert.inference import Predictor
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.pipeline import train_experiment
from multitask_bert.registry import MultitaskPyfunc, pinned_requirements
from multitask_bert.tasks import TaskSpec
from multitask_bert.training.telemetry import gradient_conflicts, telemetry_batches
from tests.conftest import TINY_ENCODER, tiny_config_dict

VOCAB = {"tok": {"ner": ["O", "B-LOC"]}}


def shape_task(**options) -> TaskSpec:
    return TaskSpec(name="tok", type="token", train="x.jsonl",
                    heads=[{"name": "ner", "type": "tagging", "scheme": "IOB2"}], **options)


@pytest.mark.parametrize(("word", "shape"), [
    ("paris", "lower"), ("Paris", "Title"), ("PARIS", "UPPER"), ("iPhone", "mixed"),
    ("1996-08-22", "digits"), ("3.5", "digits"), (".", "punctuation"), ("--", "punctuation"),
    ("A1", "other"), ("", "other"),
])
def test_word_shapes(word, shape):
    assert SHAPES[word_shape(word) - 1] == shape


def shaped_logits(model: MultiTaskModel, tokenizer, word: str) -> torch.Tensor:
    from multitask_bert.task_types import task_type_of

    task = model.tasks[0]
    encoding, _ = task_type_of(task).encode_rows(tokenizer, task, [{"tokens": [word]}], 16)
    with torch.no_grad():
        out = model(encoding["input_ids"], encoding["attention_mask"], task_id="tok",
                    token_type_ids=encoding["token_type_ids"],
                    word_shapes=encoding.get("word_shapes"))
    return out.logits["ner"][0, 1]  # the word's first sub-word


def test_shape_features_change_a_capitalised_words_logits_and_survive_save_load(tmp_path):
    encoder = EncoderConfig(**TINY_ENCODER)
    tokenizer = load_tokenizer(encoder.resolve_path())
    assert tokenizer("Paris")["input_ids"] == tokenizer("paris")["input_ids"]  # uncased
    plain = build_model(encoder, [shape_task()], VOCAB, seed=0).eval()
    assert torch.equal(shaped_logits(plain, tokenizer, "Paris"),
                       shaped_logits(plain, tokenizer, "paris"))
    shaped = build_model(encoder, [shape_task(word_shape=True)], VOCAB, seed=0).eval()
    title = shaped_logits(shaped, tokenizer, "Paris")
    assert not torch.allclose(title, shaped_logits(shaped, tokenizer, "paris"))

    shaped.save(tmp_path / "model", tokenizer)
    loaded = MultiTaskModel.load(tmp_path / "model")
    assert torch.equal(shaped_logits(loaded, tokenizer, "Paris"), title)
    # the pyfunc (what MLflow serves) loads the same model and encodes shapes the same way
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), python_model=MultitaskPyfunc(),
                             artifacts={"model": str(tmp_path / "model")},
                             pip_requirements=pinned_requirements())  # no inference subprocess
    served = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    predictor = served.unwrap_python_model()._predictor
    assert isinstance(predictor, Predictor)
    assert torch.equal(shaped_logits(predictor.model, predictor.tokenizer, "Paris"), title)
    prediction = served.predict([{"task": "tok", "tokens": ["Paris"]}])[0]["predictions"]
    assert prediction["ner"]["tags"] in (["O"], ["B-LOC"])


def test_uncertainty_log_variances_get_gradients_and_start_at_static(tiny_config):
    encoder = EncoderConfig(**TINY_ENCODER)
    tasks = [shape_task()]
    static = build_model(encoder, tasks, VOCAB, seed=0).eval()  # eval: no dropout
    balanced = build_model(encoder, tasks, VOCAB, seed=0, loss_balancing="uncertainty").eval()
    ids = torch.tensor([[101, 3000, 3001, 102]])
    mask = torch.ones_like(ids)
    labels = {"ner": torch.tensor([[-100, 1, 0, -100]])}
    out_static = static(ids, mask, labels, task_id="tok")
    out = balanced(ids, mask, labels, task_id="tok")
    assert torch.allclose(out.loss, out_static.loss)  # s = 0: exp(0) * loss + 0
    out.loss.backward()
    grad = balanced.log_vars["tok"]["ner"].grad
    assert grad is not None and float(grad) != 0.0
    assert balanced.log_variances() == {"tok/ner": 0.0}


def test_uncertainty_balancing_trains_logs_and_reloads(task_dir, tmp_path):
    data = tiny_config_dict(task_dir, tmp_path, epochs=1, max_steps=6,
                            loss_balancing="uncertainty")
    data["logging"] = {"backend": "tensorboard", "log_every_n_steps": 2}
    result = train_experiment(ExperimentConfig.from_dict(data))
    model = MultiTaskModel.load(Path(result.output_dir) / "best")
    variances = model.log_variances()
    assert set(variances) == {"tagging/ner", "tagging/pos", "sentiment/label", "pairs/score",
                              "topics/topics"}
    assert any(value != 0.0 for value in variances.values())  # learnt
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(Path(result.output_dir) / "tensorboard")).Reload()
    assert "loss_balancing/pairs/score/log_variance" in events.Tags()["scalars"]


def test_telemetry_cosine_is_one_for_two_identical_tasks(task_dir, tmp_path):
    from multitask_bert.data.prepare import load_datasets, prepare_data

    data = tiny_config_dict(task_dir, tmp_path)
    twin = next(t for t in data["tasks"] if t["name"] == "sentiment")
    data["tasks"] = [twin, {**twin, "name": "twin"},
                     next(t for t in data["tasks"] if t["name"] == "pairs")]
    config = ExperimentConfig.from_dict(data)
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    datasets = load_datasets(config, cached, "train", tokenizer.pad_token_id)
    vocab = {name: entry.label_vocab for name, entry in cached.items()}
    model = build_model(config.encoder, config.tasks, vocab, seed=0)
    model.heads["twin"].load_state_dict(model.heads["sentiment"].state_dict())
    batches = telemetry_batches(datasets, lambda task: 4, 2)
    assert [len(b) for b in batches.values()] == [2, 2, 2]
    before = [p.detach().clone() for p in model.parameters()]
    stats = gradient_conflicts(model, batches)
    assert stats["grad/sentiment~twin/cosine"] == pytest.approx(1.0, abs=1e-5)
    assert stats["grad/sentiment/norm"] == pytest.approx(stats["grad/twin/norm"], rel=1e-5)
    assert -1.0 <= stats["grad/pairs~sentiment/cosine"] < 0.9999
    assert set(stats) == {"grad/sentiment/norm", "grad/twin/norm", "grad/pairs/norm",
                          "grad/pairs~sentiment/cosine", "grad/pairs~twin/cosine",
                          "grad/sentiment~twin/cosine"}
    assert all(p.grad is None for p in model.parameters())  # training state untouched
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_telemetry_on_the_top_layers_takes_only_their_parameters(task_dir, tmp_path):
    from multitask_bert.data.prepare import load_datasets, prepare_data
    from multitask_bert.training.telemetry import shared_parameters

    config = ExperimentConfig.from_dict(tiny_config_dict(task_dir, tmp_path))
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    vocab = {name: entry.label_vocab for name, entry in cached.items()}
    model = build_model(config.encoder, config.tasks, vocab, seed=0)
    layers = model.encoder.encoder.layer  # BERT's transformer blocks
    assert len(layers) >= 2
    ids = {id(p) for p in shared_parameters(model.encoder, 1)}
    assert ids == {id(p) for p in layers[-1].parameters()}
    two = {id(p) for p in shared_parameters(model.encoder, 2)}
    assert two == ids | {id(p) for p in layers[-2].parameters()}
    every = shared_parameters(model.encoder, 0)
    assert len(every) == len(list(model.encoder.parameters()))
    assert len(shared_parameters(model.encoder, 99)) < len(every)  # at most every layer
    # the top layer's statistics are those of its slice of the full gradient
    datasets = load_datasets(config, cached, "train", tokenizer.pad_token_id)
    batches = telemetry_batches(datasets, lambda task: 4, 1)
    top = gradient_conflicts(model, batches, top_layers=1)
    full = gradient_conflicts(model, batches)
    assert set(top) == set(full)
    assert all(0 < top[k] < full[k] for k in top if k.endswith("/norm"))


def test_telemetry_is_logged_at_each_evaluation_and_kept_in_metrics(task_dir, tmp_path):
    data = tiny_config_dict(task_dir, tmp_path, epochs=2)
    data["logging"] = {"backend": "mlflow", "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}
    result = train_experiment(ExperimentConfig.from_dict(data))
    recorded = json.loads((Path(result.output_dir) / "metrics.json").read_text())
    keys = set(recorded["gradients"])
    assert "grad/tagging/norm" in keys and "grad/pairs~sentiment/cosine" in keys
    assert 0 < recorded["telemetry_seconds"] < recorded["train_seconds"]
    from mlflow import MlflowClient

    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(
        result.run_id, "grad/pairs-vs-sentiment/cosine")  # MLflow refuses "~"
    assert len(history) == 2  # one per evaluation (two epochs)
