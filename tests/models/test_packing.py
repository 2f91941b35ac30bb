"""The unpadded (packed) path on CPU in fp32: the same tokens, logits, losses and gradients
as the padded path on the same batch, for every head type and both poolings."""

from __future__ import annotations

import random

import pytest
import torch
from transformers import AutoConfig, AutoModel

from multitask_bert.data.dataset import PackedRows
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.models.packing import (
    BACKENDS,
    attention_backends,
    check_kernel,
    packed_encoder_forward,
    packing_problem,
)
from multitask_bert.pipeline import load_datasets, prepare_data
from tests.conftest import write_jsonl

TASKS = ("tagging", "sentiment", "pairs", "topics")  # tagging x2, classification,
# regression over text pairs (token types), multilabel
WORDS = "the quick brown fox jumps over a lazy dog near paris in early spring".split()


@pytest.fixture
def task_dir(tmp_path):
    """The four tiny tasks of tests/conftest.py, with rows of many different lengths."""
    root = tmp_path / "tasks"
    rng = random.Random(1)
    for split, n in (("train", 24), ("validation", 8)):
        rows = {"tagging": [], "sentiment": [], "pairs": [], "topics": []}
        for i in range(n):
            words = WORDS[: 2 + (i * 5) % 12]
            rows["tagging"].append({"tokens": words, "ner": ["B-PER"] + ["O"] * (len(words) - 1),
                                    "pos": [rng.choice(["NOUN", "VERB"]) for _ in words]})
            rows["sentiment"].append({"text": " ".join(words), "label": ["pos", "neg"][i % 2]})
            rows["pairs"].append({"text_a": " ".join(words), "text_b": " ".join(words[:3]),
                                  "score": float(i % 5)})
            rows["topics"].append({"text": " ".join(words),
                                   "topics": [["sports"], ["politics", "health"]][i % 2]})
        for task, task_rows in rows.items():
            write_jsonl(root / task / f"{split}.jsonl", task_rows)
    return root


@pytest.fixture
def data(tiny_config):
    config = tiny_config()
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    datasets = load_datasets(config, cached, "train", tokenizer.pad_token_id)
    return config, datasets, {n: c.label_vocab for n, c in cached.items()}


def model_for(config, vocab, pooling: str) -> MultiTaskModel:
    encoder = config.encoder.model_copy(update={"pooling": pooling})
    return build_model(encoder, config.tasks, vocab, seed=3).eval()


def test_packed_rows_layout_and_unpack():
    packing = PackedRows.from_lengths([3, 1, 4])
    assert packing.cu_seqlens.tolist() == [0, 3, 4, 8]
    assert packing.cu_seqlens.dtype == torch.int32
    assert packing.position_ids.tolist() == [[0, 1, 2, 0, 0, 1, 2, 3]]
    assert packing.row_ids.tolist() == [0, 0, 0, 1, 2, 2, 2, 2]
    assert (packing.max_length, packing.min_length, packing.rows) == (4, 1, 3)
    values = torch.arange(1, 9).unsqueeze(0)
    assert packing.unpack(values, fill=0).tolist() == [[1, 2, 3, 0], [4, 0, 0, 0],
                                                       [5, 6, 7, 8]]


@pytest.mark.parametrize("task", TASKS)
def test_packed_collate_holds_the_padded_tokens_without_padding(data, task):
    _config, datasets, _vocab = data
    dataset = datasets[task]
    indices = [5, 0, 17, 3]
    padded = dataset.collate(indices)
    packed = dataset.collate(indices, packed=True)
    real = padded.attention_mask.bool()
    assert packed.input_ids.shape == (1, int(real.sum()))
    assert torch.equal(packed.input_ids[0], padded.input_ids[real])
    assert torch.equal(packed.token_type_ids[0], padded.token_type_ids[real])
    assert packed.real_tokens == packed.padded_tokens == padded.real_tokens
    assert packed.lengths == padded.lengths and packed.indices == padded.indices
    for head, labels in padded.labels.items():
        if task == "tagging":  # one tag per token: the same layout as input_ids
            assert torch.equal(packed.labels[head][0], labels[real]), head
        else:
            assert torch.equal(packed.labels[head], labels), head  # per example


@pytest.mark.parametrize("pooling", ["mean", "cls"])
@pytest.mark.parametrize("task", TASKS)
def test_packed_forward_equals_padded_logits_loss_and_gradients(data, task, pooling):
    config, datasets, vocab = data
    model = model_for(config, vocab, pooling)
    indices = [2, 9, 4, 11, 7]
    padded = datasets[task].collate(indices)
    packed = datasets[task].collate(indices, packed=True)
    assert len(set(padded.lengths)) > 1  # rows of different lengths: padding to skip

    out_padded = model(padded.input_ids, padded.attention_mask, padded.labels, task_id=task,
                       token_type_ids=padded.token_type_ids)
    grads_padded = torch.autograd.grad(out_padded.loss, list(model.parameters()),
                                       allow_unused=True)
    out_packed = model(packed.input_ids, packed.attention_mask, packed.labels, task_id=task,
                       token_type_ids=packed.token_type_ids, packing=packed.packing)
    grads_packed = torch.autograd.grad(out_packed.loss, list(model.parameters()),
                                       allow_unused=True)

    torch.testing.assert_close(out_packed.loss, out_padded.loss, rtol=1e-5, atol=1e-6)
    for head, logits in out_padded.logits.items():
        got = out_packed.logits[head]
        if got.dim() == 3:  # tagging: (1, total, labels) -> the padded layout
            real = padded.attention_mask.bool()
            torch.testing.assert_close(packed.packing.unpack(got)[real], logits[real],
                                       rtol=1e-5, atol=1e-5)
        else:
            torch.testing.assert_close(got, logits, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_packed.head_losses[head], out_padded.head_losses[head],
                                   rtol=1e-5, atol=1e-6)
    names = [n for n, _ in model.named_parameters()]
    compared = 0
    for name, a, b in zip(names, grads_packed, grads_padded, strict=True):
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
            compared += 1
    assert compared > 10  # the encoder's weights, not only the head's


