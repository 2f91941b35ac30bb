import pytest
import torch

from multitask_bert.config import EncoderConfig
from multitask_bert.errors import ConfigError
from multitask_bert.heads import head_type_class
from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.tasks import TaskSpec
from tests.conftest import TINY_ENCODER

TASKS = [
    TaskSpec(name="tok", type="token", train="x.jsonl",
             heads=[{"name": "ner", "type": "tagging", "scheme": "IOB2", "loss_weight": 2.0},
                    {"name": "pos", "type": "tagging"}]),
    TaskSpec(name="seq", type="sequence", train="x.jsonl",
             heads=[{"name": "cls", "type": "classification"},
                    {"name": "reg", "type": "regression", "loss_weight": 0.5},
                    {"name": "multi", "type": "multilabel"}]),
]
VOCAB = {"tok": {"ner": ["O", "B-PER", "I-PER"], "pos": ["NOUN", "VERB"]},
         "seq": {"cls": ["a", "b", "c"], "multi": ["x", "y"]}}


@pytest.fixture(scope="module")
def model():
    m = build_model(EncoderConfig(**TINY_ENCODER), TASKS, VOCAB, seed=0)
    return m.eval()


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, 5000, (3, 16), generator=g)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 10:] = 0
    return ids, mask


def test_heads_are_a_module_dict_per_task_with_vocab_sizes(model):
    assert isinstance(model.heads, torch.nn.ModuleDict)
    assert model.heads["tok"]["ner"].out.out_features == 3
    assert model.heads["seq"]["reg"].out.out_features == 1
    assert model.heads["seq"]["multi"].out.out_features == 2


def test_forward_shapes_and_weighted_loss(model):
    ids, mask = batch()
    labels = {"cls": torch.tensor([0, 2, 1]), "reg": torch.tensor([0.1, 0.5, 1.0]),
              "multi": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])}
    out = model(ids, mask, labels, task_id="seq")
    assert out.logits["cls"].shape == (3, 3)
    assert out.logits["reg"].shape == (3,)
    assert out.logits["multi"].shape == (3, 2)
    expected = out.head_losses["cls"] + 0.5 * out.head_losses["reg"] + out.head_losses["multi"]
    assert torch.allclose(out.loss, expected)
    # task ids by index address the same heads
    assert torch.equal(model(ids, mask, task_id=1).logits["cls"], out.logits["cls"])


def test_tagging_loss_ignores_masked_positions_and_all_masked_is_zero(model):
    ids, mask = batch()
    tags = torch.full((3, 16), -100)
    out = model(ids, mask, {"ner": tags, "pos": tags}, task_id="tok")
    assert out.loss.item() == 0.0 and out.loss.requires_grad
    tags[:, 1] = 1
    out = model(ids, mask, {"ner": tags, "pos": torch.full((3, 16), -100)}, task_id="tok")
    manual = torch.nn.functional.cross_entropy(out.logits["ner"][:, 1], tags[:, 1])
    assert torch.allclose(out.loss, 2.0 * manual)  # loss_weight 2


def test_mean_pooling_ignores_padding(model):
    ids, mask = batch()
    a = model(ids, mask, task_id="seq").logits["cls"][1]
    ids2 = ids.clone()
    ids2[1, 10:] = 42  # change only padded positions
    b = model(ids2, mask, task_id="seq").logits["cls"][1]
    assert torch.allclose(a, b, atol=1e-6)


def test_save_load_round_trip_gives_identical_logits(model, tmp_path):
    tokenizer = load_tokenizer(EncoderConfig().resolve_path())
    path = model.save(tmp_path / "best", tokenizer)
    assert sorted(p.name for p in path.iterdir() if p.name.startswith(("model", "multi"))) == [
        "model.safetensors", "multitask_config.json"]
    loaded = MultiTaskModel.load(path)
    ids, mask = batch(1)
    for task, _spec in (("tok", None), ("seq", None)):
        a = model(ids, mask, task_id=task).logits
        b = loaded(ids, mask, task_id=task).logits
        for head in a:
            assert torch.equal(a[head], b[head]), head
    assert loaded.label_vocab == VOCAB
    assert load_tokenizer(path).is_fast
    # saving again over the same folder replaces it atomically, no temp folders left behind
    model.save(path, tokenizer)
    assert [p.name for p in tmp_path.iterdir()] == ["best"]


def test_load_rejects_a_folder_that_is_not_a_model(tmp_path):
    with pytest.raises(ConfigError, match="not a multitask-bert model folder"):
        MultiTaskModel.load(tmp_path)


def test_missing_encoder_path_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found or incomplete"):
        build_model(EncoderConfig(name_or_path=str(tmp_path / "nope")), TASKS, VOCAB)


def test_unknown_head_type():
    with pytest.raises(ValueError, match="unknown head type 'ranking'"):
        head_type_class("ranking")
