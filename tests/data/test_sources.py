"""Reading every source format into normalized examples, and every bad-input message."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from multitask_bert.data.sources import (
    LOCATION_KEY,
    hf_rows,
    input_fields,
    read_split,
    source_fingerprint,
)
from multitask_bert.errors import DataError
from multitask_bert.tasks import TaskSpec

SHARED = Path("/work/shared/datasets")
NER = [{"name": "ner", "type": "tagging"}]
LABEL = [{"name": "label", "type": "classification"}]


def token_task(tmp_path: Path, train: object, heads: list | None = None, **kwargs) -> TaskSpec:
    return TaskSpec(
        name="tok", type="token", heads=heads or NER, train=train, base_dir=str(tmp_path), **kwargs
    )


def seq_task(tmp_path: Path, train: object, heads: list | None = None, **kwargs) -> TaskSpec:
    return TaskSpec(
        name="seq",
        type="sequence",
        heads=heads or LABEL,
        train=train,
        base_dir=str(tmp_path),
        **kwargs,
    )


def write(tmp_path: Path, name: str, text: str | bytes) -> str:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return name


def jsonl(*rows: object) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def plain(examples: list[dict]) -> list[dict]:
    return [{k: v for k, v in e.items() if k != LOCATION_KEY} for e in examples]


def where(examples: list[dict]) -> list[str]:
    return [e[LOCATION_KEY] for e in examples]


# ------------------------------------------------------------------------------------------
# formats
# ------------------------------------------------------------------------------------------


def test_jsonl_token_task_skips_blank_lines_and_keeps_line_numbers(tmp_path):
    name = write(
        tmp_path,
        "train.jsonl",
        jsonl(
            {"tokens": ["EU", "rejects"], "ner": ["I-ORG", "O"], "extra": 1},
            "",
            "   ",
            {"tokens": ["Peter"], "ner": ["I-PER"]},
        ),
    )
    examples = read_split(token_task(tmp_path, name), "train")
    assert plain(examples) == [
        {"tokens": ["EU", "rejects"], "ner": ["I-ORG", "O"]},
        {"tokens": ["Peter"], "ner": ["I-PER"]},
    ]
    assert where(examples) == ["line 1", "line 4"]


def test_json_array_with_line_of_each_element(tmp_path):
    rows = [{"text": "a good film", "label": 1}, {"text": "bad", "label": 0}]
    name = write(tmp_path, "train.json", "\n" + json.dumps(rows, indent=2))
    examples = read_split(seq_task(tmp_path, name), "train")
    assert plain(examples) == [{"text": "a good film", "label": "1"}, {"text": "bad", "label": "0"}]
    assert where(examples) == ["line 3", "line 7"]


def test_json_format_also_reads_json_lines(tmp_path):
    name = write(
        tmp_path, "train.json", jsonl({"text": "x", "label": "pos"}, {"text": "y", "label": "neg"})
    )
    assert plain(read_split(seq_task(tmp_path, name), "train"))[1] == {"text": "y", "label": "neg"}


def test_csv_with_header_and_a_record_spanning_lines(tmp_path):
    name = write(tmp_path, "train.csv", 'text,label\n"two\nlines",pos\n\n"say ""hi""",neg\n')
    examples = read_split(seq_task(tmp_path, name), "train")
    assert plain(examples) == [
        {"text": "two\nlines", "label": "pos"},
        {"text": 'say "hi"', "label": "neg"},
    ]
    assert where(examples) == ["line 2", "line 5"]


def test_tsv_keeps_raw_quotes_and_pairs_from_text_fields(tmp_path):
    name = write(
        tmp_path, "train.tsv", 'index\ts1\ts2\tlabel\n0\tHe said "no\tShe left.\tentailment\n'
    )
    task = seq_task(tmp_path, name, text_fields=["s1", "s2"])
    assert plain(read_split(task, "train")) == [
        {"s1": 'He said "no', "s2": "She left.", "label": "entailment"}
    ]


def test_csv_without_header_named_by_columns(tmp_path):
    name = write(tmp_path, "train.csv", "A plane.,An air plane.,x,5.0\nA man.,A dog.,y,0.4\n")
    task = seq_task(
        tmp_path,
        {"path": name, "columns": ["text_a", "text_b", "_", "score"]},
        heads=[{"name": "score", "type": "regression"}],
    )
    examples = read_split(task, "train")
    assert plain(examples) == [
        {"text_a": "A plane.", "text_b": "An air plane.", "score": 5.0},
        {"text_a": "A man.", "text_b": "A dog.", "score": 0.4},
    ]
    assert where(examples) == ["line 1", "line 2"]