def test_padded_rows_cannot_leak_into_a_packed_row(data):
    """Changing one row changes only that row's outputs: attention stays within rows."""
    config, datasets, vocab = data
    model = model_for(config, vocab, "mean")
    packed = datasets["tagging"].collate([1, 2, 3], packed=True)
    first = packed.packing.cu_seqlens[1].item()
    hidden = packed_encoder_forward(model.encoder, packed.input_ids, None, packed.packing)
    ids = packed.input_ids.clone()
    ids[0, first + 1 :] = 1000  # rows 2 and 3
    changed = packed_encoder_forward(model.encoder, ids, None, packed.packing)
    torch.testing.assert_close(changed[0, :first], hidden[0, :first])
    assert not torch.allclose(changed[0, first + 1 :], hidden[0, first + 1 :])


def test_the_nested_kernel_matches_the_dense_reference_on_cpu():
    assert check_kernel("nested", "cpu", dtype=torch.float32) == "ok"
    assert check_kernel("varlen", "cpu").startswith("NotImplementedError")  # CUDA only
    backends = attention_backends("cpu")
    assert (backends.plain, backends.with_dropout) == ("dense", "dense")
    assert set(BACKENDS) == {"varlen", "nested", "dense"}


def test_a_forced_kernel_is_used_and_a_wrong_name_is_refused(monkeypatch):
    monkeypatch.setenv("MTB_PACKED_ATTENTION", "nested")
    assert attention_backends("cpu").pick(0.1) == "nested"
    monkeypatch.setenv("MTB_PACKED_ATTENTION", "flash9")
    with pytest.raises(ValueError, match="MTB_PACKED_ATTENTION"):
        attention_backends("cpu")


def tiny_encoder(model_type: str, **extra):
    config = AutoConfig.for_model(model_type, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=64, vocab_size=600,
                                  **extra)
    torch.manual_seed(0)
    return AutoModel.from_config(config)


def test_the_support_check_accepts_bert_and_names_why_others_fail():
    assert packing_problem(tiny_encoder("bert")) is None
    roberta = packing_problem(tiny_encoder("roberta"))  # positions start at pad id + 1
    assert roberta and "numbers positions differently" in roberta
    deberta = packing_problem(tiny_encoder("deberta-v2"))  # its own attention code
    assert deberta and "AttentionInterface" in deberta


def test_the_support_check_leaves_the_global_rng_and_training_mode_alone():
    encoder = tiny_encoder("bert").train()
    state = torch.get_rng_state()
    assert packing_problem(encoder) is None
    assert torch.equal(torch.get_rng_state(), state)
    assert encoder.training


def test_packed_word_shapes_equal_padded(task_dir, tmp_path):
    """A tagging task with word shapes: the packed batch carries the same shape ids, and the
    logits and loss equal the padded batch's."""
    from multitask_bert.config import ExperimentConfig
    from tests.conftest import tiny_config_dict

    config = ExperimentConfig.from_dict(tiny_config_dict(task_dir, tmp_path),
                                        overrides=["tasks.tagging.word_shape=true"])
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    dataset = load_datasets(config, cached, "train", tokenizer.pad_token_id)["tagging"]
    model = model_for(config, {n: c.label_vocab for n, c in cached.items()}, "mean")
    indices = [2, 9, 4, 11, 7]
    padded, packed = dataset.collate(indices), dataset.collate(indices, packed=True)
    real = padded.attention_mask.bool()
    assert padded.word_shapes is not None and int(padded.word_shapes.max()) > 0
    assert torch.equal(packed.word_shapes[0], padded.word_shapes[real])
    out_padded = model(padded.input_ids, padded.attention_mask, padded.labels, task_id="tagging",
                       token_type_ids=padded.token_type_ids, word_shapes=padded.word_shapes)
    out_packed = model(packed.input_ids, packed.attention_mask, packed.labels, task_id="tagging",
                       token_type_ids=packed.token_type_ids, word_shapes=packed.word_shapes,
                       packing=packed.packing)
    torch.testing.assert_close(out_packed.loss, out_padded.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed.packing.unpack(out_packed.logits["ner"])[real],
                               out_padded.logits["ner"][real], rtol=1e-5, atol=1e-5)
