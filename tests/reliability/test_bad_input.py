"""Bad input is rejected clearly: `multitask-bert train` exits 2 with a message that names the
file and line (or the config key) and the fix, prints no traceback, and leaves no partial cache
entry, no `best/` and no checkpoint behind. An over-long input is not an error: it is truncated
and counted."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from multitask_bert.cli import EXIT_USER_ERROR, main
from tests.conftest import tiny_config_dict

Config = dict[str, Any]


def _task(config: Config, name: str) -> dict[str, Any]:
    return next(t for t in config["tasks"] if t["name"] == name)


def _append(path: str, line: str) -> None:
    with open(path, "a", encoding="utf-8") as file:
        file.write(line + "\n")


def _append_row(task: str, split: str, row: Any) -> Callable[[Config], str]:
    def mutate(config: Config) -> str:
        path = _task(config, task)[split]
        _append(path, json.dumps(row))
        return path

    return mutate


def _append_text(task: str, split: str, text: str) -> Callable[[Config], str]:
    def mutate(config: Config) -> str:
        path = _task(config, task)[split]
        _append(path, text)
        return path

    return mutate


def _write_bytes(task: str, split: str, data: bytes) -> Callable[[Config], str]:
    def mutate(config: Config) -> str:
        path = _task(config, task)[split]
        Path(path).write_bytes(data)
        return path

    return mutate


def _not_utf8(config: Config) -> str:
    path = Path(_task(config, "sentiment")["train"])
    good = path.read_bytes().split(b"\n")[:2]
    path.write_bytes(b"\n".join(good) + b'\n{"text": "caf\xff\xfe", "label": "pos"}\n')
    return str(path)


def _missing_file(config: Config) -> str:
    task = _task(config, "sentiment")
    task["validation"] = str(Path(task["validation"]).with_name("no-such-file.jsonl"))
    return task["validation"]


def _declared_labels(config: Config) -> str:
    task = _task(config, "sentiment")
    task["heads"][0]["labels"] = ["neg", "pos"]
    _append(task["validation"], json.dumps({"text": "so so", "label": "neutral"}))
    return task["validation"]


def _set(path: list[Any], value: Any) -> Callable[[Config], str]:
    def mutate(config: Config) -> str:
        node: Any = config
        for key in path[:-1]:
            node = _task(config, key) if node is config["tasks"] else node[key]
        node[path[-1]] = value
        return ""

    return mutate


def _typo(config: Config) -> str:
    config["training"]["learning_rte"] = config["training"].pop("learning_rate")
    return ""


def _missing_encoder(config: Config) -> str:
    config["encoder"] = {**config["encoder"], "name_or_path": "/nonexistent/encoder-dir"}
    return ""


TAGS = {"ner": ["O", "O"], "pos": ["NOUN", "NOUN"]}
TRAIN_LINE = "line 25"  # the fixtures write 24 train rows; an appended row is line 25

# id -> (task the case breaks, how, what stderr must say after the file name)
CASES: dict[str, tuple[str, Callable[[Config], str], list[str]]] = {
    "malformed_json": ("sentiment", _append_text("sentiment", "train", '{"text": "x", "label": '),
                       [TRAIN_LINE, "malformed JSON", "fix the line"]),
    "row_not_object": ("sentiment", _append_row("sentiment", "train", ["x", "pos"]),
                       [TRAIN_LINE, "expected a JSON object", "Each example must be an object"]),
    "missing_field": ("sentiment", _append_row("sentiment", "train", {"text": "no label"}),
                      [TRAIN_LINE, "field 'label'", "missing", "Add the field"]),
    "tokens_not_list": ("tagging",
                        _append_row("tagging", "train", {"tokens": "a b", **TAGS}),
                        [TRAIN_LINE, "field 'tokens'", "expected a list of words",
                         "pre-split words"]),
    "label_is_dict": ("sentiment",
                      _append_row("sentiment", "train", {"text": "x", "label": {"a": 1}}),
                      [TRAIN_LINE, "field 'label'", "must be a string or an integer",
                       "Use one label per row"]),
    "regression_label_string": ("pairs",
                                _append_row("pairs", "train",
                                            {"text_a": "a", "text_b": "b", "score": "high"}),
                                [TRAIN_LINE, "field 'score'", "finite number", "Fix the value"]),
    "tags_length_mismatch": ("tagging",
                             _append_row("tagging", "train",
                                         {"tokens": ["a", "b", "c"], **TAGS}),
                             [TRAIN_LINE, "2 tags for head 'ner' but 3 words",
                              "exactly one tag per word"]),
    "label_not_in_vocabulary": ("sentiment", _declared_labels,
                                ["line 9", "label 'neutral'", "validation split",
                                 "not in the label vocabulary", "Add it to `labels:`"]),
    "empty_split_file": ("sentiment", _write_bytes("sentiment", "validation", b""),
                         ["no examples in the validation split",
                          "Fill it, or remove `validation:` from the task YAML"]),
    "empty_train_file": ("sentiment", _write_bytes("sentiment", "train", b""),
                         ["no examples in the train split", "Fill it, or point `train:`"]),
    "blank_lines_only": ("sentiment", _write_bytes("sentiment", "validation", b"\n  \n\t\n"),
                         ["no examples in the validation split", "Fill it, or remove"]),
    "missing_file": ("sentiment", _missing_file,
                     ["validation source of task 'sentiment' not found", "Check the path"]),
    "not_utf8": ("sentiment", _not_utf8,
                 ["line 3", "not valid UTF-8", "byte 0xFF", "Re-save the file as UTF-8"]),
    "empty_text": ("sentiment", _append_row("sentiment", "train", {"text": "  ", "label": "pos"}),
                   [TRAIN_LINE, "field 'text'", "empty text", "Remove the row or give it text"]),
    "unknown_head_type": ("sentiment", _set(["tasks", "sentiment", "heads", 0, "type"], "ranking"),
                          ["tasks[sentiment].heads[label].type",
                           "'classification', 'multilabel', 'regression' or 'tagging'",
                           "'ranking'"]),
    "unknown_task_type": ("sentiment", _set(["tasks", "sentiment", "type"], "document"),
                          ["tasks[sentiment].type", "'sequence' or 'token'", "'document'"]),
    "config_key_typo": ("sentiment", _typo,
                        ["training.learning_rte: unknown key 'learning_rte'",
                         "did you mean 'learning_rate'?"]),
    "encoder_path_missing": ("sentiment", _missing_encoder,
                             ["encoder '/nonexistent/encoder-dir' not found",
                              "set encoder.name_or_path"]),
}


def _write_config(task_dir: Path, out: Path, tasks: list[str], **training: Any) -> Config:
    config = tiny_config_dict(task_dir, out, **training)
    config["tasks"] = [t for t in config["tasks"] if t["name"] in tasks]
    return config


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_with_a_clear_message(case, task_dir, tmp_path, capsys):
    task, mutate, expected = CASES[case]
    config = _write_config(task_dir, tmp_path, [task])
    bad_file = mutate(config)
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    code = main(["train", "--config", str(config_path)])

    stderr = capsys.readouterr().err
    assert code == EXIT_USER_ERROR, stderr
    assert "Traceback" not in stderr
    message = stderr.strip().splitlines()
    assert message[0].startswith("error: "), stderr
    # the file: the data file for data errors, the experiment YAML for config errors
    if bad_file:
        assert bad_file in stderr or str(Path(bad_file).resolve()) in stderr, stderr
    elif case != "encoder_path_missing":
        assert str(config_path) in stderr, stderr
    for text in expected:
        assert text in stderr, f"{text!r} not in:\n{stderr}"
    # nothing half-made: no cache entry, no temporary build folder, no model, no checkpoint
    task_cache = tmp_path / "cache" / task
    leftovers = [p.name for p in task_cache.iterdir() if p.is_dir()] if task_cache.exists() else []
    assert leftovers == [], leftovers
    run = tmp_path / "run"
    assert not (run / "best").exists()
    assert not (run / "checkpoints").exists()


def test_over_long_input_is_truncated_and_counted(task_dir, tmp_path, capsys):
    config = _write_config(task_dir, tmp_path, ["tagging", "sentiment"], epochs=1, max_steps=4)
    long_words = [f"word{i}" for i in range(80)]  # far past max_length 32 sub-words
    tagging, sentiment = _task(config, "tagging"), _task(config, "sentiment")
    _append(tagging["train"], json.dumps(
        {"tokens": long_words, "ner": ["O"] * 80, "pos": ["NOUN"] * 80}))
    _append(tagging["validation"], json.dumps(
        {"tokens": long_words, "ner": ["O"] * 80, "pos": ["NOUN"] * 80}))
    _append(sentiment["train"], json.dumps({"text": " ".join(long_words), "label": "pos"}))
    config_path = tmp_path / "experiment.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    code = main(["train", "--config", str(config_path)])

    assert code == 0, capsys.readouterr().err
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["best"]["tagging"]["ner"]
    assert (run / "best").is_dir()
    stats = {}
    for task in ("tagging", "sentiment"):
        (meta,) = (tmp_path / "cache" / task).glob("*/meta.json")
        stats[task] = json.loads(meta.read_text())["stats"]
    assert stats["tagging"]["train"]["truncated_words"] > 0
    assert stats["tagging"]["train"]["truncated_examples"] == 1
    assert stats["tagging"]["validation"]["truncated_words"] > 0
    assert stats["sentiment"]["train"]["truncated_examples"] == 1