def test_parquet(tmp_path):
    table = pa.table({"text": ["good", "bad"], "label": [1, 0], "tags": [["a", "b"], []]})
    pq.write_table(table, tmp_path / "train.parquet")
    task = seq_task(
        tmp_path, "train.parquet", heads=[*LABEL, {"name": "tags", "type": "multilabel"}]
    )
    examples = read_split(task, "train")
    assert plain(examples) == [
        {"text": "good", "label": "1", "tags": ["a", "b"]},
        {"text": "bad", "label": "0", "tags": []},
    ]
    assert where(examples) == ["row index 0", "row index 1"]


def test_parquet_written_by_datasets_gets_class_label_names(tmp_path):
    from datasets import ClassLabel, Dataset, Features, List, Value

    features = Features(
        {"tokens": List(Value("string")), "ner": List(ClassLabel(names=["O", "B-PER"]))}
    )
    Dataset.from_dict({"tokens": [["Ann", "ran"]], "ner": [[1, 0]]}, features=features).to_parquet(
        str(tmp_path / "train.parquet")
    )
    assert plain(read_split(token_task(tmp_path, "train.parquet"), "train")) == [
        {"tokens": ["Ann", "ran"], "ner": ["B-PER", "O"]}
    ]


CONLL = """-DOCSTART- -X- O O

EU NNP I-NP I-ORG
rejects VBZ I-VP O

-DOCSTART- -X- -X- O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER"""  # no blank line at the end


def test_conll_column_file(tmp_path):
    name = write(tmp_path, "eng.train", CONLL)
    task = token_task(
        tmp_path,
        {"path": name, "format": "conll", "columns": ["tokens", "pos", "_", "ner"]},
        heads=[*NER, {"name": "pos", "type": "tagging"}],
    )
    examples = read_split(task, "train")
    assert plain(examples) == [
        {"tokens": ["EU", "rejects"], "ner": ["I-ORG", "O"], "pos": ["NNP", "VBZ"]},
        {"tokens": ["Peter", "Blackburn"], "ner": ["I-PER", "I-PER"], "pos": ["NNP", "NNP"]},
    ]
    assert where(examples) == ["line 3", "line 8"]


CONLLU = """# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t4:conj\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_
"""


def test_conllu_skips_comments_multiword_tokens_and_empty_nodes(tmp_path):
    name = write(tmp_path, "en.conllu", CONLLU)
    task = token_task(
        tmp_path,
        name,
        heads=[{"name": "upos", "type": "tagging"}, {"name": "xpos", "type": "tagging"}],
    )
    examples = read_split(task, "train")
    assert plain(examples) == [
        {
            "tokens": ["I", "do", "n't", "know", "."],
            "upos": ["PRON", "AUX", "PART", "VERB", "PUNCT"],
            "xpos": ["PRP", "VBP", "RB", "VB", "."],
        },
        {"tokens": ["Hi"], "upos": ["INTJ"], "xpos": ["UH"]},
    ]
    assert where(examples) == ["line 3", "line 12"]


@pytest.mark.skipif(not (SHARED / "conll2003").is_dir(), reason="shared datasets not present")
def test_real_conll2003_column_file_matches_its_jsonl():
    heads = [{"name": n, "type": "tagging"} for n in ("ner", "pos", "chunk")]
    base = str(SHARED / "conll2003")
    task = TaskSpec(
        name="conll2003",
        type="token",
        heads=heads,
        base_dir=base,
        train="validation.jsonl",
        validation={
            "path": "original/eng.testa",
            "format": "conll",
            "columns": ["tokens", "pos", "chunk", "ner"],
        },
    )
    assert plain(read_split(task, "validation")) == plain(read_split(task, "train"))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def test_hf_local_dataset_folder(tmp_path, hf_cache):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    (folder / "train.jsonl").write_text(
        jsonl({"sentence": "fine", "label": 1}, {"sentence": "meh", "label": 0})
    )
    (folder / "validation.jsonl").write_text(jsonl({"sentence": "ok", "label": 1}))
    task = seq_task(
        tmp_path,
        {"path": str(folder), "format": "hf"},
        text_fields=["sentence"],
        validation={"path": str(folder), "format": "hf"},
        test={"path": str(folder), "format": "hf", "split": "validation"},
    )
    assert plain(read_split(task, "train")) == [
        {"sentence": "fine", "label": "1"},
        {"sentence": "meh", "label": "0"},
    ]
    assert plain(read_split(task, "test")) == [{"sentence": "ok", "label": "1"}]
    assert where(read_split(task, "train")) == ["row index 0", "row index 1"]
    assert source_fingerprint(task, "train").startswith("hf:")


