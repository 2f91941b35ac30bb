"""The Trainer on tiny random BERTs: schedule, accumulation, order, early stopping, outputs."""

import itertools
import json
import math

import pytest
import torch

from multitask_bert.models.multitask import MultiTaskModel, build_model, load_tokenizer
from multitask_bert.pipeline import load_datasets, prepare_data, train_experiment
from multitask_bert.training.sampling import RoundRobinSampler
from multitask_bert.training.trainer import Trainer


def make_trainer(config, tasks=None):
    if tasks is not None:
        config = config.model_copy(update={"tasks": [config.task(t) for t in tasks]})
    tokenizer = load_tokenizer(config.encoder.resolve_path())
    cached = prepare_data(config, tokenizer)
    train = load_datasets(config, cached, "train", tokenizer.pad_token_id)
    evals = load_datasets(config, cached, "validation", tokenizer.pad_token_id)
    vocab = {n: c.label_vocab for n, c in cached.items()}
    model = build_model(config.encoder, config.tasks, vocab, seed=config.training.seed,
                        loss_balancing=config.training.loss_balancing)
    return Trainer(config, model, tokenizer, train, evals)


def test_epoch_plan_is_round_robin_over_task_batches(tiny_config):
    trainer = make_trainer(tiny_config(batch_size=4, task_batch_size={"sentiment": 8}))
    plan = trainer.epoch_plan(0)
    sizes = {"tagging": 6, "sentiment": 3, "pairs": 6, "topics": 6}  # 24 rows each
    assert [t for t, _ in plan] == RoundRobinSampler().epoch_order(sizes, None)
    for task, _size in sizes.items():
        rows = sorted(i for t, b in plan if t == task for i in b)
        assert rows == list(range(24)), task  # every example once per epoch
    assert trainer.epoch_plan(0) == plan  # seeded
    assert trainer.epoch_plan(1) != plan
    trainer.close()


def test_scheduler_counts_real_optimizer_steps(tiny_config):
    config = tiny_config(epochs=3, gradient_accumulation_steps=2, warmup_steps=2)
    trainer = make_trainer(config)
    batches_per_epoch = len(trainer.epoch_plan(0))  # 21 = 6 + 6 + 6 + 3 (bs 4, 24 rows)
    assert trainer.steps_per_epoch == math.ceil(batches_per_epoch / 2)
    assert trainer.total_steps == 3 * trainer.steps_per_epoch
    lrs = []  # the learning rate each optimizer step used
    trainer.optimizer.register_step_post_hook(
        lambda opt, args, kwargs: lrs.append(opt.param_groups[0]["lr"]))
    result = trainer.train()
    lr = config.training.learning_rate
    assert result.global_step == trainer.total_steps == len(lrs)
    assert result.epochs_completed == 3
    assert trainer.scheduler.last_epoch == trainer.total_steps
    assert lrs[:3] == pytest.approx([0.0, lr / 2, lr])  # 2 warmup steps
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))  # then linear decay
    assert trainer.scheduler.get_last_lr()[0] == pytest.approx(0.0)  # reaching 0 at the end
    trainer.close()


@pytest.mark.parametrize("balancing", ["static", "uncertainty"])
def test_gradient_accumulation_matches_a_bigger_batch(tiny_config, balancing):
    common = dict(epochs=1, group_by_length=False, max_grad_norm=None, learning_rate=1e-3,
                  eval_strategy="no", weight_decay=0.0, loss_balancing=balancing)
    big = make_trainer(tiny_config(batch_size=8, **common), tasks=["sentiment"])
    small = make_trainer(tiny_config(batch_size=4, gradient_accumulation_steps=2, **common),
                         tasks=["sentiment"])
    assert big.total_steps == small.total_steps == 3
    for trainer in (big, small):  # dropout masks would differ between batch shapes
        for module in trainer.model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    big.train()
    small.train()
    for (name, a), (_, b) in zip(big.model.named_parameters(), small.model.named_parameters(),
                                 strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4), name
    big.close()
    small.close()


def test_same_seed_same_weights_other_seed_differs(tiny_config):
    runs = [make_trainer(tiny_config(epochs=1, seed=s, eval_strategy="no")) for s in (1, 1, 2)]
    for trainer in runs:
        trainer.train()
        trainer.close()
    params = [torch.cat([p.flatten() for p in t.model.parameters()]) for t in runs]
    assert torch.equal(params[0], params[1])
    assert not torch.equal(params[0], params[2])


def test_early_stopping_stops_after_patience(tiny_config):
    config = tiny_config(epochs=20, learning_rate=1e-12, eval_strategy="steps", eval_steps=2,
                         early_stopping={"metric": "sentiment/label", "patience": 2,
                                         "min_delta": 0.01})
    trainer = make_trainer(config)
    result = trainer.train()
    trainer.close()
    assert result.stopped_early
    assert result.best_step == 2  # nothing improves on the first evaluation by 0.01
    assert result.global_step == 6  # evaluations at steps 2, 4, 6; patience 2


