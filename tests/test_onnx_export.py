"""One ONNX graph for every head: logits within 1e-4 of PyTorch, on a tiny model (always) and
on the packaged MiniLM (integration); the predictor gives the same output on either runtime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from multitask_bert.config import EncoderConfig
from multitask_bert.inference import Predictor
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.onnx_export import OnnxModel, export_onnx
from multitask_bert.tasks import TaskSpec
from tests.conftest import TINY_ENCODER

TASKS = [
    TaskSpec(name="news", type="token", train="unused.jsonl",
             heads=[{"name": "ner", "type": "tagging", "scheme": "IOB2"},
                    {"name": "pos", "type": "tagging"}]),
    TaskSpec(name="review", type="sequence", train="unused.jsonl",
             heads=[{"name": "label", "type": "classification"},
                    {"name": "stars", "type": "regression"}]),
    TaskSpec(name="topics", type="sequence", train="unused.jsonl",
             heads=[{"name": "topics", "type": "multilabel"}]),
]
VOCAB = {"news": {"ner": ["O", "B-PER", "I-PER"], "pos": ["NOUN", "VERB"]},
         "review": {"label": ["neg", "pos"]}, "topics": {"topics": ["a", "b", "c"]}}
TEXTS = [["Maria flew to Lima on a very long flight with friends", "Bob"],
         ["short", "a somewhat longer sentence than the first one", "x y"]]


def _max_difference(model_dir: Path, onnx_dir: Path) -> dict[str, float]:
    """Every head's largest |ONNX - PyTorch| logit over batches of several lengths."""
    model = MultiTaskModel.load(model_dir)
    tokenizer = load_tokenizer(model_dir)
    session = OnnxModel(onnx_dir)
    worst: dict[str, float] = {}
    for texts in TEXTS:
        encoding = tokenizer(texts, padding=True, return_tensors="pt")
        types = encoding.get("token_type_ids", torch.zeros_like(encoding["input_ids"]))
        for task in model.task_names:
            with torch.inference_mode():
                expected = model(encoding["input_ids"], encoding["attention_mask"],
                                 task_id=task, token_type_ids=types).logits
            got = session.logits(task, encoding["input_ids"], encoding["attention_mask"], types)
            assert set(got) == set(expected)
            for head, value in expected.items():
                mask = encoding["attention_mask"].bool() if value.dim() == 3 else None
                diff = (got[head] - value).abs()
                diff = diff[mask] if mask is not None else diff  # padded positions are unused
                key = f"{task}/{head}"
                worst[key] = max(worst.get(key, 0.0), float(diff.max()))
    return worst


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "best"
    build_model(EncoderConfig(**TINY_ENCODER), TASKS, VOCAB, seed=11).save(
        folder, load_tokenizer(EncoderConfig().resolve_path()))
    return folder


def test_one_graph_for_every_head_matches_pytorch_within_1e_4(tiny, tmp_path):
    path = export_onnx(tiny, tmp_path / "exported")
    graph = onnx.load(str(path))
    assert [o.name for o in graph.graph.output] == ["news/ner", "news/pos", "review/label",
                                                    "review/stars", "topics/topics"]
    batch, length = (d.dim_param for d in graph.graph.input[0].type.tensor_type.shape.dim)
    assert batch and length  # dynamic batch and length, not the traced shape
    assert {p.key for p in graph.metadata_props} == {"multitask_config", "weights_sha256"}
    exported = tmp_path / "exported"
    assert (exported / "multitask_config.json").is_file()
    assert (exported / "tokenizer.json").is_file()
    worst = _max_difference(tiny, exported)
    assert set(worst) == {"news/ner", "news/pos", "review/label", "review/stars",
                          "topics/topics"}
    assert max(worst.values()) < 1e-4, worst


def test_the_predictor_on_onnx_runtime_gives_the_pytorch_output(tiny):
    rows = [{"task": "news", "text": "Maria  flew to Lima"},
            {"task": "review", "text": "a fine film"},
            {"task": "topics", "text": "a b c"}]
    torch_out = Predictor(tiny).output_rows(rows)
    onnx_out = Predictor(tiny, runtime="onnx").output_rows(rows)  # exports beside it first
    assert (tiny / "model.onnx").is_file()
    assert [o["task"] for o in onnx_out] == [o["task"] for o in torch_out]
    assert onnx_out[0]["predictions"]["ner"]["tags"] == torch_out[0]["predictions"]["ner"]["tags"]
    for ours, theirs in zip(onnx_out, torch_out, strict=True):
        _assert_close(ours, theirs)


def _assert_close(actual, expected) -> None:
    if isinstance(expected, float):
        assert actual == pytest.approx(expected, abs=1e-4)
    elif isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            _assert_close(actual[key], expected[key])
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for a, e in zip(actual, expected, strict=True):
            _assert_close(a, e)
    else:
        assert actual == expected


@pytest.mark.integration
def test_the_packaged_minilm_exports_within_1e_4(tmp_path):
    folder = tmp_path / "minilm"
    model = build_model(EncoderConfig(), TASKS, VOCAB, seed=2)  # pretrained encoder, new heads
    model.save(folder, load_tokenizer(EncoderConfig().resolve_path()))
    export_onnx(folder)
    worst = _max_difference(folder, folder)
    assert max(worst.values()) < 1e-4, worst
    assert np.isfinite(list(worst.values())).all()


def test_a_graph_older_than_the_weights_beside_it_is_exported_again(tiny, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(tiny, folder)
    export_onnx(folder)
    exported_at = (folder / "model.onnx").stat().st_mtime_ns
    OnnxModel(folder)  # the same weights: the graph is used as it is
    assert (folder / "model.onnx").stat().st_mtime_ns == exported_at
    other = tmp_path / "other"
    build_model(EncoderConfig(**TINY_ENCODER), TASKS, VOCAB, seed=12).save(
        other, load_tokenizer(EncoderConfig().resolve_path()))
    shutil.copy2(other / "model.safetensors", folder / "model.safetensors")  # new weights
    OnnxModel(folder)
    assert (folder / "model.onnx").stat().st_mtime_ns != exported_at
    assert max(_max_difference(folder, folder).values()) < 1e-4


def test_word_shapes_are_a_graph_input_of_a_model_that_uses_them(tmp_path):
    """A token task with ``word_shape``: the graph takes ``word_shapes`` and the predictor on
    ONNX Runtime gives PyTorch's output for a capitalised word."""
    tasks = [TASKS[0].model_copy(update={"word_shape": True}), TASKS[1]]
    folder = tmp_path / "best"
    build_model(EncoderConfig(**TINY_ENCODER), tasks, VOCAB, seed=11).save(
        folder, load_tokenizer(EncoderConfig().resolve_path()))
    graph = onnx.load(str(export_onnx(folder)))
    assert [i.name for i in graph.graph.input] == ["input_ids", "attention_mask",
                                                   "token_type_ids", "word_shapes"]
    rows = [{"task": "news", "tokens": ["Maria", "flew", "to", "LIMA", "1996"]},
            {"task": "review", "text": "a fine film"}]
    for ours, theirs in zip(Predictor(folder, runtime="onnx").output_rows(rows),
                            Predictor(folder).output_rows(rows), strict=True):
        _assert_close(ours, theirs)