def test_hf_rows_turns_class_labels_into_names():
    from datasets import ClassLabel, Dataset, Features, Sequence, Value

    features = Features(
        {
            "text": Value("string"),
            "label": ClassLabel(names=["neg", "pos"]),
            "tags": Sequence(ClassLabel(names=["O", "B", "I"])),
        }
    )
    dataset = Dataset.from_dict(
        {"text": ["a", "b"], "label": [1, -1], "tags": [[0, 1, 2], []]}, features=features
    )
    assert hf_rows(dataset) == [
        {"text": "a", "label": "pos", "tags": ["O", "B", "I"]},
        {"text": "b", "label": None, "tags": []},
    ]


def test_hf_unknown_dataset_is_a_data_error(tmp_path, hf_cache):
    task = seq_task(tmp_path, {"path": "no-such-org/no-such-dataset", "format": "hf"})
    with pytest.raises(
        DataError, match="could not load Hugging Face dataset 'no-such-org/no-such-dataset'"
    ):
        read_split(task, "train")


# ------------------------------------------------------------------------------------------
# fields, label values, subsets, fingerprints
# ------------------------------------------------------------------------------------------


def test_input_fields_defaulting(tmp_path):
    task = seq_task(tmp_path, "x.jsonl")
    assert input_fields(task, {"text": "a"}) == ["text"]
    assert input_fields(task, {"text_a": "a", "text_b": "b"}) == ["text_a", "text_b"]
    assert input_fields(seq_task(tmp_path, "x.jsonl", text_fields=["q", "p"]), {"text_a": "a"}) == [
        "q",
        "p",
    ]
    assert input_fields(token_task(tmp_path, "x.jsonl"), {}) == ["tokens"]
    assert input_fields(token_task(tmp_path, "x.jsonl", text_fields=["words"]), {}) == ["words"]


def test_label_values_are_normalized(tmp_path):
    name = write(
        tmp_path,
        "train.jsonl",
        jsonl(
            {"text_a": "a", "text_b": "b", "cls": 0, "flag": True, "many": ["x", 2], "score": 3},
        ),
    )
    heads = [
        {"name": "cls", "type": "classification"},
        {"name": "flag", "type": "classification"},
        {"name": "many", "type": "multilabel"},
        {"name": "score", "type": "regression"},
    ]
    [example] = plain(read_split(seq_task(tmp_path, name, heads=heads), "train"))
    assert example == {
        "text_a": "a",
        "text_b": "b",
        "cls": "0",
        "flag": "True",
        "many": ["x", "2"],
        "score": 3.0,
    }
    assert isinstance(example["score"], float)


def test_head_column_names_the_field(tmp_path):
    name = write(tmp_path, "train.jsonl", jsonl({"text": "a", "coarse_label": "LOC"}))
    task = seq_task(
        tmp_path,
        name,
        heads=[{"name": "coarse", "type": "classification", "column": "coarse_label"}],
    )
    assert plain(read_split(task, "train")) == [{"text": "a", "coarse_label": "LOC"}]


def test_limit_takes_a_seeded_subset_in_file_order(tmp_path):
    name = write(
        tmp_path, "train.jsonl", jsonl(*({"text": f"t{i}", "label": i % 2} for i in range(50)))
    )
    task = seq_task(tmp_path, {"path": name, "limit": 10})
    first = read_split(task, "train", seed=1)
    assert len(first) == 10
    lines = [int(w.split()[1]) for w in where(first)]
    assert lines == sorted(lines)
    assert read_split(task, "train", seed=1) == first
    assert read_split(task, "train", seed=2) != first
    assert len(read_split(task, "train", apply_limit=False)) == 50
    assert len(read_split(seq_task(tmp_path, {"path": name, "limit": 500}), "train")) == 50


def test_source_fingerprint_is_the_content_hash(tmp_path):
    name = write(tmp_path, "a.jsonl", jsonl({"text": "x", "label": 1}))
    (tmp_path / "moved").mkdir()
    (tmp_path / "moved" / "b.jsonl").write_bytes((tmp_path / name).read_bytes())
    expected = hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert source_fingerprint(seq_task(tmp_path, name), "train") == expected
    assert source_fingerprint(seq_task(tmp_path, "moved/b.jsonl"), "train") == expected


# ------------------------------------------------------------------------------------------
# bad input: every message names the file, the exact line and the field
# ------------------------------------------------------------------------------------------