def test_train_writes_metrics_for_every_head_and_a_loadable_best_model(tiny_config):
    config = tiny_config(epochs=4)
    result = train_experiment(config)
    metrics = json.loads((config.run_dir / "metrics.json").read_text())
    assert set(metrics) >= {"best", "last", "best_step", "best_score"}
    for section in ("best", "last"):
        assert set(metrics[section]) == {"tagging", "sentiment", "pairs", "topics"}
        assert set(metrics[section]["tagging"]) == {"ner", "pos"}
        assert "f1" in metrics[section]["tagging"]["ner"]
        assert "per_type" in metrics[section]["tagging"]["ner"]
        assert "accuracy" in metrics[section]["tagging"]["pos"]
        assert "pearson" in metrics[section]["pairs"]["score"]
        assert "micro_f1" in metrics[section]["topics"]["topics"]
    # the toy tasks are learnable: the tiny model fits the tagging task within 4 epochs
    assert metrics["best"]["tagging"]["pos"]["accuracy"] > 0.9
    model = MultiTaskModel.load(config.run_dir / "best")
    assert model.task_names == ["tagging", "sentiment", "pairs", "topics"]
    assert result.best_score == pytest.approx(metrics["best_score"])
    assert (config.run_dir / "config.yaml").is_file()


def test_truncated_words_count_as_o_and_are_reported(tiny_config):
    config = tiny_config(epochs=1)
    config = config.model_copy(update={"max_length": 5})  # [CLS] + 3 sub-words + [SEP]
    trainer = make_trainer(config, tasks=["tagging"])
    metrics = trainer.evaluate()
    trainer.close()
    ner = metrics["tagging"]["ner"]
    # every validation sentence has 6 words; at most 3 get a sub-word, the place is 4th
    assert ner["truncated_words"] >= 3 * 8
    assert ner["per_type"]["LOC"]["support"] == 8  # gold entities still counted...
    assert ner["per_type"]["LOC"]["recall"] == 0.0  # ...and missed, as predicted O


def test_empty_words_are_not_counted_as_truncated(tiny_config, task_dir):
    from tests.conftest import write_jsonl

    # a zero-width space is a word without any sub-word: no label position, yet not truncated
    row = {"tokens": ["Alice", "smith", "\u200b", "visited", "Paris", "today", "."],
           "ner": ["B-PER", "I-PER", "O", "O", "B-LOC", "O", "O"],
           "pos": ["PROPN", "PROPN", "PUNCT", "VERB", "PROPN", "NOUN", "PUNCT"]}
    write_jsonl(task_dir / "tagging" / "validation.jsonl", [row] * 8)
    for max_length, truncated in ((32, 0), (5, 3 * 8)):  # 5: alice smith visited are kept
        config = tiny_config(epochs=1).model_copy(update={"max_length": max_length})
        trainer = make_trainer(config, tasks=["tagging"])
        metrics = trainer.evaluate()
        trainer.close()
        for head in ("ner", "pos"):
            assert metrics["tagging"][head]["truncated_words"] == truncated, (max_length, head)


def test_non_finite_loss_stops_naming_step_and_task_and_keeps_the_last_checkpoint(
        task_dir, tmp_path):
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.training.checkpoint import latest_checkpoint
    from multitask_bert.training.trainer import TrainingDivergedError
    from tests.conftest import tiny_config_dict, write_jsonl

    # 1e30 is a finite number in the file, but its squared error overflows float32
    rows = [{"text_a": "a b", "text_b": "a b", "score": 1e30}] * 24
    write_jsonl(task_dir / "pairs" / "train.jsonl", rows)
    data = tiny_config_dict(task_dir, tmp_path, epochs=1, checkpoint_every_n_steps=1)
    data["tasks"] = [t for t in data["tasks"] if t["name"] in ("sentiment", "pairs")]
    config = ExperimentConfig.from_dict(data)
    trainer = make_trainer(config)
    with pytest.raises(TrainingDivergedError) as err:
        trainer.train()
    trainer.close()
    message = str(err.value)
    assert "task 'pairs'" in message and "at step 2" in message  # sentiment, then pairs
    last = latest_checkpoint(config.run_dir)
    assert last is not None and last.name == "step-00000001"  # the last good one
    assert str(last) in message


def test_cpu_defaults_pad_to_the_longest_and_use_fused_adamw(tiny_config):
    """On CPU: no rounding of batch lengths (short sentences rounded up to 8 made 22 % of
    the computed tokens padding) and the fused AdamW kernel (6x faster step() measured)."""
    config = tiny_config(device="cpu")
    assert config.training.pad_to_multiple_of is None
    assert config.training.pad_multiple() == 1
    assert tiny_config(device="cuda").training.pad_multiple() == 8
    assert tiny_config(device="cpu", pad_to_multiple_of=4).training.pad_multiple() == 4
    trainer = make_trainer(config)
    assert trainer.optimizer.defaults.get("fused") is True
    dataset = trainer.train_datasets["tagging"]
    batch = dataset.collate(list(range(len(dataset))))
    assert batch.input_ids.shape[1] == max(batch.lengths)  # the longest row, no rounding
    trainer.close()