SEQ_BAD = [
    # (file content, expected fragments)
    (
        jsonl({"text": "a", "label": 1}, "", '{"text": "b", "label": }'),
        ["line 3", "malformed JSON"],
    ),
    (jsonl({"text": "a", "label": 1}, [1, 2]), ["line 2", "expected a JSON object, got list"]),
    (
        jsonl({"text": "a", "label": 1}, {"txt": "b", "label": 1}),
        ["line 2", "field 'text'", "missing", "the row has fields: txt, label"],
    ),
    (
        jsonl({"text": "a", "label": 1}, {"text": "b"}),
        ["line 2", "field 'label'", "missing", "fields: text"],
    ),
    (
        jsonl({"text": "a", "label": {"x": 1}}),
        ["line 1", "field 'label'", "classification label", "dict"],
    ),
    (jsonl({"text": "a", "label": 1.5}), ["line 1", "field 'label'", "float"]),
    (
        jsonl({"text": "a", "label": 1}, {"text": "", "label": 1}),
        ["line 2", "field 'text'", "empty text"],
    ),
    (jsonl({"text": " \t ", "label": 1}), ["line 1", "field 'text'", "empty text"]),
    (jsonl({"text": 7, "label": 1}), ["line 1", "field 'text'", "expected a string, got int"]),
    (
        jsonl({"text": "a", "label": None}),
        ["line 1", "field 'label'", "null label", "leave this split out"],
    ),
    ("", ["no examples in the train split", "point `train:` in the task YAML at a file",
          "cannot do without a train split"]),
    ("\n\n  \n", ["no examples in the train split"]),
]


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_an_empty_split_suggests_only_a_fix_the_loader_takes(tmp_path, split):
    row = jsonl({"text": "a", "label": "x"})
    sources = {name: write(tmp_path, f"{name}.jsonl", "" if name == split else row)
               for name in ("train", "validation", "test")}
    task = seq_task(tmp_path, sources["train"], validation=sources["validation"],
                    test=sources["test"])
    with pytest.raises(DataError) as error:
        read_split(task, split)
    message = str(error.value)
    assert f"no examples in the {split} split" in message
    without = {name: path for name, path in sources.items() if name != split}
    if f"remove `{split}:`" in message:  # the advice must give a task the loader accepts
        TaskSpec(name="seq", type="sequence", heads=LABEL, base_dir=str(tmp_path), **without)
    else:
        with pytest.raises(ValueError, match=f"a `{split}` source is required"):
            TaskSpec(name="seq", type="sequence", heads=LABEL, base_dir=str(tmp_path),
                     **without)


@pytest.mark.parametrize(("content", "fragments"), SEQ_BAD)
def test_bad_sequence_rows(tmp_path, content, fragments):
    name = write(tmp_path, "train.jsonl", content)
    with pytest.raises(DataError) as error:
        read_split(seq_task(tmp_path, name), "train")
    message = str(error.value)
    assert str(tmp_path / "train.jsonl") in message
    for fragment in fragments:
        assert fragment in message


TOKEN_BAD = [
    (
        jsonl({"tokens": ["a"], "ner": ["O"]}, {"tokens": "a b", "ner": ["O", "O"]}),
        ["line 2", "field 'tokens'", "expected a list of words, got str"],
    ),
    (jsonl({"tokens": ["a", 3], "ner": ["O", "O"]}), ["line 1", "field 'tokens'", "word 1 is int"]),
    (jsonl({"tokens": [], "ner": []}), ["line 1", "field 'tokens'", "empty word list"]),
    (
        jsonl({"tokens": ["a"], "ner": ["O"]}, {"tokens": ["a", "b", "c"], "ner": ["O", "O"]}),
        ["line 2", "field 'ner'", "2 tags for head 'ner' but 3 words"],
    ),
    (
        jsonl({"tokens": ["a"], "ner": [{"t": "O"}]}),
        ["line 1", "field 'ner'", "tag 0 of head 'ner' is dict"],
    ),
    (jsonl({"tokens": ["a"], "ner": "O"}), ["line 1", "field 'ner'", "expected a list of tags"]),
]


@pytest.mark.parametrize(("content", "fragments"), TOKEN_BAD)
def test_bad_token_rows(tmp_path, content, fragments):
    name = write(tmp_path, "train.jsonl", content)
    with pytest.raises(DataError) as error:
        read_split(token_task(tmp_path, name), "train")
    for fragment in fragments:
        assert fragment in str(error.value)


def test_regression_label_not_a_number(tmp_path):
    name = write(tmp_path, "train.csv", "text,score\na,1.5\nb,high\n")
    task = seq_task(tmp_path, name, heads=[{"name": "score", "type": "regression"}])
    with pytest.raises(
        DataError,
        match=r"train\.csv, line 3, field 'score': a regression label must be a finite number",
    ):
        read_split(task, "train")


def test_multilabel_from_csv_explains_lists(tmp_path):
    name = write(tmp_path, "train.csv", "text,topics\na,x\n")
    task = seq_task(tmp_path, name, heads=[{"name": "topics", "type": "multilabel"}])
    with pytest.raises(DataError, match=r"line 2, field 'topics'.*CSV cannot hold lists"):
        read_split(task, "train")


def test_missing_file_names_the_resolved_path_and_base_dir(tmp_path):
    task = seq_task(tmp_path, "data/nope.jsonl")
    with pytest.raises(DataError) as error:
        read_split(task, "train")
    message = str(error.value)
    assert "not found" in message
    assert str(tmp_path / "data" / "nope.jsonl") in message
    assert f"resolved against {tmp_path}" in message
    assert "Check the path" in message


def test_file_not_utf8_names_the_line(tmp_path):
    content = (
        jsonl({"text": "a", "label": 1}, {"text": "b", "label": 1}).encode()
        + b'{"text": "sister\xf0city", "label": 1}\n'
    )
    name = write(tmp_path, "train.jsonl", content)
    with pytest.raises(
        DataError, match=r"train\.jsonl, line 3: the file is not valid UTF-8 \(byte 0xF0"
    ):
        read_split(seq_task(tmp_path, name), "train")


def test_json_array_malformed_names_the_line(tmp_path):
    name = write(
        tmp_path, "train.json", '[\n  {"text": "a", "label": 1},\n  {"text": "b" "label": 1}\n]\n'
    )
    with pytest.raises(DataError, match=r"train\.json, line 3: malformed JSON"):
        read_split(seq_task(tmp_path, name), "train")


def test_json_array_element_not_an_object(tmp_path):
    name = write(tmp_path, "train.json", '[\n  {"text": "a", "label": 1},\n\n  "b"\n]')
    with pytest.raises(DataError, match=r"line 4: expected a JSON object, got str"):
        read_split(seq_task(tmp_path, name), "train")


def test_csv_wrong_field_count_names_the_file_line(tmp_path):
    name = write(tmp_path, "train.csv", 'text,label\n"a\nb",1\nc,1,extra\n')
    with pytest.raises(DataError, match=r"train\.csv, line 4: 3 fields, but the header has 2"):
        read_split(seq_task(tmp_path, name), "train")


def test_csv_missing_column_lists_the_header(tmp_path):
    name = write(tmp_path, "train.tsv", "sentence\tlabel\nfine\t1\n")
    with pytest.raises(
        DataError, match=r"line 2, field 'text': missing \(the row has fields: sentence, label\)"
    ):
        read_split(seq_task(tmp_path, name), "train")


def test_parquet_bad_row_names_the_row_index(tmp_path):
    pq.write_table(
        pa.table({"text": ["good", " "], "label": ["a", "b"]}), tmp_path / "train.parquet"
    )
    with pytest.raises(DataError, match=r"train\.parquet, row index 1, field 'text': empty text"):
        read_split(seq_task(tmp_path, "train.parquet"), "train")


def test_conll_wrong_column_count_and_missing_columns(tmp_path):
    name = write(tmp_path, "eng.conll", "EU NNP I-ORG\nrejects VBZ\n")
    task = token_task(tmp_path, {"path": name, "columns": ["tokens", "pos", "ner"]})
    with pytest.raises(DataError, match=r"eng\.conll, line 2: 2 columns, but `columns:` names 3"):
        read_split(task, "train")
    with pytest.raises(DataError, match=r"needs `columns:`"):
        read_split(token_task(tmp_path, name), "train")


def test_conll_for_a_sequence_task_is_refused(tmp_path):
    name = write(tmp_path, "x.conll", "a O\n")
    with pytest.raises(DataError, match="CoNLL column files hold token tasks"):
        read_split(seq_task(tmp_path, name), "train")


def test_missing_split_and_unknown_split(tmp_path):
    task = seq_task(tmp_path, "train.jsonl")
    with pytest.raises(DataError, match="has no `validation` source"):
        read_split(task, "validation")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        read_split(task, "dev")


def test_a_folder_instead_of_a_file(tmp_path):
    os.mkdir(tmp_path / "train.jsonl")
    with pytest.raises(DataError, match="is a folder, not a file"):
        read_split(seq_task(tmp_path, "train.jsonl"), "train")


def test_byte_order_mark_is_ignored(tmp_path):
    name = write(tmp_path, "train.csv", "\ufefftext,label\nfine,1\n")
    assert plain(read_split(seq_task(tmp_path, name), "train")) == [{"text": "fine", "label": "1"}]
